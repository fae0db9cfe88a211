import { sql } from 'drizzle-orm';
import postgres from 'postgres';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { type Database, type Db, openDatabase, rowsOf } from '../src/db/client.js';
import { errorChain } from '../src/db/error-chain.js';
import { DATABASE_SILENCE_LIMIT_MS, isConnectionError, retryThroughOutage } from '../src/db/outage.js';
import { serviceScope } from '../src/db/scope.js';
import { waitUntil } from './support/cluster.js';
import { createTestDatabase, type TestDatabase, testDatabaseUrl } from './support/db.js';
import { startTcpProxy, type TcpProxy } from './support/tcp-proxy.js';

// A database host that vanishes without closing its connections (a managed-Postgres failover
// leaving half-open sockets, a network partition): a TCP proxy between Kiln and PostgreSQL
// stops forwarding on the connections open at that moment, while new ones get through. A
// connection awaiting a reply there is dropped after the silence limit with a connection
// error, instead of waiting the 10-15 minutes TCP takes to give up, and the scope's outage
// retry runs the work again on a new connection. A connection with nothing awaited is left
// alone, however long it hears nothing.
//
// PostgreSQL only (PGlite runs inside the process, with no connection to fall silent), but
// for the outage window's start, which needs no database.

const SILENCE_LIMIT_MS = 1_000;
// Without the watchdog these wait forever: fail well before vitest's minute.
const TEST_TIMEOUT_MS = 20_000;

describe.skipIf(!testDatabaseUrl)('database connections gone silent (postgres only: PGlite has no connection)', () => {
  let database: TestDatabase;
  /** A direct connection that holds the advisory locks the statements under test wait for. */
  let holder: postgres.Sql;
  let proxy: TcpProxy;
  let behind: Database | undefined;

  beforeAll(async () => {
    database = await createTestDatabase();
    holder = postgres(database.url!, { max: 1, onnotice: () => {} });
  });
  beforeEach(async () => {
    const direct = new URL(database.url!);
    proxy = await startTcpProxy({ host: direct.hostname, port: Number(direct.port || 5432) });
  });
  afterEach(async () => {
    await behind?.close();
    behind = undefined;
    // Also ends, on the server, what the silent connections left behind.
    await proxy.close();
  });
  afterAll(async () => {
    await holder?.end();
    await database?.close();
  });

  /** Kiln's database client, reaching PostgreSQL through the proxy. */
  async function openBehindProxy(maxConnections = 1): Promise<Db> {
    behind = await openDatabase({ url: proxy.urlFor(database.url!), maxConnections, silenceLimitMs: SILENCE_LIMIT_MS });
    return behind.db;
  }

  /** The server process behind the connection a transaction of the scope ran on. */
  const backendPid = (db: Db) =>
    serviceScope(db).run(async (tx) => rowsOf<{ pid: number }>(await tx.execute(sql`select pg_backend_pid() as pid`))[0]!.pid);

  /** The server processes of the test database waiting for an advisory lock, once there is one. */
  async function lockWaiters(): Promise<number[]> {
    let pids: number[] = [];
    const waiting = async () =>
      (pids = (
        await holder<{ pid: number }[]>`select pid from pg_stat_activity where datname = current_database() and wait_event_type = 'Lock' and wait_event = 'advisory'`
      ).map((row) => row.pid));
    await waitUntil(async () => (await waiting()).length > 0, 10_000, () => 'no statement waits for the lock');
    return pids;
  }

  const settled = (work: Promise<unknown>) => work.then(() => 'answered', (error: unknown) => error);
  const messagesOf = (error: unknown) => [...errorChain(error)].map((e) => e.message).join(' / ');

  it(
    'ends a statement whose reply never comes with a connection error, and the next statement runs on a new connection',
    async () => {
      const db = await openBehindProxy();
      const before = await backendPid(db);
      await holder`select pg_advisory_lock(1)`;
      const outcome = settled(db.execute(sql`select pg_advisory_xact_lock(1)`));
      await lockWaiters();
      proxy.blackhole();
      // The server answers now; the answer never arrives.
      await holder`select pg_advisory_unlock(1)`;

      const error = await outcome;
      expect(isConnectionError(error), messagesOf(error)).toBe(true);
      expect(messagesOf(error)).toContain('The database sent nothing for 1 s');
      expect(await backendPid(db)).not.toBe(before);
    },
    TEST_TIMEOUT_MS,
  );

  it(
    "runs a transaction whose connection went silent under it again on a new connection (the scope's outage retry)",
    async () => {
      const db = await openBehindProxy();
      const before = await backendPid(db);
      await holder`select pg_advisory_lock(2)`;
      // Shared: the retry gets it alongside the first attempt's transaction, which lives on in the
      // server behind the silent connection.
      const run = serviceScope(db).run(async (tx) => {
        await tx.execute(sql`select pg_advisory_xact_lock_shared(2)`);
        return rowsOf<{ pid: number }>(await tx.execute(sql`select pg_backend_pid() as pid`))[0]!.pid;
      });
      await lockWaiters();
      proxy.blackhole();
      await holder`select pg_advisory_unlock(2)`;

      expect(await run).not.toBe(before);
    },
    TEST_TIMEOUT_MS,
  );

  it(
    'replaces an idle connection that went silent at its next use',
    async () => {
      const db = await openBehindProxy();
      const before = await backendPid(db);
      proxy.blackhole();
      expect(await backendPid(db)).not.toBe(before);
    },
    TEST_TIMEOUT_MS,
  );

  it(
    'leaves an idle connection alone however long it hears nothing: only one awaiting a reply past the limit is dropped',
    async () => {
      const db = await openBehindProxy(2);
      // Two connections, both idle once their transactions end.
      const pids = new Set(await Promise.all([backendPid(db), backendPid(db)]));
      expect(pids.size).toBe(2);
      await holder`select pg_advisory_lock(3)`;
      // A lock wait longer than the limit: from the client, no different from a silent server.
      const outcome = settled(db.execute(sql`select pg_advisory_xact_lock(3)`));
      const [waiting] = await lockWaiters();
      const [idle] = [...pids].filter((pid) => pid !== waiting);

      // Dropped once it had waited the limit; the other connection has heard nothing for longer.
      expect(isConnectionError(await outcome)).toBe(true);
      await holder`select pg_advisory_unlock(3)`;
      expect(await backendPid(db)).toBe(idle);
    },
    TEST_TIMEOUT_MS,
  );
});

describe('the outage window after a silent connection', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it('starts at the first failure: work whose connection stayed silent for longer than the window is still run again', async () => {
    // Only the clock is faked: the first attempt fails as the watchdog fails it, the limit later.
    vi.useFakeTimers({ toFake: ['Date'] });
    let attempts = 0;
    const result = await retryThroughOutage(async () => {
      if (++attempts > 1) return 'done';
      vi.setSystemTime(Date.now() + DATABASE_SILENCE_LIMIT_MS);
      throw Object.assign(new Error('The database sent nothing for 60 s while a reply was awaited'), { code: 'ETIMEDOUT' });
    }, isConnectionError);
    expect(result).toBe('done');
  });
});
