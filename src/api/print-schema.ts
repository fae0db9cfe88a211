import { writeFile } from 'node:fs/promises';
import { lexicographicSortSchema, printSchema } from 'graphql';
import { schema } from './schema/index.js';

// `npm run schema:print`: the committed SDL that clients and codegen read.
export const printedSchema = () => `${printSchema(lexicographicSortSchema(schema))}\n`;

if (process.argv[1]?.endsWith('print-schema.ts')) {
  await writeFile(new URL('../../schema/schema.graphql', import.meta.url), printedSchema());
}
