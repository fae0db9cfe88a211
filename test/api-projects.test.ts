import { createRequire } from 'node:module';
import { GraphQLError } from 'graphql';
import { it } from 'vitest';
it('probe', async () => {
  const req = createRequire(import.meta.url);
  const cjs = req('graphql') as typeof import('graphql');
  const yogaErr = await import('graphql-yoga');
  console.log('same class as CJS:', cjs.GraphQLError === GraphQLError, 'yoga createGraphQLError instanceof ours:', yogaErr.createGraphQLError('x') instanceof GraphQLError);
});
