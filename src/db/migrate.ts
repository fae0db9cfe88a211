import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { sql } from 'drizzle-orm';
import { readMigrationFiles } from 'drizzle-orm/migrator';
import type { PgliteDatabase } from 'drizzle-orm/pglite';
import { migrate as migratePglite } from 'drizzle-orm/pglite/migrator';
import { drizzle } from 'drizzle-orm/postgres-js';
import { migrate as migratePostgres } from 'drizzle-orm/postgres-js/migrator';
import postgres from 'postgres';
import { type Database, rowsOf } from './client.js';

const migrationsFolder = fileURLToPath(new URL('../../drizzle', import.meta.url));
const shimFile = fileURLToPath(new URL('../../supabase/auth-shim.sql', import.meta.url));
// Any constant works: every Kiln process on one database takes the same lock.
const MIGRATION_LOCK = 7_406_221;

/**
 * Brings the database to the current schema: Supabase's auth shim where there is no
 * auth.uid() (plain PostgreSQL, PGlite), then drizzle's migrations.
 */
export async function migrateDatabase(database: Database): Promise<void> {
  if (database.kind === 'pglite') {
    await applyShimIfMissing(database.db, (text) => database.execScript(text));
    await migratePglite(database.db as unknown as PgliteDatabase<Record<string, unknown>>, { migrationsFolder });
    return;
  }
  // One connection of its own, so the session lock covers every statement: processes
  // starting together migrate one after another.
  const client = postgres(database.url!, { max: 1, onnotice: () => {} });
  try {
    const db = drizzle(client);
    await db.execute(sql`select pg_advisory_lock(${MIGRATION_LOCK})`);
    await applyShimIfMissing(db, async (text) => void (await client.unsafe(text).simple()));
    await migratePostgres(db, { migrationsFolder });
    await db.execute(sql`select pg_advisory_unlock(${MIGRATION_LOCK})`);
  } finally {
    await client.end({ timeout: 5 });
  }
}

type Executor = { execute: (query: ReturnType<typeof sql>) => Promise<unknown> };

async function applyShimIfMissing(db: Executor, execScript: (text: string) => Promise<void>) {
  const [row] = rowsOf<{ present: boolean }>(await db.execute(sql`select to_regprocedure('auth.uid()') is not null as present`));
  if (!row?.present) await execScript(await readFile(shimFile, 'utf8'));
}

/** Whether every migration in drizzle/ has been applied (for /ready). */
export async function isMigrated(database: Database): Promise<boolean> {
  const expected = readMigrationFiles({ migrationsFolder }).length;
  try {
    const [row] = rowsOf<{ applied: number }>(
      await database.db.execute(sql`select count(*)::int as applied from drizzle.__drizzle_migrations`),
    );
    return (row?.applied ?? 0) >= expected;
  } catch {
    return false;
  }
}
