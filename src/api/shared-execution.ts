import { type DocumentNode, type ExecutionArgs, type ExecutionResult, GraphQLError, createSourceEventStream, execute, getOperationAST, Kind } from 'graphql';
import { mapAsyncIterator, type Plugin } from 'graphql-yoga';
import { lastResultOf } from './stream-errors.js';

// Fan-out: a thousand viewers of one generation receive the very same live batch
// objects from the event bus. For the streams whose payload types resolve from the
// event alone (no context, no database: GenerationChunk and BuildLogLine), an event's
// selection is executed once per (document, operation, variables) and the result object
// is shared by every subscriber, over graphql-ws and SSE alike. Authorisation stays per
// subscriber: it happens when the stream opens (the field's `subscribe`) and in the
// periodic access re-check, never per event. Per-subscriber plugins (error masking,
// metrics) still see each result and replace it rather than change it.
//
// This subscribe also replaces the executor's per-event plumbing (a mapped, flattened
// iterator per subscriber) with one mapping step (envelop's mapAsyncIterator), which also
// turns an expected failure of the stream into its last result (stream-errors.ts): no
// @defer/@stream in subscriptions here.

/** Root fields whose whole selection depends only on the event (every field exposes event data). */
const EVENT_ONLY_FIELDS = new Set(['generationChunks', 'buildLogs']);

/** Results per event object; gone with the event once every stream has passed it on. */
const resultsByEvent = new WeakMap<object, Map<string, ExecutionResult>>();

export function useSharedSubscriptionExecution(): Plugin {
  return {
    onSubscribe({ setSubscribeFn }) {
      setSubscribeFn(subscribeSharing as Parameters<typeof setSubscribeFn>[0]);
    },
  };
}

async function subscribeSharing(args: ExecutionArgs): Promise<AsyncIterable<ExecutionResult> | ExecutionResult> {
  const source = await createSourceEventStream(args);
  if (!isAsyncIterable(source)) return withRequestErrorCodes(source);
  const key = shareKey(args);
  const executeEvent = (event: unknown): ExecutionResult | Promise<ExecutionResult> => {
    if (key === undefined || typeof event !== 'object' || event === null) return execute({ ...args, rootValue: event });
    let results = resultsByEvent.get(event);
    const cached = results?.get(key);
    if (cached) return cached;
    const result = execute({ ...args, rootValue: event });
    // Event-only fields resolve synchronously; anything else is not worth sharing.
    if (isPromise(result)) return result;
    if (!results) resultsByEvent.set(event, (results = new Map()));
    results.set(key, result);
    return result;
  };
  const failed = (error: unknown): ExecutionResult => {
    // Located as the executor hands source errors on, with the original inside.
    const operation = getOperationAST(args.document, args.operationName) ?? undefined;
    const located = new GraphQLError(error instanceof Error ? error.message : String(error), { originalError: error instanceof Error ? error : undefined, nodes: operation });
    const last = lastResultOf(error, located);
    if (!last) throw located;
    return last;
  };
  const results = mapAsyncIterator(source, executeEvent, failed);
  // When the source says when it is over (a LiveStream), so do its results (metrics count open streams by it).
  const { closed } = source as { closed?: Promise<void> };
  return closed ? Object.assign(results, { closed }) : results;
}

/** Errors of the request itself (variables that do not fit) say BAD_USER_INPUT, as Yoga's executor has them. */
function withRequestErrorCodes(result: ExecutionResult): ExecutionResult {
  for (const error of result.errors ?? []) {
    if (error.path) continue;
    const extensions = error.extensions as Record<string, unknown>;
    extensions.code ??= 'BAD_USER_INPUT';
    extensions.http ??= { status: 400 };
  }
  return result;
}

/**
 * What makes two subscriptions execute an event alike, or undefined when results must not
 * be shared. A document stands in by a number: the parse cache hands every subscriber of
 * the same text the same document, and a subscription keeps its key as long as it runs.
 */
function shareKey({ document, operationName, variableValues }: ExecutionArgs): string | undefined {
  if (!eventOnly(document, operationName)) return undefined;
  let number = documentNumbers.get(document);
  if (number === undefined) documentNumbers.set(document, (number = documentCount++));
  return `${number}\u0000${operationName ?? ''}\u0000${JSON.stringify(variableValues ?? {})}`;
}

const documentNumbers = new WeakMap<DocumentNode, number>();
let documentCount = 0;

function eventOnly(document: DocumentNode, operationName: ExecutionArgs['operationName']): boolean {
  const selections = getOperationAST(document, operationName)?.selectionSet.selections;
  const field = selections?.length === 1 ? selections[0] : undefined;
  return field?.kind === Kind.FIELD && EVENT_ONLY_FIELDS.has(field.name.value) && !field.directives?.length;
}

function isAsyncIterable(value: unknown): value is AsyncIterable<unknown> {
  return typeof value === 'object' && value !== null && Symbol.asyncIterator in value;
}

function isPromise<T>(value: T | Promise<T>): value is Promise<T> {
  return typeof (value as Promise<T> | undefined)?.then === 'function';
}
