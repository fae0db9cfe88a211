import { randomBytes } from 'node:crypto';
import postgres from 'postgres';
import { type Database, type DatabaseOptions, openDatabase } from '../../src/db/client.js';
import { migrateDatabase } from '../../src/db/migrate.js';
import { serviceScope } from '../../src/db/scope.js';

/** Which database the suites run on: PGlite unless TEST_DATABASE_URL names a PostgreSQL. */
export const testDatabaseUrl = process.env.TEST_DATABASE_URL || undefined;
export const databaseKind = testDatabaseUrl ? 'postgres' : 'pglite';

export interface TestDatabase extends Database {
  /** A URL for a second process on the same database (postgres only). */
  readonly url?: string;
}

/**
 * A fresh, migrated database of its own: an in-memory PGlite, or a new database on
 * TEST_DATABASE_URL's server that is dropped on close, so runs never see leftovers.
 */
export async function createTestDatabase(options: Pick<DatabaseOptions, 'onQuery'> = {}): Promise<TestDatabase> {
  if (!testDatabaseUrl) {
    const database = await openDatabase(options);
    await migrateDatabase(database);
    return database;
  }
  const name = `kiln_test_${process.pid}_${randomBytes(4).toString('hex')}`;
  const admin = postgres(testDatabaseUrl, { max: 1, onnotice: () => {} });
  await admin.unsafe(`create database ${name}`);
  const url = new URL(testDatabaseUrl);
  url.pathname = `/${name}`;
  const database = await openDatabase({ ...options, url: url.toString() });
  await migrateDatabase(database);
  return {
    ...database,
    url: url.toString(),
    close: async () => {
      await database.close();
      await admin.unsafe(`drop database if exists ${name} with (force)`);
      await admin.end();
    },
  };
}

/**
 * For suites that fake setTimeout, under which postgres.js cannot open a connection: opens
 * two now, the most a stream's read and the test's own write take at once. PGlite has one
 * connection, and queues; nothing to do.
 */
export async function openTwoConnections(database: Database): Promise<void> {
  if (database.kind !== 'postgres') return;
  let open = 0;
  let bothOpen = () => {};
  const both = new Promise<void>((resolve) => (bothOpen = resolve));
  await Promise.all([0, 1].map(() => serviceScope(database.db).run(async () => (++open === 2 ? bothOpen() : await both))));
}
