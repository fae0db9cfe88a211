import { GraphQLError } from 'graphql';
import { type Plugin, handleStreamOrSingleExecutionResult } from 'graphql-yoga';
import type { Context } from './context.js';
import { expected } from './stream-errors.js';

/**
 * Unexpected errors become "Unexpected error." with the request id, and the original
 * goes to the log under the same id. Errors we raise on purpose (GraphQLErrors:
 * validation, auth scopes, bad cursors) pass unchanged, and an expected failure outside
 * a result union (e.g. a ValidationError of a query's argument) keeps its message and
 * code. Yoga's own masking stays behind this as a safety net.
 */
export function useRequestIdErrors(): Plugin<Context> {
  const mask = (errors: readonly GraphQLError[], ctx: Context) =>
    errors.map((error) => {
      if (!error.originalError || error.originalError instanceof GraphQLError) return error;
      const known = expected(error.originalError, error);
      if (known) return known;
      ctx.logger.error({ err: error.originalError, path: error.path }, 'unexpected error');
      return new GraphQLError('Unexpected error.', {
        nodes: error.nodes,
        path: error.path,
        extensions: { code: 'INTERNAL_SERVER_ERROR', requestId: ctx.requestId },
      });
    });
  const onDone =
    (ctx: Context) =>
    (payload: Parameters<typeof handleStreamOrSingleExecutionResult>[0]) =>
      handleStreamOrSingleExecutionResult(payload, ({ result, setResult }) => {
        if (result.errors?.length) setResult({ ...result, errors: mask(result.errors, ctx) });
      });
  return {
    onExecute: ({ args }) => ({ onExecuteDone: onDone(args.contextValue as Context) }),
    onSubscribe: ({ args }) => ({ onSubscribeResult: onDone(args.contextValue as Context) }),
  };
}
