import { type ExecutionResult, GraphQLError, type GraphQLErrorOptions } from 'graphql';
import { isAsyncIterable, type Plugin } from 'graphql-yoga';
import { DatabaseUnavailableError } from '../db/outage.js';
import { AppError, ValidationError } from '../errors.js';
import { TooManyStreamsError } from '../generations/stream-access.js';
import { SlowConsumerError } from '../generations/streams.js';

/**
 * How a subscription that cannot start, or has to end early, reaches the client: as a
 * last result with `errors` (each with `extensions.code`), then the end of the stream,
 * the same over graphql-ws (a `next` message, then `complete`) and over SSE (an
 * `event: next`, then `event: complete`). Errors we raise on purpose keep their message
 * and code (NOT_FOUND, SLOW_CONSUMER, ...); a database still unreachable after the
 * outage window (db/outage.ts) is DATABASE_UNAVAILABLE, which a client may retry;
 * anything else is masked with a request id as usual: a subscription that cannot start
 * gets it as its result, a stream that fails later as its last result ("Unexpected
 * error."), and the socket's other operations go on.
 *
 * This plugin rewrites the result of a subscription that cannot start. A stream that
 * fails later ends with `lastResultOf` in its one mapping step (shared-execution.ts),
 * so no second iterator wraps every subscription for this.
 *
 * Must come before the masking plugins: it rewrites the raw errors, before Yoga's
 * error handling wraps them.
 */
export function useStreamErrors(): Plugin {
  return {
    onSubscribe: () => ({
      onSubscribeResult: ({ result, setResult }) => {
        if (!isAsyncIterable(result) && result.errors?.length) {
          setResult({ ...result, errors: result.errors.map((error) => expected(error.originalError, error) ?? error) });
        }
      },
    }),
  };
}

/** A stream's last result for an expected failure (then it ends); undefined for anything unexpected. */
export function lastResultOf(error: unknown, located: GraphQLError): ExecutionResult | undefined {
  const known = expected(error, located);
  return known && { data: null, errors: [known] };
}

/** The GraphQL error of a failure we raise on purpose, or of a database still unreachable; undefined for anything unexpected. */
export function expected(error: unknown, located?: GraphQLError): GraphQLError | undefined {
  const at = { nodes: located?.nodes, path: located?.path };
  if (error instanceof SlowConsumerError) {
    return new GraphQLError(error.message, { ...at, extensions: { code: error.code, lastSeq: error.lastSeq } });
  }
  if (error instanceof TooManyStreamsError) {
    return new GraphQLError(error.message, { ...at, extensions: { code: codeOf(error.kind), per: error.per, limit: error.limit } });
  }
  if (error instanceof ValidationError) {
    return new GraphQLError(error.message, { ...at, extensions: { code: 'BAD_USER_INPUT', fieldErrors: error.fieldErrors } });
  }
  if (error instanceof AppError) return new GraphQLError(error.message, { ...at, extensions: { code: codeOf(error.kind) } });
  if (error instanceof DatabaseUnavailableError) return databaseUnavailableError(at);
  return undefined;
}

/** The code of a database still unreachable after the outage window: the client may try again shortly. */
export const DATABASE_UNAVAILABLE = 'DATABASE_UNAVAILABLE';

/**
 * What a client gets when the database is still unreachable after the outage window
 * (OUTAGE_RETRY_MS): a resolver's transaction, a subscription's start, or the token check
 * of a request (context.ts, which adds HTTP 503 and Retry-After). Worth trying again shortly.
 */
export function databaseUnavailableError(options: GraphQLErrorOptions = {}): GraphQLError {
  return new GraphQLError('The database is unreachable for the moment; try again shortly.', {
    ...options,
    extensions: { ...options.extensions, code: DATABASE_UNAVAILABLE },
  });
}

/** NotFoundError → NOT_FOUND; AuthError → UNAUTHENTICATED as the auth scopes say it. */
function codeOf(kind: string): string {
  if (kind === 'AuthError') return 'UNAUTHENTICATED';
  return kind
    .replace(/Error$/, '')
    .replace(/([a-z0-9])([A-Z])/g, '$1_$2')
    .toUpperCase();
}
