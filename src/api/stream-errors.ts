import { type ExecutionResult, GraphQLError } from 'graphql';
import type { Plugin } from 'graphql-yoga';
import { AppError, ValidationError } from '../errors.js';
import { SlowConsumerError } from '../generations/streams.js';

/**
 * How a subscription that cannot start, or has to end early, reaches the client: as a
 * last result with `errors` (each with `extensions.code`), then the end of the stream,
 * the same over graphql-ws (a `next` message, then `complete`) and over SSE (an
 * `event: next`, then `event: complete`). Only errors we raise on purpose are turned
 * into results (NOT_FOUND, SLOW_CONSUMER, ...); anything else stays an exception and is
 * masked with a request id as usual.
 *
 * Must come before the masking plugins: it rewrites the raw errors of the stream,
 * before Yoga's error handling wraps it.
 */
export function useStreamErrors(): Plugin {
  return {
    onSubscribe: () => ({
      onSubscribeResult: ({ result, setResult }) => {
        if (isAsyncIterable(result)) {
          setResult(endWithErrors(result));
        } else if (result.errors?.length) {
          setResult({ ...result, errors: result.errors.map((error) => expected(error.originalError, error) ?? error) });
        }
      },
    }),
  };
}

/** The GraphQL error of a failure we raise on purpose; undefined for anything unexpected. */
export function expected(error: unknown, located?: GraphQLError): GraphQLError | undefined {
  const at = { nodes: located?.nodes, path: located?.path };
  if (error instanceof SlowConsumerError) {
    return new GraphQLError(error.message, { ...at, extensions: { code: error.code, lastSeq: error.lastSeq } });
  }
  if (error instanceof ValidationError) {
    return new GraphQLError(error.message, { ...at, extensions: { code: 'BAD_USER_INPUT', fieldErrors: error.fieldErrors } });
  }
  if (error instanceof AppError) return new GraphQLError(error.message, { ...at, extensions: { code: codeOf(error.kind) } });
  return undefined;
}

/** NotFoundError → NOT_FOUND; AuthError → UNAUTHENTICATED as the auth scopes say it. */
function codeOf(kind: string): string {
  if (kind === 'AuthError') return 'UNAUTHENTICATED';
  return kind
    .replace(/Error$/, '')
    .replace(/([a-z0-9])([A-Z])/g, '$1_$2')
    .toUpperCase();
}

/** The stream as it is, except that an expected failure becomes a last result with errors. */
function endWithErrors<T>(source: AsyncIterable<T>): AsyncGenerator<T | ExecutionResult> {
  const iterator = source[Symbol.asyncIterator]();
  let ended = false;
  const done = { done: true, value: undefined } as const;
  return {
    async next() {
      if (ended) return done;
      try {
        return await iterator.next();
      } catch (error) {
        // The executor hands source errors on located (a GraphQLError around the original).
        const known = error instanceof GraphQLError ? expected(error.originalError, error) : expected(error);
        if (!known) throw error;
        ended = true;
        return { done: false, value: { data: null, errors: [known] } };
      }
    },
    async return() {
      ended = true;
      await iterator.return?.();
      return done;
    },
    async throw(error: unknown) {
      ended = true;
      await iterator.return?.();
      throw error;
    },
    [Symbol.asyncIterator]() {
      return this;
    },
    async [Symbol.asyncDispose]() {
      await this.return(undefined);
    },
  };
}

function isAsyncIterable(value: unknown): value is AsyncIterable<unknown> {
  return typeof value === 'object' && value !== null && Symbol.asyncIterator in value;
}
