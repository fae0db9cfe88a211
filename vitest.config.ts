import { createRequire } from 'node:module';
import { defineConfig } from 'vitest/config';

// One graphql for everyone: Vite would load graphql's .mjs for our files while the
// libraries load its .js, and two GraphQLError classes break masking and the schema.
const require = createRequire(import.meta.url);

export default defineConfig({
  resolve: { alias: [{ find: /^graphql$/, replacement: require.resolve('graphql') }] },
  test: {
    testTimeout: 60_000,
    hookTimeout: 120_000,
    pool: 'forks',
    // `npm test -- unit` (or `--project unit`) runs one group; `npm test` runs them all. test/unit/
    // holds the suites that start no server and open no database: they run in seconds.
    projects: [
      { extends: true, test: { name: 'unit', include: ['test/unit/**/*.test.ts'] } },
      { extends: true, test: { name: 'api', include: ['test/*.test.ts'] } },
      { extends: true, test: { name: 'e2e', include: ['test/e2e/**/*.test.ts'] } },
    ],
  },
});
