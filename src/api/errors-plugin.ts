import { type ExecutionResult, GraphQLError, type GraphQLErrorOptions } from 'graphql';
import { isAsyncIterable, type Plugin, handleStreamOrSingleExecutionResult } from 'graphql-yoga';
import type { Context } from './context.js';
import { DATABASE_UNAVAILABLE, expected } from './stream-errors.js';

/**
 * Unexpected errors become "Unexpected error." with the request id, and the original
 * goes to the log under the same id. Errors we raise on purpose (GraphQLErrors:
 * validation, auth scopes, bad cursors) pass unchanged, and an expected failure outside
 * a result union (e.g. a ValidationError of a query's argument) keeps its message and
 * code; a database still unreachable after the outage window is DATABASE_UNAVAILABLE.
 * Yoga's own masking stays behind this as a safety net, except around a live stream's
 * results, which its one mapping step masks alike (shared-execution.ts).
 */
export function useRequestIdErrors(): Plugin<Context> {
  return {
    onExecute: ({ args }) => ({
      onExecuteDone: (payload) =>
        handleStreamOrSingleExecutionResult(payload, ({ result, setResult }) => setResult(maskResult(withRequestErrorCodes(result), args.contextValue as Context))),
    }),
    // A subscription that could not start; a stream masks its own results (shared-execution.ts).
    onSubscribe: ({ args }) => ({
      onSubscribeResult: ({ result, setResult }) => {
        if (!isAsyncIterable(result)) setResult(maskResult(result, args.contextValue as Context));
      },
    }),
  };
}

/**
 * A result without data failed before execution (variables that do not fit the operation,
 * an unknown operation name): the request's own fault, over every transport. Its errors say
 * BAD_USER_INPUT, with the status Yoga's executor gives them (400).
 */
export function withRequestErrorCodes(result: ExecutionResult): ExecutionResult {
  if (result.data !== undefined || !result.errors?.length) return result;
  // An error with a path (a field's) or an unexpected cause is the server's: left to masking.
  const coded = result.errors.map((error) =>
    error.extensions.code === undefined && !error.path && (!error.originalError || error.originalError instanceof GraphQLError)
      ? new GraphQLError(error.message, {
          nodes: error.nodes,
          originalError: error.originalError,
          extensions: { http: { status: 400 }, ...error.extensions, code: 'BAD_USER_INPUT' },
        })
      : error,
  );
  return { ...result, errors: coded };
}

/** The result with each unexpected error as "Unexpected error." and the request id, its original logged under that id. */
export function maskResult(result: ExecutionResult, ctx: Context): ExecutionResult {
  return result.errors?.length ? { ...result, errors: maskUnexpected(result.errors, ctx) } : result;
}

function maskUnexpected(errors: readonly GraphQLError[], ctx: Context): GraphQLError[] {
  return errors.map((error) => {
    if (!error.originalError || error.originalError instanceof GraphQLError) return error;
    const known = expected(error.originalError, error);
    // Unreachable past the outage window: the client may retry; the log keeps the cause.
    if (known?.extensions.code === DATABASE_UNAVAILABLE) ctx.log.warn({ err: error.originalError, path: error.path }, 'the database is unreachable');
    if (known) return known;
    ctx.log.error({ err: error.originalError, path: error.path }, 'unexpected error');
    return unexpectedError(ctx.requestId, { nodes: error.nodes, path: error.path });
  });
}

/** What a client sees of an unexpected failure: never its cause, only the request id the log has it under. */
export function unexpectedError(requestId: string, options: GraphQLErrorOptions = {}): GraphQLError {
  return new GraphQLError('Unexpected error.', { ...options, extensions: { ...options.extensions, code: 'INTERNAL_SERVER_ERROR', requestId } });
}
