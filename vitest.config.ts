import { createRequire } from 'node:module';
import { configDefaults, defineConfig } from 'vitest/config';

// One graphql for everyone: Vite would load graphql's .mjs for our files while the
// libraries load its .js, and two GraphQLError classes break masking and the schema.
const require = createRequire(import.meta.url);

// Suites that start no server and open no database: they run in seconds.
const UNIT = [
  'test/contract.test.ts',
  'test/diagnostics.test.ts',
  'test/llm.test.ts',
  'test/llm-openai-resilience.test.ts',
  'test/output-parser.test.ts',
  'test/toolchain.test.ts',
  'test/toolchain-targets.test.ts',
  'test/workspace.test.ts',
];

export default defineConfig({
  resolve: { alias: [{ find: /^graphql$/, replacement: require.resolve('graphql') }] },
  test: {
    testTimeout: 60_000,
    hookTimeout: 120_000,
    pool: 'forks',
    // `npm test -- --project unit` runs one group; `npm test` runs them all.
    projects: [
      { extends: true, test: { name: 'unit', include: UNIT } },
      { extends: true, test: { name: 'api', include: ['test/*.test.ts'], exclude: [...configDefaults.exclude, ...UNIT] } },
      { extends: true, test: { name: 'e2e', include: ['test/e2e/**/*.test.ts'] } },
    ],
  },
});
