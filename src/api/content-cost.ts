import {
  type ASTVisitor,
  type FieldNode,
  getNamedType,
  type GraphQLNamedType,
  isInterfaceType,
  isObjectType,
  Kind,
  type OperationDefinitionNode,
  type SelectionSetNode,
  type ValidationContext,
} from 'graphql';
import { MAX_FILE_BYTES, MAX_TOTAL_BYTES } from '../generations/output-parser.js';
import { MAX_NODE_IDS } from './schema/ids.js';

// Fields that return file contents, model output or logs are priced by what they can
// return at worst, in KiB, and that price joins the query cost (GRAPHQL_MAX_COST): so
// aliases, fragments or a page of generations cannot multiply a response past a size
// set in advance. Every selection counts, however it is reached; inside a connection
// it counts once per item of the page (`first` when literal, else the largest page).

const KIB = 1024;
const LARGEST_PAGE = 100;
/** The build step runner caps a log line at 4,000 characters: up to ~16 KiB of UTF-8, ~4 KiB for the text tools print. */
const LOG_LINE_KIB = 4;
const BUILD_LOG_DEFAULT_TAIL = 200;
const BUILD_LOG_MAX_TAIL = 1000;

type Price = (field: FieldNode) => number;

/** Worst-case KiB of one selection of each content field, by schema coordinate. */
const PRICES: Record<string, Price> = {
  'Generation.output': () => MAX_TOTAL_BYTES / KIB,
  'GeneratedFile.content': () => MAX_FILE_BYTES / KIB,
  'ConversationMessage.content': () => MAX_TOTAL_BYTES / KIB,
  // Every file's patch is worked out (on the event loop) whatever the selection asks of the diff.
  'Generation.diff': () => (2 * MAX_TOTAL_BYTES) / KIB,
  'Generation.buildLog': (field) => LOG_LINE_KIB * tailOf(field),
};

/** Lists that are no connection: how many worst-case items they hold at most. */
const LIST_SIZES: Record<string, (field: FieldNode) => number> = {
  // Their content is bounded all together.
  'Generation.files': () => MAX_TOTAL_BYTES / MAX_FILE_BYTES,
  'Query.nodes': idsOf,
};

/** The content price of one operation. */
export function contentCost(context: ValidationContext, operation: OperationDefinitionNode): number {
  const root = context.getSchema().getRootType(operation.operation);
  return root ? priceOf(context, operation.selectionSet, root, 1, new Set()) : 0;
}

/** A validation rule that hands each operation's content price to `check`. */
export function contentCostRule(check: (context: ValidationContext, cost: number) => void) {
  return (context: ValidationContext): ASTVisitor => ({
    OperationDefinition: { leave: (operation) => check(context, contentCost(context, operation)) },
  });
}

function priceOf(context: ValidationContext, selections: SelectionSetNode, type: GraphQLNamedType, times: number, spreading: Set<string>): number {
  let cost = 0;
  for (const selection of selections.selections) {
    if (selection.kind === Kind.INLINE_FRAGMENT) {
      const narrowed = selection.typeCondition ? context.getSchema().getType(selection.typeCondition.name.value) : type;
      if (narrowed) cost += priceOf(context, selection.selectionSet, narrowed, times, spreading);
      continue;
    }
    if (selection.kind === Kind.FRAGMENT_SPREAD) {
      const name = selection.name.value;
      const fragment = context.getFragment(name);
      // A cycle is reported by graphql's own rule; here it only must not loop.
      if (!fragment || spreading.has(name)) continue;
      const narrowed = context.getSchema().getType(fragment.typeCondition.name.value);
      if (!narrowed) continue;
      spreading.add(name);
      cost += priceOf(context, fragment.selectionSet, narrowed, times, spreading);
      spreading.delete(name);
      continue;
    }
    if (!isObjectType(type) && !isInterfaceType(type)) continue;
    const definition = type.getFields()[selection.name.value];
    if (!definition) continue; // unknown fields fail validation anyway
    const coordinate = `${type.name}.${selection.name.value}`;
    cost += times * (PRICES[coordinate]?.(selection) ?? 0);
    if (selection.selectionSet) {
      const paged = definition.args.some((argument) => argument.name === 'first');
      const items = LIST_SIZES[coordinate]?.(selection) ?? (paged ? pageOf(selection) : 1);
      cost += priceOf(context, selection.selectionSet, getNamedType(definition.type), times * items, spreading);
    }
  }
  return cost;
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
