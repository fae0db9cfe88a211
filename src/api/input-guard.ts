import { BREAK, type DocumentNode, GraphQLError, visit } from 'graphql';
import type { Plugin } from 'graphql-yoga';

// PostgreSQL text cannot hold NUL (U+0000): a string with one would fail deep in a
// query as an internal error. No field of Kiln means anything by it, so an operation
// whose variables or string literals carry one is refused up front, as bad input, on
// every transport.

const NUL = '\u0000';

export function useNulRefusal(): Plugin {
  const refusal = () => ({
    errors: [new GraphQLError('Text must not contain NUL characters (U+0000).', { extensions: { code: 'BAD_USER_INPUT' } })],
  });
  return {
    onExecute({ args, setResultAndStopExecution }) {
      if (carriesNul(args.document, args.variableValues)) setResultAndStopExecution(refusal());
    },
    onSubscribe({ args, setResultAndStopExecution }) {
      if (carriesNul(args.document, args.variableValues)) setResultAndStopExecution(refusal());
    },
  };
}

/** Whether a document's literals carry NUL, per document: Yoga's parse cache hands out the same one for the same text. */
const literalsCarryNul = new WeakMap<DocumentNode, boolean>();

function carriesNul(document: DocumentNode, variables: unknown): boolean {
  if (inValue(variables, 0)) return true;
  let found = literalsCarryNul.get(document);
  if (found === undefined) {
    found = false;
    visit(document, {
      StringValue(node) {
        if (!node.value.includes(NUL)) return undefined;
        found = true;
        return BREAK;
      },
    });
    literalsCarryNul.set(document, found);
  }
  return found;
}

/** Variables are JSON of bounded size (MAX_REQUEST_BODY_BYTES); the depth cap only guards the recursion. */
function inValue(value: unknown, depth: number): boolean {
  if (typeof value === 'string') return value.includes(NUL);
  if (value === null || typeof value !== 'object' || depth > 64) return false;
  if (Array.isArray(value)) return value.some((item) => inValue(item, depth + 1));
  return Object.entries(value).some(([key, item]) => key.includes(NUL) || inValue(item, depth + 1));
}
