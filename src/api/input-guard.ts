import {
  BREAK,
  type DocumentNode,
  getNamedType,
  getNullableType,
  getOperationAST,
  GraphQLError,
  type GraphQLInputType,
  type GraphQLSchema,
  isInputObjectType,
  isInputType,
  isListType,
  Kind,
  type ObjectFieldNode,
  TypeInfo,
  typeFromAST,
  visit,
  visitWithTypeInfo,
} from 'graphql';
import type { Plugin } from 'graphql-yoga';

// Text that PostgreSQL cannot store as given is refused up front, as bad input, on every
// transport, rather than failing deep in a query or being changed on the way in:
// - NUL (U+0000): PostgreSQL text cannot hold it, and a query would fail as an internal error;
// - a lone UTF-16 surrogate (half of a pair, as JSON's "\ud800" gives): UTF-8 cannot hold it,
//   and it would be stored as U+FFFD, so a prompt or a name would no longer be what was sent.
// No field of Kiln means anything by either.

const REFUSALS = [
  { found: /\u0000/, message: 'Text must not contain NUL characters (U+0000).' },
  { found: /\p{Surrogate}/u, message: 'Text must be well-formed Unicode: a lone surrogate (U+D800 to U+DFFF, half of a pair) cannot be stored.' },
];

/**
 * Passwords are hashed, never stored, and answer a lone surrogate themselves with a
 * ValidationError naming the field (auth/credentials.ts): only NUL is refused here.
 */
const ANSWERED_BY_FIELD = new Set(['SignUpInput.password', 'SignInInput.password']);
const [NUL] = REFUSALS;

/** Refuses an operation whose variables or string literals carry text that cannot be stored. */
export function useUnstorableTextRefusal(): Plugin {
  const refusal = (message: string) => ({ errors: [new GraphQLError(message, { extensions: { code: 'BAD_USER_INPUT' } })] });
  return {
    onExecute({ args, setResultAndStopExecution }) {
      const message = unstorable(args.schema, args.document, args.operationName, args.variableValues);
      if (message) setResultAndStopExecution(refusal(message));
    },
    onSubscribe({ args, setResultAndStopExecution }) {
      const message = unstorable(args.schema, args.document, args.operationName, args.variableValues);
      if (message) setResultAndStopExecution(refusal(message));
    },
  };
}

interface DocumentText {
  /** What the document's literals cannot store, or null. */
  literals: string | null;
  /** Variables used only where the field answers for its text itself. */
  answered: Set<string>;
}

/** Per document: Yoga's parse cache hands out the same one for the same text. */
const documents = new WeakMap<DocumentNode, DocumentText>();

/** Why the operation's text cannot be stored, or undefined when it can. */
function unstorable(schema: GraphQLSchema, document: DocumentNode, operationName: string | null | undefined, variables: unknown): string | undefined {
  let text = documents.get(document);
  if (!text) {
    text = readDocument(schema, document);
    documents.set(document, text);
  }
  if (text.literals) return text.literals;
  if (variables === null || typeof variables !== 'object') return undefined;
  const definitions = getOperationAST(document, operationName)?.variableDefinitions ?? [];
  for (const [name, value] of Object.entries(variables)) {
    const definition = definitions.find((d) => d.variable.name.value === name);
    const type = definition && typeFromAST(schema, definition.type);
    const found = text.answered.has(name) ? refusalOf(value, NUL) : inValue(value, isInputType(type) ? type : undefined, 0);
    if (found) return found;
  }
  return undefined;
}

function readDocument(schema: GraphQLSchema, document: DocumentNode): DocumentText {
  const typeInfo = new TypeInfo(schema);
  let literals: string | null = null;
  const answeredUses = new Set<string>();
  const otherUses = new Set<string>();
  // Inside a field that answers for its text itself (entered, and not yet left).
  let answering = 0;
  const answers = (node: ObjectFieldNode) => ANSWERED_BY_FIELD.has(`${getNamedType(typeInfo.getParentInputType())?.name}.${node.name.value}`);
  visit(
    document,
    visitWithTypeInfo(typeInfo, {
      ObjectField: {
        enter(node) {
          if (answers(node)) answering++;
        },
        leave(node) {
          if (answers(node)) answering--;
        },
      },
      Variable(node, _key, parent) {
        // A definition is no use of the variable.
        if (parent && 'kind' in parent && parent.kind === Kind.VARIABLE_DEFINITION) return;
        (answering > 0 ? answeredUses : otherUses).add(node.name.value);
      },
      StringValue(node) {
        literals = refusalOf(node.value, answering > 0 ? NUL : undefined) ?? null;
        return literals ? BREAK : undefined;
      },
    }),
  );
  return { literals, answered: new Set([...answeredUses].filter((name) => !otherUses.has(name))) };
}

/** The refusal `text` earns (of `only` one kind, when given), if any. */
function refusalOf(text: unknown, only?: (typeof REFUSALS)[number]): string | undefined {
  if (typeof text !== 'string') return undefined;
  return (only ? [only] : REFUSALS).find(({ found }) => found.test(text))?.message;
}

/** Variables are JSON of bounded size (MAX_REQUEST_BODY_BYTES); the depth cap only guards the recursion. */
function inValue(value: unknown, type: GraphQLInputType | undefined, depth: number): string | undefined {
  if (typeof value === 'string') return refusalOf(value);
  if (value === null || typeof value !== 'object' || depth > 64) return undefined;
  const nullable = type && getNullableType(type);
  if (Array.isArray(value)) {
    const itemType = isListType(nullable) ? (nullable.ofType as GraphQLInputType) : undefined;
    for (const item of value) {
      const found = inValue(item, itemType, depth + 1);
      if (found) return found;
    }
    return undefined;
  }
  const object = isInputObjectType(nullable) ? nullable : undefined;
  for (const [key, item] of Object.entries(value)) {
    const answered = object && ANSWERED_BY_FIELD.has(`${object.name}.${key}`);
    const found = refusalOf(key) ?? (answered ? refusalOf(item, NUL) : inValue(item, object?.getFields()[key]?.type, depth + 1));
    if (found) return found;
  }
  return undefined;
}
