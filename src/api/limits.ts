import type { IncomingMessage, ServerResponse } from 'node:http';
import { EnvelopArmor } from '@escape.tech/graphql-armor';
import { GraphQLError, type ValidationContext } from 'graphql';
import { createGraphQLError, type Plugin } from 'graphql-yoga';
import { operationCostRule } from './content-cost.js';

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
          if (price > limits.maxCost) context.reportError(tooComplex({ cost: Math.ceil(price), limit: limits.maxCost }));
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
