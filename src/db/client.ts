import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from 'drizzle-orm';
import type { ExtractTablesWithRelations } from 'drizzle-orm';
import type { PgDatabase, PgQueryResultHKT, PgTransaction } from 'drizzle-orm/pg-core';
import type { Options as PostgresOptions } from 'postgres';
import { lockDataDir } from './data-dir-lock.js';
import { DATABASE_SILENCE_LIMIT_MS } from './outage.js';
import { seedFromTemplate } from './pglite-template.js';
import * as schema from './schema.js';
import { watchForSilence } from './silent-connections.js';

export type Schema = typeof schema;
export type Db = PgDatabase<PgQueryResultHKT, Schema>;
export type Tx = PgTransaction<PgQueryResultHKT, Schema, ExtractTablesWithRelations<Schema>>;

export interface Database {
  readonly kind: 'pglite' | 'postgres';
  readonly db: Db;
  /** The PostgreSQL URL, for work that needs connections of its own (migrations, LISTEN). */
  readonly url?: string;
  /** Runs a script of several statements (the auth shim). */
  execScript(text: string): Promise<void>;
  close(): Promise<void>;
}

export interface DatabaseOptions {
  /** A PostgreSQL URL; without it an embedded PGlite under dataDir (or in memory). */
  url?: string;
  dataDir?: string;
  /** Sees every statement: the N+1 test counts them. */
  onQuery?: (query: string) => void;
  maxConnections?: number;
  /** Embedded: how long to wait for another process to let go of dataDir (default 30 s), told once. */
  dataDirWaitMs?: number;
  onDataDirBusy?: (holder: number) => void;
  /** PostgreSQL: how long a connection awaiting a reply may hear nothing before it is dropped (default DATABASE_SILENCE_LIMIT_MS). */
  silenceLimitMs?: number;
}

export async function openDatabase(options: DatabaseOptions): Promise<Database> {
  const logger: Logger | undefined = options.onQuery ? { logQuery: (q) => options.onQuery!(q) } : undefined;
  // Only the driver in use is loaded: each is a good part of start-up's module loading.
  if (options.url) {
    const [{ default: postgres }, { drizzle: drizzlePostgres }] = await Promise.all([import('postgres'), import('drizzle-orm/postgres-js')]);
    const client = postgres(options.url, {
      max: options.maxConnections ?? 10,
      onnotice: () => {},
      // postgres.js tries several hosts in turn only on sockets it makes itself: those go unwatched.
      ...(namesSeveralHosts(options.url) ? {} : { socket: watchForSilence(options.silenceLimitMs ?? DATABASE_SILENCE_LIMIT_MS) }),
    } as PostgresOptions<{}>); // `socket` is in postgres.js's API (connection.js), not in its types
    return {
      kind: 'postgres',
      url: options.url,
      db: drizzlePostgres(client, { schema, logger }) as unknown as Db,
      execScript: async (text) => void (await client.unsafe(text).simple()),
      close: () => client.end({ timeout: 5 }),
    };
  }
  if (!options.dataDir) return openPglite(undefined, logger);
  await mkdir(options.dataDir, { recursive: true });
  const release = await lockDataDir(options.dataDir, { waitMs: options.dataDirWaitMs ?? 30_000, onWait: options.onDataDirBusy });
  try {
    const dataDir = path.join(options.dataDir, 'pgdata');
    if (!(await seedFromTemplate(dataDir))) await mkdir(dataDir, { recursive: true });
    const database = await openPglite(dataDir, logger);
    return { ...database, close: () => database.close().finally(release) };
  } catch (error) {
    await release();
    throw error;
  }
}

/** Whether a PostgreSQL URL names several hosts (`host1:5432,host2:5432`), read as postgres.js reads it. */
function namesSeveralHosts(url: string): boolean {
  const authority = url.slice(url.indexOf('://') + 3).split(/[?/]/)[0]!;
  return authority.slice(authority.indexOf('@') + 1).includes(',');
}

/** PGlite in `dataDir` (in memory without one), as it is; openDatabase seeds a fresh one first. */
export async function openPglite(dataDir: string | undefined, logger?: Logger): Promise<Database> {
  const [{ PGlite }, { drizzle: drizzlePglite }, { PreparedPglite }] = await Promise.all([
    import('@electric-sql/pglite'),
    import('drizzle-orm/pglite'),
    import('./pglite-prepared.js'),
  ]);
  const client = new PGlite(dataDir, { startParams: [...PGlite.defaultStartParams, ...EMBEDDED_SETTINGS] });
  await client.waitReady;
  return {
    kind: 'pglite',
    // Drizzle calls only `query` and `transaction`, which PreparedPglite has.
    db: drizzlePglite({ client: new PreparedPglite(client) as unknown as typeof client, schema, logger }) as unknown as Db,
    execScript: async (text) => void (await client.exec(text)),
    close: () => client.close(),
  };
}

/**
 * The embedded server's shared buffers: PostgreSQL's default 128 MB is zeroed at every
 * start and stays resident. At 32 MB, zeroing the 42 MB of shared memory still took 120 ms
 * of PGlite's 520 ms boot here; 16 MB saves 50 ms. An embedded database's working set fits
 * in an eighth of the default, and what does not is read from the OS's page cache.
 */
const EMBEDDED_SETTINGS = ['-c', 'shared_buffers=16MB'];

/** Rows of a raw `db.execute`, whichever driver ran it. */
export function rowsOf<T>(result: unknown): T[] {
  return Array.isArray(result) ? (result as T[]) : ((result as { rows: T[] }).rows ?? []);
}
