import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { sql } from 'drizzle-orm';
import { type MigrationMeta, readMigrationFiles } from 'drizzle-orm/migrator';
import type { PgliteDatabase } from 'drizzle-orm/pglite';
import { type Database, rowsOf } from './client.js';

const migrationsFolder = fileURLToPath(new URL('../../drizzle', import.meta.url));
const shimFile = fileURLToPath(new URL('../../supabase/auth-shim.sql', import.meta.url));
// Any constant works: every Kiln process on one database takes the same lock.
const MIGRATION_LOCK = 7_406_221;

/** The migrations in drizzle/, read once (they do not change while Kiln runs). */
let migrations: MigrationMeta[] | undefined;
const migrationFiles = () => (migrations ??= readMigrationFiles({ migrationsFolder }));

/**
 * Brings the database to the current schema: Supabase's auth shim where there is no
 * auth.uid() (plain PostgreSQL, PGlite), then drizzle's migrations. When both are already
 * there (every start but the first), two reads say so and nothing else runs.
 */
export async function migrateDatabase(database: Database): Promise<void> {
  if (await isCurrent(database.db)) return;
  if (database.kind === 'pglite') {
    const { migrate } = await import('drizzle-orm/pglite/migrator');
    await applyShimIfMissing(database.db, (text) => database.execScript(text));
    await migrate(database.db as unknown as PgliteDatabase<Record<string, unknown>>, { migrationsFolder });
    return;
  }
  const [{ default: postgres }, { drizzle }, { migrate }] = await Promise.all([
    import('postgres'),
    import('drizzle-orm/postgres-js'),
    import('drizzle-orm/postgres-js/migrator'),
  ]);
  // One connection of its own, so the session lock covers every statement: processes
  // starting together migrate one after another.
  const client = postgres(database.url!, { max: 1, onnotice: () => {} });
  try {
    const db = drizzle(client);
    // public alone: the default search_path puts "$user" first, and as a role named kiln
    // the tables would go to the migrations' own kiln schema. A statement, not a startup
    // parameter, which poolers such as PgBouncer refuse (like the session lock, it needs a
    // direct connection or a session-mode pooler).
    await db.execute(sql`set search_path to public`);
    await db.execute(sql`select pg_advisory_lock(${MIGRATION_LOCK})`);
    await applyShimIfMissing(db, async (text) => void (await client.unsafe(text).simple()));
    await migrate(db, { migrationsFolder });
    await db.execute(sql`select pg_advisory_unlock(${MIGRATION_LOCK})`);
  } finally {
    await client.end({ timeout: 5 });
  }
}

/** Whether the shim and the newest migration in drizzle/ are applied (drizzle's own test: the latest created_at). */
async function isCurrent(db: Executor): Promise<boolean> {
  const [state] = rowsOf<{ shim: boolean; tracked: boolean }>(
    await db.execute(sql`select to_regprocedure('auth.uid()') is not null as shim, to_regclass('drizzle.__drizzle_migrations') is not null as tracked`),
  );
  if (!state?.shim || !state.tracked) return false;
  const [row] = rowsOf<{ last: string | null }>(await db.execute(sql`select max(created_at)::text as last from drizzle.__drizzle_migrations`));
  const newest = Math.max(0, ...migrationFiles().map((migration) => migration.folderMillis));
  return Number(row?.last ?? 0) >= newest;
}

type Executor = { execute: (query: ReturnType<typeof sql>) => Promise<unknown> };

async function applyShimIfMissing(db: Executor, execScript: (text: string) => Promise<void>) {
  const [row] = rowsOf<{ present: boolean }>(await db.execute(sql`select to_regprocedure('auth.uid()') is not null as present`));
  if (!row?.present) await execScript(await readFile(shimFile, 'utf8'));
}

/** Names what migrateDatabase applies to a new database: the shim and every migration in drizzle/ (the embedded template's key). */
export async function migrationsKey(): Promise<string> {
  const hash = createHash('sha256').update(await readFile(shimFile));
  for (const migration of migrationFiles()) hash.update(`${migration.folderMillis}:${migration.hash}\n`);
  return hash.digest('hex').slice(0, 16);
}

/** Whether every migration in drizzle/ has been applied (for /ready). */
export async function isMigrated(database: Database): Promise<boolean> {
  const expected = migrationFiles().length;
  try {
    const [row] = rowsOf<{ applied: number }>(
      await database.db.execute(sql`select count(*)::int as applied from drizzle.__drizzle_migrations`),
    );
    return (row?.applied ?? 0) >= expected;
  } catch {
    return false;
  }
}
