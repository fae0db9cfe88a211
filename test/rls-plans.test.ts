import { randomUUID } from 'node:crypto';
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { projectStore } from '../src/projects/store.js';
import { createTestDatabase, type TestDatabase } from './support/db.js';
import { as, rows, serviceRows } from './support/rls.js';

// How the policies let PostgreSQL read, not how long it takes (plans, not timings): a list
// of a user's projects must reach them through indexes, whatever else the database holds.
// projects_select_member once asked `id in (select kiln.viewer_project_ids(…))` beside
// `owner_id = auth.uid()`; an IN subquery under an OR is a filter tested on every row, so
// each page and count of projects read every project there was (drizzle/0017_…).

const others = 2_000;
let database: TestDatabase;
/** Statements as drizzle sends them, to EXPLAIN exactly what the store runs. */
const sent: string[] = [];

beforeAll(async () => {
  database = await createTestDatabase({ onQuery: (query) => sent.push(query) });
});

afterAll(async () => {
  await database?.close();
});

type PlanNode = {
  'Node Type': string;
  'Relation Name'?: string;
  'Index Name'?: string;
  'Index Cond'?: string;
  'Recheck Cond'?: string;
  Plans?: PlanNode[];
};

function* nodesOf(node: PlanNode): Generator<PlanNode> {
  yield node;
  for (const child of node.Plans ?? []) yield* nodesOf(child);
}

/** Each read of projects in an EXPLAIN (FORMAT JSON)'s plan: `<node> [<index>] by condition` or `… whole`. */
function readsOfProjects(explained: Record<string, unknown>[]): string[] {
  const [cell] = Object.values(explained[0]!);
  const [{ Plan }] = (typeof cell === 'string' ? JSON.parse(cell) : cell) as [{ Plan: PlanNode }];
  return [...nodesOf(Plan)]
    .filter((node) => node['Relation Name'] === 'projects' || node['Index Name']?.startsWith('projects_'))
    .map((node) => [node['Node Type'], node['Index Name'] ?? '', node['Index Cond'] ?? node['Recheck Cond'] ? 'by condition' : 'whole'].join(' ').replace(/ +/g, ' '));
}

describe("a list of the viewer's projects, among many others' projects", () => {
  it('reads them through projects_owner_id_idx and projects_pkey, never the whole table, and finds exactly them', async () => {
    const [viewer, owner, stranger] = [randomUUID(), randomUUID(), randomUUID()];
    const own = [randomUUID(), randomUUID()];
    const shared = [randomUUID(), randomUUID()];
    await serviceRows(
      database.db,
      sql`insert into users (id, email) values (${viewer}, ${`${viewer}@kiln.test`}), (${owner}, ${`${owner}@kiln.test`}), (${stranger}, ${`${stranger}@kiln.test`})`,
    );
    await serviceRows(
      database.db,
      sql`insert into projects (id, owner_id, name, target)
          select gen_random_uuid(), ${owner}::uuid, 'other ' || i, 'WEB' from generate_series(1, ${others}::int) i`,
    );
    for (const id of own) await serviceRows(database.db, sql`insert into projects (id, owner_id, name, target) values (${id}, ${viewer}, 'mine', 'WEB')`);
    for (const id of shared) await serviceRows(database.db, sql`insert into projects (id, owner_id, name, target) values (${id}, ${owner}, 'shared', 'WEB')`);
    await serviceRows(
      database.db,
      sql`insert into project_members (project_id, user_id, role)
          values (${own[0]}, ${viewer}, 'owner'), (${shared[0]}, ${viewer}, 'editor'), (${shared[1]}, ${viewer}, 'viewer')`,
    );
    // own[1] has no member row: the policy's owner_id test finds it (as right after INSERT … RETURNING).
    await serviceRows(database.db, sql`analyze projects`);

    const listed = await as(database.db, viewer).run(async (tx) => {
      const from = sent.length;
      const page = await projectStore.page(tx, 21);
      const total = await projectStore.count(tx);
      return { ids: page.map((project) => project.id).sort(), total, statements: sent.slice(from) };
    });
    expect(listed.ids).toEqual([...own, ...shared].sort());
    expect(listed.total).toBe(4);
    expect(listed.statements).toHaveLength(2);
    const [pageSql, countSql] = listed.statements as [string, string];
    // The page's only parameter is its limit.
    expect(pageSql.match(/\$\d+/g)).toEqual(['$1']);

    const plans = await as(database.db, viewer).run(async (tx) => {
      // Small tables read whole are cheap, so a plan may choose that: only a policy that
      // leaves no indexed way in still reads the whole table with sequential scans off.
      await tx.execute(sql`set local enable_seqscan = off`);
      return {
        page: readsOfProjects(await rows(tx, sql`explain (format json) ${sql.raw(pageSql.replace('$1', '21'))}`)),
        count: readsOfProjects(await rows(tx, sql`explain (format json) ${sql.raw(countSql)}`)),
      };
    });
    for (const reads of [plans.page, plans.count]) {
      expect(reads).toEqual(
        expect.arrayContaining(['Bitmap Index Scan projects_owner_id_idx by condition', 'Bitmap Index Scan projects_pkey by condition']),
      );
      expect(reads.filter((read) => read.endsWith('whole'))).toEqual([]);
    }

    const strangerSees = await as(database.db, stranger).run(async (tx) => ({
      page: (await projectStore.page(tx, 21)).length,
      total: await projectStore.count(tx),
    }));
    expect(strangerSees).toEqual({ page: 0, total: 0 });
  });
});
