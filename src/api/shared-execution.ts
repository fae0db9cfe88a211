import { RequestCache } from '@pothos/plugin-scope-auth';
import { type DocumentNode, type ExecutionArgs, type ExecutionResult, GraphQLError, createSourceEventStream, execute, getOperationAST, Kind } from 'graphql';
import { isAsyncIterable, mapAsyncIterator, type Plugin } from 'graphql-yoga';
import type { Context } from './context.js';
import { maskResult, withRequestErrorCodes } from './errors-plugin.js';
import { lastResultOf } from './stream-errors.js';

// Fan-out: a thousand viewers of one generation receive the very same live batch
// objects from the event bus. For the streams whose payload types resolve from the
// event alone (no context, no database: GenerationChunk and BuildLogLine), an event's
// selection is executed once per (document, operation, variables) and the result object
// is shared by every subscriber, over graphql-ws and SSE alike. Authorisation stays per
// subscriber: it happens when the stream opens (the field's `subscribe`) and in the
// periodic access re-check, never per event.
//
// A live subscription is mostly idle, and everything wrapped around its stream stays in
// memory as long as it runs. So this subscribe is the one mapping step between the stream
// and the transport: it executes each event, masks unexpected errors with the request id
// (what useRequestIdErrors and Yoga's masking do for every other result), and turns a
// failure of the stream into its last result (stream-errors.ts). It is therefore the last
// plugin with an onSubscribe hook: it stops there, and the hooks after it, Yoga's masking
// among them, wrap no iterator of their own around every stream. No @defer/@stream in
// subscriptions here.

/** Root fields whose whole selection depends only on the event (every field exposes event data). */
const EVENT_ONLY_FIELDS = new Set(['generationChunks', 'buildLogs']);

/** Results per event object; gone with the event once every stream has passed it on. */
const resultsByEvent = new WeakMap<object, Map<string, ExecutionResult>>();

export function useSharedSubscriptionExecution(): Plugin<Context> {
  return {
    onSubscribe({ args, setResultAndStopExecution }) {
      // envelop awaits a promised result (handleMaybePromise), though its type says otherwise.
      setResultAndStopExecution(subscribeSharing(args) as unknown as Parameters<typeof setResultAndStopExecution>[0]);
    },
  };
}

async function subscribeSharing(args: ExecutionArgs): Promise<AsyncIterable<ExecutionResult> | ExecutionResult> {
  // A result that is not a stream is masked by useRequestIdErrors, after useStreamErrors has
  // turned expected failures into their own errors.
  let source: AsyncIterable<unknown> | ExecutionResult;
  try {
    source = await createSourceEventStream(args);
  } catch (error) {
    return { errors: [located(error, args)] };
  }
  if (!isAsyncIterable(source)) return withRequestErrorCodes(source);
  // The auth scopes were checked by the field's subscribe; their per-request cache would stay as long as the stream.
  RequestCache.clearForContext(args.contextValue as object);
  const key = shareKey(args);
  const ctx = args.contextValue as Context;
  // Masking replaces a shared result with this subscriber's own (its request id), never changes it.
  const executeEvent = (event: unknown): ExecutionResult | Promise<ExecutionResult> => {
    const result = executeOnce(args, key, event);
    return isPromise(result) ? result.then((done) => maskResult(done, ctx)) : maskResult(result, ctx);
  };
  // An expected failure ends the stream with its own error; anything else with "Unexpected error." and the request id.
  const failed = (error: unknown): ExecutionResult => {
    const at = located(error, args);
    return lastResultOf(error, at) ?? maskResult({ data: null, errors: [at] }, ctx);
  };
  const results = mapAsyncIterator(source, executeEvent, failed);
  // When the source says when it is over (a LiveStream), so do its results (metrics count open streams by it).
  const { closed } = source as { closed?: Promise<void> };
  return closed ? Object.assign(results, { closed }) : results;
}

/** An event's result: executed once for every subscriber with the same `key`, for each one without. */
function executeOnce(args: ExecutionArgs, key: string | undefined, event: unknown): ExecutionResult | Promise<ExecutionResult> {
  // Loaders cache by context: an event's own context (the subscriber's, by prototype) reads
  // each loaded field (build steps, preview) afresh instead of the stream's first answer.
  if (key === undefined || typeof event !== 'object' || event === null) {
    return execute({ ...args, rootValue: event, contextValue: Object.create(args.contextValue as object) });
  }
  let results = resultsByEvent.get(event);
  const cached = results?.get(key);
  if (cached) return cached;
  const result = execute({ ...args, rootValue: event });
  // Event-only fields resolve synchronously; anything else is not worth sharing.
  if (isPromise(result)) return result;
  if (!results) resultsByEvent.set(event, (results = new Map()));
  results.set(key, result);
  return result;
}

/**
 * A failure of the stream, located as the executor hands source errors on, with the
 * original inside: something thrown that is not an Error too, so that masking sees it.
 */
function located(error: unknown, { document, operationName }: ExecutionArgs): GraphQLError {
  const operation = getOperationAST(document, operationName) ?? undefined;
  const original = error instanceof Error ? error : new Error(String(error));
  return new GraphQLError(original.message, { originalError: original, nodes: operation });
}

/**
 * What makes two subscriptions execute an event alike, or undefined when results must not
 * be shared. A document stands in by a number: the parse cache hands every subscriber of
 * the same text the same document, and a subscription keeps its key as long as it runs.
 */
function shareKey({ document, operationName, variableValues }: ExecutionArgs): string | undefined {
  if (!eventOnly(document, operationName)) return undefined;
  let variables: string;
  try {
    variables = JSON.stringify(variableValues ?? {});
  } catch {
    // Nested deeper than the stack goes (an unused variable may be): executed for this subscriber alone.
    return undefined;
  }
  let number = documentNumbers.get(document);
  if (number === undefined) documentNumbers.set(document, (number = documentCount++));
  return `${number}\u0000${operationName ?? ''}\u0000${variables}`;
}

const documentNumbers = new WeakMap<DocumentNode, number>();
let documentCount = 0;

function eventOnly(document: DocumentNode, operationName: ExecutionArgs['operationName']): boolean {
  const selections = getOperationAST(document, operationName)?.selectionSet.selections;
  const field = selections?.length === 1 ? selections[0] : undefined;
  return field?.kind === Kind.FIELD && EVENT_ONLY_FIELDS.has(field.name.value) && !field.directives?.length;
}

function isPromise<T>(value: T | Promise<T>): value is Promise<T> {
  return typeof (value as Promise<T> | undefined)?.then === 'function';
}
