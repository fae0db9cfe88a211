import { randomUUID } from 'node:crypto';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createPgBossQueue, GENERATION_QUEUE } from '../src/jobs/pgboss.js';
import { createLogger } from '../src/observability/logger.js';
import { createTestDatabase, type TestDatabase, testDatabaseUrl } from './support/db.js';
import { startTcpProxy, type TcpProxy } from './support/tcp-proxy.js';

// QUEUE=pgboss when the database host vanishes without closing its connections (a failover
// leaving half-open sockets): pg-boss's pooled connections go silent while new ones work. A
// statement on a silent connection fails after the silence limit and takes its connection
// with it, instead of holding job dispatch for the 10-15 minutes TCP takes to give up.
//
// PostgreSQL only: PGlite runs inside the process, with no connection to fall silent.

const SILENCE_LIMIT_MS = 1_000;
// Without the limit the first send waits forever: fail well before vitest's minute.
const TEST_TIMEOUT_MS = 20_000;

const logger = createLogger('silent');

describe.skipIf(!testDatabaseUrl)('pg-boss connections gone silent (postgres only: PGlite has no connection)', () => {
  let database: TestDatabase;
  let proxy: TcpProxy;
  let queue: Awaited<ReturnType<typeof createPgBossQueue>> | undefined;

  beforeAll(async () => {
    database = await createTestDatabase();
  });
  afterEach(async () => {
    // The proxy first: it ends the connections left silent, which would otherwise hold close().
    await proxy?.close();
    await queue?.close();
    queue = undefined;
  });
  afterAll(async () => {
    await database?.close();
  });

  it(
    'fails a send on a silent connection instead of hanging, drops that connection, and sends and delivers jobs on new ones',
    async () => {
      const direct = new URL(database.url!);
      proxy = await startTcpProxy({ host: direct.hostname, port: Number(direct.port || 5432) });
      queue = await createPgBossQueue({
        url: proxy.urlFor(database.url!),
        schema: 'pgboss',
        consumer: false,
        logger,
        silenceLimitMs: SILENCE_LIMIT_MS,
      });
      const { boss } = queue;
      // start() left its pool's connections open (idle): they are the ones the host abandons.
      expect(proxy.open).toBeGreaterThan(0);
      proxy.blackhole();

      const send = () => boss.send(GENERATION_QUEUE, { generationId: randomUUID() });
      await expect(send()).rejects.toThrow(/timeout/i);
      // Each silent connection costs one statement at most; then the pool opens new ones.
      let sent: string | null = null;
      for (let attempt = 0; sent === null && attempt < 4; attempt++) sent = await send().catch(() => null);
      expect(sent).not.toBeNull();

      // The queue works afterwards: the job is there to fetch and complete.
      const [job] = await boss.fetch(GENERATION_QUEUE);
      expect(job?.id).toBe(sent);
      await boss.complete(GENERATION_QUEUE, job!.id);
      expect((await boss.getJobById(GENERATION_QUEUE, sent!))?.state).toBe('completed');
    },
    TEST_TIMEOUT_MS,
  );
});
