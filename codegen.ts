import type { CodegenConfig } from '@graphql-codegen/cli';

// Typed documents for the client contract (`npm run codegen`); tests and web/ use them.
const config: CodegenConfig = {
  schema: 'schema/schema.graphql',
  documents: ['contract/operations.graphql'],
  generates: {
    'test/gql/': {
      preset: 'client',
      presetConfig: { fragmentMasking: false },
      config: { scalars: { DateTime: 'string' }, enumsAsTypes: true, useTypeImports: true, emitLegacyCommonJSImports: false },
    },
    // The reference web client: documents as plain strings (no graphql-js in the bundle).
    'web/src/gql/': {
      documents: ['web/src/operations.graphql'],
      preset: 'client',
      presetConfig: { fragmentMasking: false },
      config: { documentMode: 'string', scalars: { DateTime: 'string' }, enumsAsTypes: true, useTypeImports: true },
    },
  },
  ignoreNoDocuments: true,
};

export default config;
