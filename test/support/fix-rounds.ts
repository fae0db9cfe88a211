import { GenerationFixesDocument, type GenerationFixesQuery } from '../gql/graphql.js';
import { document } from './fixtures.js';
import type { GraphQLClient } from './server.js';

// Helpers of the self-healing suites: the contract's GenerationFixes query and the rounds
// of build steps and log lines.

export type FixesOfGeneration = NonNullable<GenerationFixesQuery['generation']>;

/** Rounds of the build steps and log lines (in the schema, not among the contract's operations). */
export const BuildRoundsDocument = document<
  { generation: { buildSteps: { ordinal: number; name: string; status: string; round: number }[]; buildLog: { seq: number; step: string; text: string; round: number }[] } | null },
  { id: string }
>(`
  query BuildRounds($id: ID!) {
    generation(id: $id) {
      buildSteps { ordinal name status round }
      buildLog(tail: 1000) { seq step text round }
    }
  }
`);

export async function fixesOf(client: GraphQLClient, id: string): Promise<FixesOfGeneration> {
  const { generation } = await client.expectNoErrors(GenerationFixesDocument, { id });
  if (!generation) throw new Error(`generation ${id} is not visible`);
  return generation;
}
