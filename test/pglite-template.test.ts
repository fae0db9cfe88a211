import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sql } from 'drizzle-orm';
import { afterAll, describe, expect, it } from 'vitest';
import { type Database, openDatabase, rowsOf } from '../src/db/client.js';
import { migrateDatabase } from '../src/db/migrate.js';
import { makeTemplate } from '../src/db/pglite-template.js';

// A fresh DATA_DIR starts as a copy of a cluster initialised and migrated at build time
// (src/db/pglite-template.ts). It must be exactly what the migrations make, and hold
// nothing of any one database.

const opened: Database[] = [];
const dirs: string[] = [];
afterAll(async () => {
  for (const database of opened) await database.close();
  for (const dir of dirs) await rm(dir, { recursive: true, force: true });
});

/** What the migrations define: columns, indexes, policies, grants, functions, triggers, and the migrations recorded. */
async function schemaOf(database: Database) {
  const rows = async (query: ReturnType<typeof sql>) => rowsOf<Record<string, unknown>>(await database.db.execute(query));
  const schemas = sql`('public', 'kiln', 'auth', 'drizzle')`;
  return {
    columns: await rows(sql`select table_schema, table_name, column_name, data_type, is_nullable, column_default from information_schema.columns where table_schema in ${schemas} order by 1, 2, 3`),
    indexes: await rows(sql`select schemaname, tablename, indexname, indexdef from pg_indexes where schemaname in ${schemas} order by 1, 2, 3`),
    policies: await rows(sql`select schemaname, tablename, policyname, roles::text, cmd, qual, with_check from pg_policies order by 1, 2, 3`),
    grants: await rows(sql`select grantee, table_schema, table_name, privilege_type from information_schema.role_table_grants where table_schema in ${schemas} order by 1, 2, 3, 4`),
    functions: await rows(sql`select n.nspname, p.proname, pg_get_functiondef(p.oid) as definition, p.proacl::text as acl from pg_proc p join pg_namespace n on n.oid = p.pronamespace where n.nspname in ${schemas} order by 1, 2, 3`),
    triggers: await rows(sql`select tgrelid::regclass::text as relation, tgname from pg_trigger where not tgisinternal order by 1, 2`),
    migrations: await rows(sql`select hash, created_at::text from drizzle.__drizzle_migrations order by created_at`),
  };
}

describe('the embedded database template', () => {
  it('gives a fresh DATA_DIR every migration, as migrating from scratch does, and no keys or rows', async () => {
    await makeTemplate();
    const dir = await mkdtemp(join(tmpdir(), 'kiln-template-'));
    dirs.push(dir);
    const seeded = await openDatabase({ dataDir: dir });
    opened.push(seeded);
    const scratch = await openDatabase({});
    opened.push(scratch);
    await migrateDatabase(scratch);

    const expected = await schemaOf(scratch);
    expect(expected.migrations.length).toBeGreaterThan(10);
    expect(await schemaOf(seeded)).toEqual(expected);
    // Keys are made at each database's first start, never shared through the template.
    for (const table of ['server_secrets', 'users', 'projects']) {
      expect(rowsOf(await seeded.db.execute(sql.raw(`select 1 from ${table}`)))).toEqual([]);
    }
  });
});
