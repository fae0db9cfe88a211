import { createRequire } from 'node:module';
import { defineConfig } from 'vitest/config';

// One graphql for everyone: Vite would load graphql's .mjs for our files while the
// libraries load its .js, and two GraphQLError classes break masking and the schema.
const require = createRequire(import.meta.url);

export default defineConfig({
  resolve: { alias: [{ find: /^graphql$/, replacement: require.resolve('graphql') }] },
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    pool: 'forks',
  },
});
