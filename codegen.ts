import type { CodegenConfig } from '@graphql-codegen/cli';

// Typed documents for the client contract (`npm run codegen`); tests use them.
const config: CodegenConfig = {
  schema: 'schema/schema.graphql',
  documents: ['contract/operations.graphql'],
  generates: {
    'test/gql/': {
      preset: 'client',
      presetConfig: { fragmentMasking: false },
      config: { scalars: { DateTime: 'string' }, enumsAsTypes: true, useTypeImports: true, emitLegacyCommonJSImports: false },
    },
  },
  ignoreNoDocuments: true,
};

export default config;
