import { expect } from 'vitest';
import {
  type GenerationFieldsFragment,
  GenerationFixesDocument,
  type GenerationFixesQuery,
  StartGenerationDocument,
  type StartGenerationInput,
  type StartGenerationMutation,
} from '../gql/graphql.js';
import { document } from './fixtures.js';
import type { GraphQLClient } from './server.js';

// Helpers of the self-healing suites: the contract's GenerationFixes query and starting
// a generation with maxFixRounds.

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

/** startGeneration, maxFixRounds included; returns the union member as the mutation answered. */
export async function startWithRounds(client: GraphQLClient, input: StartGenerationInput): Promise<StartGenerationMutation['startGeneration']> {
  return (await client.expectNoErrors(StartGenerationDocument, { input })).startGeneration;
}

export async function startAcceptedWithRounds(client: GraphQLClient, input: StartGenerationInput): Promise<GenerationFieldsFragment> {
  const result = await startWithRounds(client, input);
  expect(result, JSON.stringify(result)).toMatchObject({ __typename: 'Generation' });
  return result as Extract<StartGenerationMutation['startGeneration'], { __typename: 'Generation' }>;
}
