import { type ExecutionResult, GraphQLError } from 'graphql';

/**
 * A result as the client sees it, over every transport: without what Kiln's plugins leave
 * for Yoga's own use (`http`: the status and headers of an HTTP answer; `unexpected`), as
 * Yoga serialises an HTTP result. The same object when there is nothing to take out.
 */
export function publicResult(result: ExecutionResult): ExecutionResult {
  const { extensions } = result as ExecutionResult<unknown, { http?: unknown }>;
  if (!result.errors?.length && !extensions?.http) return result;
  const { http: _http, ...rest } = extensions ?? {};
  return {
    ...result,
    ...(result.errors && { errors: result.errors.map(publicError) }),
    ...(extensions && { extensions: Object.keys(rest).length > 0 ? rest : undefined }),
  };
}

/** An error as the client sees it: without `http` and `unexpected` in its extensions. */
export function publicError(error: GraphQLError): GraphQLError {
  if (!(error instanceof GraphQLError) || !('http' in error.extensions || 'unexpected' in error.extensions)) return error;
  const { http: _http, unexpected: _unexpected, ...extensions } = error.extensions;
  return new GraphQLError(error.message, { nodes: error.nodes, source: error.source, positions: error.positions, path: error.path, originalError: error.originalError, extensions });
}
