import type { IncomingMessage, ServerResponse } from 'node:http';
import { EnvelopArmor } from '@escape.tech/graphql-armor';
import { type DocumentNode, GraphQLError, getOperationAST, type ValidationContext } from 'graphql';
import { createGraphQLError, type GraphQLParams, type Plugin } from 'graphql-yoga';
import { operationCostRule } from './content-cost.js';
import { bodyLengthOf, noteBodyLength } from './request-policy.js';

// Limits on what one operation may ask for, on every transport: the rules run in
// envelop's parse and validate, which HTTP, SSE and graphql-ws (yoga.getEnveloped)
// all go through. A refused operation learns that it was too big, never which of depth,
// aliases, directives or tokens it crossed or where that limit is. Its cost is the
// exception: anyone can work it out from the document and the schema, so the refusal
// says what the document cost and what the limit is, for a client to see how much to drop.

export interface QueryLimits {
  maxDepth: number;
  maxAliases: number;
  maxDirectives: number;
  maxTokens: number;
  maxCost: number;
}

export const OPERATION_TOO_COMPLEX = 'OPERATION_TOO_COMPLEX';
const TOO_COMPLEX_MESSAGE = 'This operation is too large or too complex; ask for less in one operation.';

const tooComplex = (cost?: { cost: number; limit: number }) =>
  new GraphQLError(TOO_COMPLEX_MESSAGE, { extensions: { code: OPERATION_TOO_COMPLEX, ...cost } });

/** Depth (fragments followed), aliases, directives (graphql-armor), cost (content-cost.ts) and tokens (graphql's parser). */
export function useQueryLimits(limits: QueryLimits): Plugin[] {
  // Reported as validation errors rather than thrown, so a graphql-ws operation fails
  // on its own and its socket stays open.
  const reject = { exposeLimits: false, propagateOnRejection: false, onReject: [(context: ValidationContext | null) => context?.reportError(tooComplex())] };
  const armor = new EnvelopArmor({
    // Suggestions are hidden by useSchemaPrivacy (which also covers enum-value hints).
    blockFieldSuggestion: { enabled: false },
    // graphql's own parser limit below stops before building the document.
    maxTokens: { enabled: false },
    // flattenFragments: a spread adds the depth of what it selects, not a level of its own.
    maxDepth: { ...reject, n: limits.maxDepth, flattenFragments: true },
    maxAliases: { ...reject, n: limits.maxAliases },
    maxDirectives: { ...reject, n: limits.maxDirectives },
    // Armor's cost counts a variable `first` as one page item: content-cost.ts prices every operation instead.
    costLimit: { enabled: false },
  });
  const cost: Plugin = {
    onValidate({ addValidationRule }) {
      addValidationRule(
        operationCostRule((context, price) => {
          // Infinity: too many selections to price (content-cost.ts), refused like the other limits, with no figure.
          if (price > limits.maxCost) context.reportError(tooComplex(Number.isFinite(price) ? { cost: Math.ceil(price), limit: limits.maxCost } : undefined));
        }),
      );
    },
  };
  return [useTokenLimit(limits.maxTokens), ...(armor.protect().plugins as Plugin[]), cost];
}

function useTokenLimit(maxTokens: number): Plugin {
  return {
    onParse({ parseFn, setParseFn }) {
      setParseFn((source, options) => {
        try {
          return parseFn(source, { ...options, maxTokens });
        } catch (error) {
          // graphql-js words it "Document contains more that N tokens" (sic).
          if (error instanceof GraphQLError && /contains more th(?:an|at) \d+ tokens/.test(error.message)) throw tooComplex();
          throw error;
        }
      });
    },
    onValidate() {
      // Over several limits at once is still one problem: the cost's refusal, which says more, when it is one.
      return ({ result, setResult }) => {
        const refusals = result.filter((error) => error.extensions?.code === OPERATION_TOO_COMPLEX);
        const kept = refusals.find((error) => error.extensions.cost !== undefined) ?? refusals[0];
        if (kept) setResult(result.filter((error) => error === kept || error.extensions?.code !== OPERATION_TOO_COMPLEX));
      };
    },
  };
}

/** What a subscription's document, variables and extensions may take together; the contract's take under 2 KiB. */
export const MAX_SUBSCRIPTION_BYTES = 16 * 1024;
export const SUBSCRIPTION_TOO_LARGE = 'SUBSCRIPTION_TOO_LARGE';

/**
 * Refuses a subscription whose document, variables and extensions take more than
 * MAX_SUBSCRIPTION_BYTES together (the query's UTF-8 and the JSON of the rest of its
 * params, which over graphql-ws is all of the subscribe message's payload): graphql-ws
 * keeps its whole subscribe message, and shared-execution.ts a key of its variables, for
 * as long as it runs, where a query or a mutation (a long prompt) lets go of its request
 * once answered. Checked once the document is parsed (where the operation's type is
 * known), before validation, the context or any stream, so a refused subscription never
 * takes a LIVE_STREAMS_PER_USER or _PER_ADDRESS slot; over graphql-ws it fails that operation only (an
 * `error` message) and the socket stays open.
 */
export function useSubscriptionSizeLimit(maxBytes = MAX_SUBSCRIPTION_BYTES): Plugin {
  return {
    onParse() {
      // Thrown, not put in place of the document: the parse cache after this hook would
      // keep the refusal for the document's text, and refuse it with small variables too.
      return ({ result, context }) => {
        // Yoga's request params over HTTP and SSE, the subscribe message's payload over graphql-ws (websocket.ts).
        const { params, request } = context as { params?: GraphQLParams; request?: Request };
        if (!params || !isDocument(result) || getOperationAST(result, params.operationName)?.operation !== 'subscription') return;
        const { query, ...rest } = params;
        // A POST's body as sent, when longer: its whitespace stays in memory with the request too.
        const bytes = Math.max(Buffer.byteLength(query ?? '') + jsonBytes(rest), (request && bodyLengthOf(request)) ?? 0);
        if (bytes <= maxBytes) return;
        throw new GraphQLError(
          `A subscription's document, variables and extensions take at most ${maxBytes / 1024} KiB together, since they are kept as long as it runs; this one takes ${Math.ceil(bytes / 1024)} KiB.`,
          { extensions: { code: SUBSCRIPTION_TOO_LARGE, limit: maxBytes } },
        );
      };
    },
  };
}

const isDocument = (result: unknown): result is DocumentNode => (result as DocumentNode | null)?.kind === 'Document';

/**
 * The UTF-8 bytes of a JSON value as JSON.stringify writes it, counted without its
 * recursion: a variable nested a hundred thousand deep parses, and would overflow it.
 */
function jsonBytes(value: unknown): number {
  let bytes = 0;
  const pending: unknown[] = [value];
  while (pending.length > 0) {
    const next = pending.pop();
    if (Array.isArray(next)) {
      bytes += 2 + Math.max(next.length - 1, 0);
      for (const item of next) pending.push(item ?? null);
    } else if (next !== null && typeof next === 'object') {
      const entries = Object.entries(next).filter(([, item]) => item !== undefined);
      bytes += 2 + Math.max(entries.length - 1, 0);
      for (const [key, item] of entries) {
        bytes += Buffer.byteLength(JSON.stringify(key)) + 1;
        pending.push(item);
      }
    } else {
      bytes += Buffer.byteLength(JSON.stringify(next) ?? 'null');
    }
  }
  return bytes;
}

const TOO_LARGE = { message: 'The request body is too large.', code: 'REQUEST_ENTITY_TOO_LARGE' };

/**
 * Refuses a body whose declared length is over the limit before Yoga reads a byte of
 * it (413), and closes the connection rather than draining an upload nobody wants.
 * Node's parser holds a declared length to its word; bodies without one (chunked) are
 * counted by useChunkedBodyLimit.
 */
export function refuseOversizedBody(req: IncomingMessage, res: ServerResponse, maxBytes: number): boolean {
  const declared = req.headers['content-length'];
  if (declared === undefined || !/^\d+$/.test(declared) || Number(declared) <= maxBytes) return false;
  const body = JSON.stringify({ errors: [{ message: TOO_LARGE.message, extensions: { code: TOO_LARGE.code } }] });
  res.writeHead(413, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(body), connection: 'close' });
  res.end(body);
  return true;
}

/**
 * A GraphQL body without a declared length (chunked) is read here, counting bytes, and
 * refused with 413 past maxBytes. Yoga's maxRequestBodySize did this for every body,
 * through a transform stream and a copy of the request: about 4% of a small query's
 * throughput for bodies whose length node's parser already holds to the declared one.
 * Placed after every plugin that picks a request parser.
 */
export function useChunkedBodyLimit(maxBytes: number): Plugin {
  return {
    onRequestParse({ request, requestParser, setRequestParser, fetchAPI }) {
      if (!requestParser || !request.body || request.headers.has('content-length')) return;
      setRequestParser(async (chunked) => {
        const body = await readWithin(chunked.body as AsyncIterable<Uint8Array>, maxBytes);
        noteBodyLength(chunked, body.byteLength);
        const { url, method, headers, signal } = chunked;
        return requestParser(new fetchAPI.Request(url, { method, headers, signal, body }));
      });
    },
  };
}

async function readWithin(body: AsyncIterable<Uint8Array>, maxBytes: number): Promise<Buffer<ArrayBuffer>> {
  const chunks: Uint8Array[] = [];
  let bytes = 0;
  // Not `for await`: leaving it would destroy the request, and the client would see its
  // connection reset instead of the 413, which closes the connection once sent.
  const reader = body[Symbol.asyncIterator]();
  for (let next = await nextOf(reader); !next.done; next = await nextOf(reader)) {
    bytes += next.value.byteLength;
    if (bytes > maxBytes) {
      throw createGraphQLError(TOO_LARGE.message, { extensions: { code: TOO_LARGE.code, http: { status: 413, headers: { connection: 'close' } } } });
    }
    chunks.push(next.value);
  }
  return Buffer.concat(chunks, bytes);
}

/** A body the client broke off is its mistake (400), not the server's. */
function nextOf(reader: AsyncIterator<Uint8Array>): Promise<IteratorResult<Uint8Array>> {
  return reader.next().catch(() => {
    throw createGraphQLError('The request body could not be read to its end.', { extensions: { code: 'BAD_REQUEST', http: { status: 400 } } });
  });
}
