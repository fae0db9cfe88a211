import {
  type ASTVisitor,
  type FieldNode,
  getNamedType,
  type GraphQLNamedType,
  type GraphQLSchema,
  isEnumType,
  isInterfaceType,
  isObjectType,
  Kind,
  type OperationDefinitionNode,
  type SelectionSetNode,
  type ValidationContext,
} from 'graphql';
import { generationPrompt, MAX_FIX_ROUNDS } from '../generations/generations.js';
import {
  MAX_CHUNK_CHARS,
  MAX_ERROR_MESSAGE_CHARS,
  MAX_FILE_BYTES,
  MAX_GENERATION_OUTPUT_CHARS,
  MAX_PARSED_CHARS,
  MAX_PARSED_LINES,
  MAX_VERSION_BYTES,
  MAX_VERSION_FILES,
} from '../generations/output-parser.js';
import { MAX_PATH_LENGTH } from '../generations/safe-path.js';
import { CONVERSATION_MAX_CHARS, CONVERSATION_MAX_MESSAGES } from '../generations/store.js';
import { email, MAX_PROJECT_MEMBERS, projectDescription, projectName } from '../projects/projects.js';
import { MAX_DIAGNOSTIC_MESSAGE_CHARS } from '../toolchain/diagnostics.js';
import { getTarget, type ProjectTarget } from '../toolchain/targets.js';
import { MAX_NODE_IDS } from './schema/ids.js';

// The cost of an operation (GRAPHQL_MAX_COST) is what its response can weigh at worst, in
// KiB: every selected field costs a key and a short value, text that can be long costs its
// longest (in a list, text bounded for all items together costs its share of that bound,
// and fields cut from the same text share one), and each counts as many times as it can
// appear, the product of the pages, ids and list bounds above it. It is read from the
// document alone, before any variable: a variable `first` or `ids`, like an omitted
// `first`, is priced at the most it may be. So aliases, fragments, pages or nested lists
// cannot multiply a response past a size set in advance. Text is counted in characters,
// except where noted: escaping can make a model's output longer in JSON, and pricing that
// too would refuse a whole output.

const KIB = 1024;
/** A field's key, punctuation and a short value: an id, a date, a number or an enum. */
const FIELD_KIB = 1 / 16;
const LARGEST_PAGE = 100;
/** The build step runner caps a log line at 4,000 characters. */
const LOG_LINE_KIB = 4;
const BUILD_LOG_DEFAULT_TAIL = 200;
const BUILD_LOG_MAX_TAIL = 1000;

/** Builds of one generation: the first, then a fix round's each. */
const BUILDS = 1 + MAX_FIX_ROUNDS;

/** The build tools' lines kept for the diagnostics parser, over every build. */
const PARSED_KIB = (BUILDS * MAX_PARSED_CHARS) / KIB;
const DIAGNOSTIC_TEXT = ['Diagnostic.message', 'Diagnostic.path', 'Diagnostic.code'];

/** A diff's patches: every line of both versions, each with its one-character prefix. */
const PATCHES_KIB = (2 * MAX_VERSION_BYTES) / KIB;

/** KiB of `chars` characters at `bytes` bytes each. */
const text = (chars: number, bytes = 1) => (chars * bytes) / KIB;

type Price = (field: FieldNode) => number;

/** Worst-case KiB of text fields, beyond the field's own FIELD_KIB, by schema coordinate. */
const PRICES: Record<string, Price> = {
  // Any character but NUL: a control character is 6 bytes of JSON (\u0001).
  'Generation.prompt': () => text(generationPrompt.maxLength!, 6),
  // No control characters but line breaks and tabs: 3 bytes of UTF-8 at most.
  'Project.description': () => text(projectDescription.maxLength!, 3),
  'Project.name': () => text(projectName.maxLength!, 3),
  'User.email': () => text(email.maxLength!, 3),
  'Generation.output': () => text(MAX_GENERATION_OUTPUT_CHARS),
  'ConversationMessage.content': () => text(MAX_GENERATION_OUTPUT_CHARS),
  'GeneratedFile.content': () => MAX_FILE_BYTES / KIB,
  'GeneratedFile.path': () => text(MAX_PATH_LENGTH, 3),
  'FileDiff.path': () => text(MAX_PATH_LENGTH, 3),
  // Every file's patch, both sides, is worked out (on the event loop) whatever the selection asks of the diff.
  'Generation.diff': () => PATCHES_KIB,
  'BuildLogLine.text': () => LOG_LINE_KIB,
  'GenerationError.message': () => text(MAX_ERROR_MESSAGE_CHARS),
  // Signed URLs: PUBLIC_URL or PREVIEW_ORIGIN, ids and a signature.
  'Preview.url': () => 1,
  'Archive.url': () => 1,
  'Archive.filename': () => text(MAX_PATH_LENGTH, 3),
  'GenerationChunk.text': () => text(MAX_CHUNK_CHARS, 3),
  // One diagnostic's own bounds; in a list, the list's bound on them all is the smaller.
  'Diagnostic.message': () => text(MAX_DIAGNOSTIC_MESSAGE_CHARS),
  'Diagnostic.path': () => LOG_LINE_KIB,
  'Diagnostic.code': () => LOG_LINE_KIB,
};

interface ListBound {
  /** How many items the list holds at most. */
  items: (field: FieldNode, schema: GraphQLSchema) => number;
  /** Text whose length is bounded for all items together: KiB of the whole list, by coordinate. */
  together?: Record<string, number>;
  /** Fields of `together` cut from the same text: KiB of the whole list for all of them (an alias of one counts in full again). */
  sharing?: { fields: string[]; kib: number };
}

/** Every list of the schema that is no connection's edges (a test holds this to the schema). */
export const LIST_BOUNDS: Record<string, ListBound> = {
  'Query.nodes': { items: idsOf },
  'Project.members': { items: () => MAX_PROJECT_MEMBERS },
  'Project.secrets': { items: (_field, schema) => enumValues(schema, 'ProjectSecretName').length },
  'Project.conversation': {
    items: () => CONVERSATION_MAX_MESSAGES,
    together: { 'ConversationMessage.content': text(CONVERSATION_MAX_CHARS) },
  },
  'Generation.files': { items: () => MAX_VERSION_FILES, together: { 'GeneratedFile.content': MAX_VERSION_BYTES / KIB } },
  // A diff between two versions may delete every file of one and add every file of the other:
  // its patches hold about both versions, however the files are aliased.
  'GenerationDiff.files': { items: () => 2 * MAX_VERSION_FILES, together: { 'FileDiff.patch': PATCHES_KIB } },
  'Generation.buildLog': { items: tailOf },
  'Generation.buildSteps': {
    items: (_field, schema) => BUILDS * Math.max(...enumValues(schema, 'ProjectTarget').map((target) => getTarget(target as ProjectTarget).steps.length)),
  },
  // Message, path and code are cut from the lines parsed, each line once, but for a message
  // that is a whole line naming its path (Vite's "failed to resolve import … from <path>"):
  // each holds at most all of the lines, the three together at most twice that.
  'Generation.diagnostics': {
    items: () => BUILDS * MAX_PARSED_LINES,
    together: Object.fromEntries(DIAGNOSTIC_TEXT.map((coordinate) => [coordinate, PARSED_KIB])),
    sharing: { fields: DIAGNOSTIC_TEXT, kib: 2 * PARSED_KIB },
  },
  'Generation.fixRounds': { items: () => MAX_FIX_ROUNDS },
  // At most a few issues for each field of the largest input (five fields), each at a path of a few steps.
  'ValidationError.fieldErrors': { items: () => 10 },
  'FieldError.path': { items: () => 4 },
};

/**
 * Selections the pricing may visit for one operation. A fragment spread is priced again at every
 * place it is spread (its price depends on what encloses it), so fragments that spread the next one
 * twice would cost 2^levels visits: a 1 KB document of 26 such levels held the event loop 27 s.
 * Past this many, the operation is refused as too complex whatever its price.
 */
const MAX_PRICED_SELECTIONS = 100_000;

class TooManySelections extends Error {}

/** The cost of one operation (Infinity past MAX_PRICED_SELECTIONS). */
function operationCost(context: ValidationContext, operation: OperationDefinitionNode): number {
  const root = context.getSchema().getRootType(operation.operation);
  if (!root) return 0;
  try {
    return priceOf(context, operation.selectionSet, root, 1, new Set(), { each: {} }, { left: MAX_PRICED_SELECTIONS });
  } catch (error) {
    if (error instanceof TooManySelections) return Number.POSITIVE_INFINITY;
    throw error;
  }
}

/** A validation rule that hands each operation's cost to `check`. */
export function operationCostRule(check: (context: ValidationContext, cost: number) => void) {
  return (context: ValidationContext): ASTVisitor => ({
    OperationDefinition: { leave: (operation) => check(context, operationCost(context, operation)) },
  });
}

/** KiB per item of the enclosing list's text that is bounded all together (ListBound.together, .sharing). */
interface Shares {
  each: Record<string, number>;
  sharing?: { fields: ReadonlySet<string>; left: number; priced: Set<string> };
}

/**
 * `times`: how many times this selection set can appear. `shares`: KiB per item, for the
 * text of the enclosing list that is bounded all together.
 */
function priceOf(
  context: ValidationContext,
  selections: SelectionSetNode,
  type: GraphQLNamedType,
  times: number,
  spreading: Set<string>,
  shares: Shares,
  budget: { left: number },
): number {
  const schema = context.getSchema();
  let cost = 0;
  for (const selection of selections.selections) {
    if (--budget.left < 0) throw new TooManySelections();
    if (selection.kind === Kind.INLINE_FRAGMENT) {
      const narrowed = selection.typeCondition ? schema.getType(selection.typeCondition.name.value) : type;
      if (narrowed) cost += priceOf(context, selection.selectionSet, narrowed, times, spreading, shares, budget);
      continue;
    }
    if (selection.kind === Kind.FRAGMENT_SPREAD) {
      const name = selection.name.value;
      const fragment = context.getFragment(name);
      // A cycle is reported by graphql's own rule; here it only must not loop.
      if (!fragment || spreading.has(name)) continue;
      const narrowed = schema.getType(fragment.typeCondition.name.value);
      if (!narrowed) continue;
      spreading.add(name);
      cost += priceOf(context, fragment.selectionSet, narrowed, times, spreading, shares, budget);
      spreading.delete(name);
      continue;
    }
    const name = selection.name.value;
    // __typename and introspection: a short value each (introspection is the schema's size).
    if (name.startsWith('__')) {
      cost += times * FIELD_KIB;
      continue;
    }
    if (!isObjectType(type) && !isInterfaceType(type)) continue;
    const definition = type.getFields()[name];
    if (!definition) continue; // unknown fields fail validation anyway
    const coordinate = `${type.name}.${name}`;
    cost += times * (FIELD_KIB + textPrice(coordinate, selection, shares));
    if (!selection.selectionSet) continue;
    const bound = LIST_BOUNDS[coordinate];
    const paged = definition.args.some((argument) => argument.name === 'first');
    // A connection's edges hold the page counted on its field.
    const items = bound ? bound.items(selection, schema) : paged ? pageOf(selection) : 1;
    const inner: Shares = {
      each: Object.fromEntries(Object.entries(bound?.together ?? {}).map(([field, total]) => [field, total / items])),
      sharing: bound?.sharing && { fields: new Set(bound.sharing.fields), left: bound.sharing.kib / items, priced: new Set() },
    };
    cost += priceOf(context, selection.selectionSet, getNamedType(definition.type), times * items, spreading, inner, budget);
  }
  return cost;
}

/** A text field's KiB per item: its share of the enclosing list's bound, else its own longest. */
function textPrice(coordinate: string, field: FieldNode, shares: Shares): number {
  const share = shares.each[coordinate];
  if (share === undefined) return PRICES[coordinate]?.(field) ?? 0;
  const { sharing } = shares;
  if (!sharing?.fields.has(coordinate) || sharing.priced.has(coordinate)) return share;
  // The first of each sharing field takes what the others left of their common bound.
  sharing.priced.add(coordinate);
  const price = Math.min(share, sharing.left);
  sharing.left -= price;
  return price;
}

/** A connection's page: its literal `first`, else (a variable, or the default page) the largest page. */
function pageOf(field: FieldNode): number {
  const first = field.arguments?.find((argument) => argument.name.value === 'first');
  return first?.value.kind === Kind.INT ? Math.max(1, Math.min(Number(first.value.value), LARGEST_PAGE)) : LARGEST_PAGE;
}

/** `nodes`: as many as its literal list holds, else (a variable) as many as it takes. */
function idsOf(field: FieldNode): number {
  const ids = field.arguments?.find((argument) => argument.name.value === 'ids')?.value;
  if (ids?.kind === Kind.LIST) return Math.max(1, Math.min(ids.values.length, MAX_NODE_IDS));
  return ids?.kind === Kind.VARIABLE ? MAX_NODE_IDS : 1;
}

function tailOf(field: FieldNode): number {
  const tail = field.arguments?.find((argument) => argument.name.value === 'tail');
  if (!tail) return BUILD_LOG_DEFAULT_TAIL;
  // Out of range is refused when the field runs; a variable may be anything up to the maximum.
  return tail.value.kind === Kind.INT ? Math.max(1, Math.min(Number(tail.value.value), BUILD_LOG_MAX_TAIL)) : BUILD_LOG_MAX_TAIL;
}

function enumValues(schema: GraphQLSchema, name: string): string[] {
  const type = schema.getType(name);
  return isEnumType(type) ? type.getValues().map((value) => value.name) : [];
}
