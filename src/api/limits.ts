import type { IncomingMessage, ServerResponse } from 'node:http';
import { EnvelopArmor } from '@escape.tech/graphql-armor';
import { GraphQLError, type ValidationContext } from 'graphql';
import type { Plugin } from 'graphql-yoga';
import { contentCostRule } from './content-cost.js';

// Limits on what one operation may ask for, on every transport: the rules run in
// envelop's parse and validate, which HTTP, SSE and graphql-ws (yoga.getEnveloped)
// all go through. A refused operation learns that it was too big, never which limit
// it crossed or where the limit is, so it cannot be tuned to sit just below it.

export interface QueryLimits {
  maxDepth: number;
  maxAliases: number;
  maxDirectives: number;
  maxTokens: number;
  maxCost: number;
}

export const OPERATION_TOO_COMPLEX = 'OPERATION_TOO_COMPLEX';
const TOO_COMPLEX_MESSAGE = 'This operation is too large or too complex; ask for less in one operation.';

const tooComplex = () => new GraphQLError(TOO_COMPLEX_MESSAGE, { extensions: { code: OPERATION_TOO_COMPLEX } });

/** Depth (fragments followed), aliases, directives, cost (graphql-armor) and tokens (graphql's parser). */
export function useQueryLimits(limits: QueryLimits): Plugin[] {
  // Reported as validation errors rather than thrown, so a graphql-ws operation fails
  // on its own and its socket stays open.
  const reject = { exposeLimits: false, propagateOnRejection: false, onReject: [(context: ValidationContext | null) => context?.reportError(tooComplex())] };
  // The structural cost armor accepted for the operation being validated, so its content price (content-cost.ts) adds to it.
  const structuralCost = new WeakMap<ValidationContext, number>();
  const armor = new EnvelopArmor({
    // Suggestions are hidden by useSchemaPrivacy (which also covers enum-value hints).
    blockFieldSuggestion: { enabled: false },
    // graphql's own parser limit below stops before building the document.
    maxTokens: { enabled: false },
    // flattenFragments: a spread adds the depth of what it selects, not a level of its own.
    maxDepth: { ...reject, n: limits.maxDepth, flattenFragments: true },
    maxAliases: { ...reject, n: limits.maxAliases },
    maxDirectives: { ...reject, n: limits.maxDirectives },
    costLimit: {
      ...reject,
      maxCost: limits.maxCost,
      onAccept: [(context: ValidationContext | null, { n }: { n?: number }) => context && structuralCost.set(context, n ?? 0)],
    },
  });
  const contentCost: Plugin = {
    onValidate({ addValidationRule }) {
      addValidationRule(
        contentCostRule((context, cost) => {
          const structural = structuralCost.get(context);
          // Undefined: armor already refused this operation.
          if (structural !== undefined && structural + cost > limits.maxCost) context.reportError(tooComplex());
        }),
      );
    },
  };
  return [useTokenLimit(limits.maxTokens), ...(armor.protect().plugins as Plugin[]), contentCost];
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
      // Over several limits at once is still one problem.
      return ({ result, setResult }) => {
        const first = result.findIndex((error) => error.extensions?.code === OPERATION_TOO_COMPLEX);
        if (first >= 0) setResult(result.filter((error, i) => i === first || error.extensions?.code !== OPERATION_TOO_COMPLEX));
      };
    },
  };
}

/**
 * Refuses a body whose declared length is over the limit before Yoga reads a byte of
 * it (413), and closes the connection rather than draining an upload nobody wants.
 * Bodies without a length (chunked) are cut off by Yoga's maxRequestBodySize.
 */
export function refuseOversizedBody(req: IncomingMessage, res: ServerResponse, maxBytes: number): boolean {
  const declared = req.headers['content-length'];
  if (declared === undefined || !/^\d+$/.test(declared) || Number(declared) <= maxBytes) return false;
  const body = JSON.stringify({ errors: [{ message: 'The request body is too large.', extensions: { code: 'REQUEST_ENTITY_TOO_LARGE' } }] });
  res.writeHead(413, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(body), connection: 'close' });
  res.end(body);
  return true;
}
