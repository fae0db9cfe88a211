import { randomUUID } from 'node:crypto';
import { encodeGlobalID } from '@pothos/plugin-relay';
import { sql } from 'drizzle-orm';
import { beforeAll, describe, expect, it } from 'vitest';
import type { Tx } from '../src/db/client.js';
import { type GenerationFieldsFragment, type GenerationStatus } from './gql/graphql.js';
import { databaseKind } from './support/db.js';
import { createProject, document, signUp } from './support/fixtures.js';
import { rawId, startAccepted, startCancelled, waitForEnd } from './support/generation-helpers.js';
import { as, rows } from './support/rls.js';
import { useGenerationServer } from './support/suite-server.js';

// Project.generations(sessionId:): the generations of one session (a Generation.sessionId),
// paged with the same keyset cursors, counted alone, combined with status, read through an
// index in page order; a session id that is no uuid is bad input, one of no session an empty list.

type Vars = { id: string; sessionId?: string | null; status?: GenerationStatus[] | null; first?: number; after?: string | null };
type Page = {
  totalCount: number;
  pageInfo: { hasNextPage: boolean; endCursor: string | null };
  edges: { node: { id: string; sessionId: string; status: GenerationStatus } }[];
};

const SessionGenerations = document<{ project: { generations: Page } | null }, Vars>(/* GraphQL */ `
  query SessionGenerations($id: ID!, $sessionId: ID, $status: [GenerationStatus!], $first: Int = 100, $after: String) {
    project(id: $id) {
      generations(first: $first, after: $after, sessionId: $sessionId, status: $status) {
        totalCount
        pageInfo { hasNextPage endCursor }
        edges { node { id sessionId status } }
      }
    }
  }
`);

describe(`Project.generations of one session (${databaseKind})`, () => {
  /** Every statement sent to the database, to EXPLAIN what a page runs. */
  const statements: string[] = [];
  const suite = useGenerationServer({}, 'ok', { onQuery: (query) => void statements.push(query) });
  let projectId: string;
  /** Session A: a1 (SUCCEEDED), a2 and a3 (CANCELLED); session B: b1 and b2 (CANCELLED); made a1, b1, a2, b2, a3. */
  let a: GenerationFieldsFragment[];
  let b: GenerationFieldsFragment[];

  beforeAll(async () => {
    const { server, owner } = suite;
    projectId = (await createProject(owner.client, { target: 'FLUTTER' })).id;
    const a1 = await startAccepted(owner.client, { projectId, prompt: 'A packing list' });
    expect((await waitForEnd(server, owner.client, owner.accessToken, a1.id)).status).toBe('SUCCEEDED');
    const b1 = await startCancelled(server, owner, { projectId, prompt: 'A reading list' });
    const a2 = await startCancelled(server, owner, { projectId, prompt: 'Add a checkbox', sessionId: a1.sessionId });
    const b2 = await startCancelled(server, owner, { projectId, prompt: 'Sort it by author', sessionId: b1.sessionId });
    const a3 = await startCancelled(server, owner, { projectId, prompt: 'Sort it by weight', sessionId: a1.sessionId });
    a = [a1, a2, a3];
    b = [b1, b2];
  });

  const page = async (variables: Omit<Vars, 'id'>) => (await suite.owner.client.expectNoErrors(SessionGenerations, { id: projectId, ...variables })).project?.generations;
  const idsOf = (list: Page | undefined) => list?.edges.map((edge) => edge.node.id);
  const newestFirst = (generations: GenerationFieldsFragment[]) => generations.map((generation) => generation.id).reverse();

  it("lists only the session's generations, newest first, and counts them alone", async () => {
    const sessionA = await page({ sessionId: a[0]!.sessionId });
    expect(idsOf(sessionA)).toEqual(newestFirst(a));
    expect(sessionA!.edges.every((edge) => edge.node.sessionId === a[0]!.sessionId)).toBe(true);
    expect(sessionA).toMatchObject({ totalCount: 3, pageInfo: { hasNextPage: false } });
    const sessionB = await page({ sessionId: b[0]!.sessionId });
    expect(idsOf(sessionB)).toEqual(newestFirst(b));
    expect(sessionB!.totalCount).toBe(2);
    // Without it (or with null), every session's, as before.
    for (const everything of [await page({}), await page({ sessionId: null })]) {
      expect(idsOf(everything)).toEqual([a[2], b[1], a[1], b[0], a[0]].map((generation) => generation!.id));
      expect(everything!.totalCount).toBe(5);
    }
  });

  it('pages a session with first and after, the count the same on every page', async () => {
    const sessionId = a[0]!.sessionId;
    const first = await page({ sessionId, first: 2 });
    expect(idsOf(first)).toEqual(newestFirst(a).slice(0, 2));
    expect(first).toMatchObject({ totalCount: 3, pageInfo: { hasNextPage: true } });
    const second = await page({ sessionId, first: 2, after: first!.pageInfo.endCursor });
    expect(idsOf(second)).toEqual(newestFirst(a).slice(2));
    expect(second).toMatchObject({ totalCount: 3, pageInfo: { hasNextPage: false } });
    const past = await page({ sessionId, first: 2, after: second!.pageInfo.endCursor });
    expect(past).toEqual({ totalCount: 3, pageInfo: { hasNextPage: false, endCursor: null }, edges: [] });
    // A cursor of the whole list goes on in the session from where it points: b2 is between a3 and a2.
    const everything = await page({ first: 2 });
    expect(idsOf(await page({ sessionId, after: everything!.pageInfo.endCursor }))).toEqual([a[1]!.id, a[0]!.id]);
  });

  it('combines with status: both hold, and totalCount counts what both select', async () => {
    const [sessionA, sessionB] = [a[0]!.sessionId, b[0]!.sessionId];
    expect(await page({ sessionId: sessionA, status: ['SUCCEEDED'] })).toMatchObject({ totalCount: 1, edges: [{ node: { id: a[0]!.id } }] });
    const cancelledOfA = await page({ sessionId: sessionA, status: ['CANCELLED'], first: 1 });
    expect(idsOf(cancelledOfA)).toEqual([a[2]!.id]);
    expect(cancelledOfA).toMatchObject({ totalCount: 2, pageInfo: { hasNextPage: true } });
    expect(idsOf(await page({ sessionId: sessionA, status: ['CANCELLED'], after: cancelledOfA!.pageInfo.endCursor }))).toEqual([a[1]!.id]);
    expect(await page({ sessionId: sessionB, status: ['SUCCEEDED', 'FAILED'] })).toEqual({
      totalCount: 0,
      pageInfo: { hasNextPage: false, endCursor: null },
      edges: [],
    });
  });

  it('answers an id of no session of the project with an empty list, and an upper-case one as the session', async () => {
    const none = { totalCount: 0, pageInfo: { hasNextPage: false, endCursor: null }, edges: [] };
    // Unknown; a generation that continued a session (a2) rather than started one.
    expect(await page({ sessionId: randomUUID() })).toEqual(none);
    expect(await page({ sessionId: rawId(a[1]!.id) })).toEqual(none);
    // Another user's session, asked of this project: nothing of theirs.
    const other = await signUp(suite.server);
    const theirs = await startAccepted(other.client, { projectId: (await createProject(other.client, { target: 'FLUTTER' })).id, prompt: 'Theirs' });
    expect(await page({ sessionId: theirs.sessionId })).toEqual(none);
    // The session asked for in another case is the same session.
    expect(idsOf(await page({ sessionId: a[0]!.sessionId.toUpperCase() }))).toEqual(newestFirst(a));
    // And the other user sees no project at all, session or not (RLS).
    expect((await other.client.expectNoErrors(SessionGenerations, { id: projectId, sessionId: a[0]!.sessionId })).project).toBeNull();
    await waitForEnd(suite.server, other.client, other.accessToken, theirs.id);
  });

  it('refuses a session id that is no uuid (a global id included) as bad input on sessionId', async () => {
    for (const sessionId of ['not-a-session', '', a[0]!.id, encodeGlobalID('Project', rawId(projectId)), `${a[0]!.sessionId} `]) {
      const response = await suite.owner.client.request(SessionGenerations, { id: projectId, sessionId });
      expect(response.data, sessionId).toEqual({ project: null });
      expect(response.errors, sessionId).toEqual([
        expect.objectContaining({
          message: 'The input is not valid.',
          path: ['project', 'generations'],
          extensions: expect.objectContaining({ code: 'BAD_USER_INPUT', fieldErrors: [{ path: ['sessionId'], message: 'Not a valid session id.' }] }),
        }),
      ]);
    }
  });

  it('reads a page, of one session or of all, through an index in page order and stops there; counts through an index', async () => {
    const cases = [
      { variables: { sessionId: a[0]!.sessionId, first: 2 }, index: 'generations_session_created_idx' },
      { variables: { first: 2 }, index: 'generations_project_created_idx' },
    ];
    for (const { variables, index } of cases) {
      const from = statements.length;
      await page(variables);
      // The page and its count: the statements that read the projects' keys (generationReads.pages).
      const read = statements.slice(from).filter((statement) => statement.includes('json_to_recordset'));
      expect(read, index).toHaveLength(2);
      const plans = await as(suite.server.database.db, suite.owner.id).run(async (tx) => {
        const planned: string[] = [];
        for (const statement of read) planned.push(await genericPlan(tx, statement));
        return planned;
      });
      for (const plan of plans) expect(plan).not.toMatch(/Seq Scan on generations/);
      const [pagePlan, countPlan] = read[0]!.includes('count(*)') ? [plans[1]!, plans[0]!] : [plans[0]!, plans[1]!];
      // A page's rows come in the index's order: no sort of every row of the project or session before the limit.
      expect(pagePlan).toMatch(new RegExp(`Limit[^\\n]*\\n\\s*->\\s*Index (Only )?Scan using ${index} `));
      if (variables.sessionId) expect(countPlan).toMatch(/Index (Only )?Scan using generations_session_created_idx /);
    }
  });
});

/**
 * The plan of a statement as sent (with its $n parameters), as the plan cache's generic plan:
 * one for any values, so the parameters go in as nulls of their types. With sequential scans
 * priced out, a statement that can use an index does; one that cannot still scans.
 */
async function genericPlan(tx: Tx, statement: string): Promise<string> {
  await tx.execute(sql`set local enable_seqscan = off`);
  await tx.execute(sql`set local plan_cache_mode = force_generic_plan`);
  await tx.execute(sql.raw(`prepare planned as ${statement}`));
  try {
    const [prepared] = await rows<{ types: string[] | string }>(tx, sql`select parameter_types::text[] as types from pg_prepared_statements where name = 'planned'`);
    const types = typeof prepared!.types === 'string' ? parseTextArray(prepared!.types) : prepared!.types;
    const values = types.map((type) => `null::${type}`).join(', ');
    const lines = await rows<{ 'QUERY PLAN': string }>(tx, sql.raw(`explain execute planned${types.length ? `(${values})` : ''}`));
    return lines.map((line) => line['QUERY PLAN']).join('\n');
  } finally {
    await tx.execute(sql`deallocate planned`);
  }
}

/** A PostgreSQL text array's elements (`{uuid,integer,"timestamp with time zone"}`), for a driver that hands it over as text. */
function parseTextArray(text: string): string[] {
  return [...text.slice(1, -1).matchAll(/"((?:[^"\\]|\\.)*)"|([^,]+)/g)].map((match) => match[1] ?? match[2]!);
}
