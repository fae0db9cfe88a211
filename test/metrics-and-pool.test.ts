import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { createServer, connect, type Socket } from 'node:net';
import { sql } from 'drizzle-orm';
import { createSchema, createYoga } from 'graphql-yoga';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError, parseConfig } from '../src/config.js';
import { openDatabase, rowsOf } from '../src/db/client.js';
import { OUTAGE_RETRY_MS } from '../src/db/outage.js';
import { type Kiln, startKiln } from '../src/main.js';
import { createMetrics } from '../src/observability/metrics.js';
import { createTestDatabase, databaseKind, type TestDatabase, testDatabaseUrl } from './support/db.js';
import { createProject, graphqlClient, signUp } from './support/fixtures.js';
import { tempDir } from './support/generation-helpers.js';
import { LogCapture } from './support/log-capture.js';
import { seriesValue } from './support/metrics.js';
import { startTestServer, useTestServer } from './support/server.js';

// What an operator relies on: /metrics is closed in production without METRICS_TOKEN,
// a scrape never scans the generations table, operations are labelled only by names Kiln
// knows, and DATABASE_POOL_MAX bounds the connections a process opens.

const secret = () => randomBytes(32).toString('base64');
const production = { NODE_ENV: 'production', AUTH_JWT_SECRET: secret(), KILN_ENCRYPTION_KEY: randomBytes(32).toString('base64') };

describe('METRICS_TOKEN in production', () => {
  it('refuses to start without it', () => {
    expect(() => parseConfig(production)).toThrow(ConfigError);
    expect(() => parseConfig(production)).toThrow(/NODE_ENV=production needs METRICS_TOKEN/);
  });

  it('serves /metrics only with the token', async () => {
    const token = secret();
    const server = await startTestServer({ ...production, METRICS_TOKEN: token });
    try {
      expect((await fetch(`${server.url}/metrics`)).status).toBe(401);
      const allowed = await fetch(`${server.url}/metrics`, { headers: { authorization: `Bearer ${token}` } });
      expect(allowed.status).toBe(200);
      expect(await allowed.text()).toMatch(/^kiln_generations\{status="RUNNING"\} \d+$/m);
    } finally {
      await server.stop();
    }
  });
});

describe(`a scrape reads no more than the active generations (${databaseKind})`, () => {
  const statements: string[] = [];
  // No worker: its lease recovery and queue scan (every few seconds) would put statements of their
  // own about generations, with parameters EXPLAIN cannot take, among the scrape's.
  const server = useTestServer({ ROLE: 'api' }, { onQuery: (query) => void statements.push(query) });

  it('counts generations by status through the partial index of active statuses, never a table scan', async () => {
    const owner = await signUp(server);
    await createProject(owner.client);
    statements.splice(0);
    const text = await (await fetch(`${server.url}/metrics`)).text();
    expect(text).toMatch(/^kiln_generations\{status="QUEUED"\} 0$/m);
    expect(text).toMatch(/^kiln_queue_depth 0$/m);
    const scrape = statements.filter((statement) => /\bgenerations\b/.test(statement));
    expect(scrape, 'the scrape read no generation counts').not.toHaveLength(0);
    for (const statement of scrape) {
      // With sequential scans priced out, a query that can use an index does; one that cannot still scans.
      const plan = await server.database.db.transaction(async (tx) => {
        await tx.execute(sql`set local enable_seqscan = off`);
        return rowsOf<{ 'QUERY PLAN': string }>(await tx.execute(sql.raw(`explain ${statement}`))).map((row) => row['QUERY PLAN']);
      });
      expect(plan.join('\n'), statement).not.toMatch(/Seq Scan on generations/);
      expect(plan.join('\n'), statement).toMatch(/generations_active_idx/);
    }
  });
});

describe(`operation labels (${databaseKind})`, () => {
  const server = useTestServer();

  it('names only the operations Kiln knows: names a client invents count as "other" and evict none', async () => {
    // Anyone, signed in or not, chooses the names it sends: more of them than the old 200 label slots.
    const invented = Array.from({ length: 250 }, (_, i) => `AttackerChosenLabel_${i}`);
    const answers = await Promise.all(invented.map((name) => server.client().post({ query: `query ${name} { __typename }` })));
    expect(answers.map((answer) => answer.status)).toEqual(invented.map(() => 200));
    const owner = await signUp(server);
    await createProject(owner.client);

    const text = await (await fetch(`${server.url}/metrics`)).text();
    expect(seriesValue(text, 'kiln_graphql_operations_total{operation="other",type="query",outcome="ok"}')).toBe(250);
    expect(seriesValue(text, 'kiln_graphql_operations_total{operation="SignUp",type="mutation",outcome="ok"}')).toBe(1);
    expect(seriesValue(text, 'kiln_graphql_operations_total{operation="CreateProject",type="mutation",outcome="ok"}')).toBe(1);
    expect(text).not.toContain('AttackerChosenLabel');
  });

  it('names the operations of the documents it is given (the persisted-operations manifest) too', async () => {
    const metrics = createMetrics({ defaultMetrics: false });
    const yoga = createYoga({
      schema: createSchema({ typeDefs: 'type Query { ok: Boolean }', resolvers: { Query: { ok: () => true } } }),
      plugins: [metrics.graphqlPlugin({ documents: ['query FromManifest { ok }', 'not a document'] })],
      logging: false,
    });
    for (const query of ['query FromManifest { ok }', 'query Invented { ok }', 'query Viewer { ok }', '{ ok }']) {
      const response = await yoga.fetch('http://kiln.test/graphql', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ query }) });
      expect(response.status, query).toBe(200);
    }
    const text = await metrics.registry.metrics();
    // The manifest's name, a contract name (Viewer), and an anonymous operation keep their labels.
    for (const operation of ['FromManifest', 'Viewer', 'other', 'anonymous']) {
      expect(seriesValue(text, `kiln_graphql_operations_total{operation="${operation}",type="query",outcome="ok"}`), operation).toBe(1);
    }
    expect(text).not.toContain('Invented');
  });
});

describe.skipIf(!testDatabaseUrl)('DATABASE_POOL_MAX', () => {
  let database: TestDatabase;
  let kiln: Kiln;
  let data: Awaited<ReturnType<typeof tempDir>>;
  const applicationName = `kiln_pool_${randomBytes(4).toString('hex')}`;

  beforeAll(async () => {
    database = await createTestDatabase();
    data = await tempDir('pool');
    const url = new URL(database.url!);
    url.searchParams.set('application_name', applicationName);
    // Kiln opens its own pool from DATABASE_URL (no database handed in).
    const config = parseConfig({ DATA_DIR: data.path, LOG_LEVEL: 'silent', DATABASE_URL: url.toString(), DATABASE_POOL_MAX: '2' });
    kiln = await startKiln(config, { port: 0 });
  });

  afterAll(async () => {
    await kiln?.stop();
    await database?.close();
    await data?.remove();
  });

  it('never opens more connections than the pool allows, however many requests arrive at once', async () => {
    const owner = await signUp({ client: (token) => graphqlClient(kiln.url, token) });
    await Promise.all(Array.from({ length: 30 }, (_, i) => createProject(owner.client, { name: `Burst ${i}` })));
    const [row] = rowsOf<{ connections: number }>(
      await database.db.execute(sql`select count(*)::int as connections from pg_stat_activity where application_name = ${applicationName}`),
    );
    expect(row!.connections).toBeGreaterThan(0);
    expect(row!.connections).toBeLessThanOrEqual(2);
  });
});

describe('a scrape while the generation counts cannot be read', () => {
  const scrapeWith = async (activeGenerations: () => Promise<Map<string, number>>) => {
    const metrics = createMetrics({ activeGenerations, defaultMetrics: false });
    metrics.observeHttp({ method: 'GET', route: '/graphql', status: 200 }, 0.01);
    return { metrics, text: await metrics.registry.metrics() };
  };

  it('answers the other series and leaves the generation gauges out, not at the last counts read', async () => {
    let fail = false;
    const { metrics, text } = await scrapeWith(async () => {
      if (fail) throw new Error('connect ECONNREFUSED');
      return new Map([['QUEUED', 3]]);
    });
    expect(text).toMatch(/^kiln_queue_depth 3$/m);
    fail = true;
    const failed = await metrics.registry.metrics();
    expect(failed).toMatch(/^kiln_http_requests_total\{method="GET",route="\/graphql",status="200"\} 1$/m);
    expect(failed).not.toMatch(/^kiln_generations\{/m);
    expect(failed).not.toMatch(/^kiln_queue_depth /m);
    fail = false;
    expect(await metrics.registry.metrics()).toMatch(/^kiln_queue_depth 3$/m);
  });

  // A database that keeps a connection open but never answers: the read never settles.
  it('answers without them when the read never settles, and starts no second read meanwhile', { timeout: 20_000 }, async () => {
    let reads = 0;
    const { metrics, text } = await scrapeWith(() => {
      reads += 1;
      return new Promise(() => {});
    });
    expect(text).toMatch(/^kiln_http_requests_total\{/m);
    expect(text).not.toMatch(/^kiln_generations\{/m);
    expect(text).not.toMatch(/^kiln_queue_depth /m);
    // Each read left behind holds a pooled connection: scrapes must not pile them up.
    expect(await metrics.registry.metrics()).not.toMatch(/^kiln_generations\{/m);
    expect(reads).toBe(1);
  });
});

/** A TCP proxy to PostgreSQL that, from `refuse()` to `restore()`, resets its connections and refuses new ones (a failover). */
async function refusingProxy(target: URL) {
  const open = new Set<Socket>();
  let down = false;
  const server = createServer((client) => {
    if (down) return client.resetAndDestroy();
    const upstream = connect(Number(target.port || 5432), target.hostname);
    for (const socket of [client, upstream]) {
      open.add(socket);
      socket.on('error', () => {}).on('close', () => (client.destroy(), upstream.destroy(), open.delete(socket)));
    }
    client.pipe(upstream).pipe(client);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const url = new URL(target);
  url.host = `127.0.0.1:${(server.address() as { port: number }).port}`;
  return {
    url: url.toString(),
    refuse() {
      down = true;
      for (const socket of open) socket.resetAndDestroy();
    },
    restore() {
      down = false;
    },
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

describe.skipIf(!testDatabaseUrl)('/metrics during a database outage (set TEST_DATABASE_URL to run)', () => {
  // Prometheus gives a scrape 10 s by default; riding the outage out would hold it OUTAGE_RETRY_MS, past this test's timeout.
  it('answers without the generation gauges: the scrape\'s read fails on the refused connection, never waiting the outage out', { timeout: 30_000 }, async () => {
    expect(OUTAGE_RETRY_MS).toBeGreaterThan(30_000);
    const seeded = await createTestDatabase();
    const proxy = await refusingProxy(new URL(seeded.url!));
    const database = { ...(await openDatabase({ url: proxy.url })), url: proxy.url };
    const logs = new LogCapture();
    const server = await startTestServer({ LOG_LEVEL: 'warn' }, { database, logTo: logs });
    try {
      expect(await (await fetch(`${server.url}/metrics`)).text()).toMatch(/^kiln_queue_depth 0$/m);
      proxy.refuse();
      const response = await fetch(`${server.url}/metrics`);
      expect(response.status).toBe(200);
      const text = await response.text();
      expect(text).toMatch(/^kiln_http_requests_total\{/m);
      expect(text).not.toMatch(/^kiln_generations\{/m);
      expect(text).not.toMatch(/^kiln_queue_depth /m);
      // Failed by the refused connection itself, not by the scrape's own time bound.
      const failure = logs.records().find((record) => String(record.msg).startsWith('reading generation counts for /metrics failed'));
      expect(failure?.err).toMatchObject({ code: expect.stringMatching(/^(ECONNRESET|ECONNREFUSED)$/) });
    } finally {
      proxy.restore(); // the database is back, so stopping waits for nothing
      await server.stop();
      await database.close();
      await proxy.close();
      await seeded.close();
    }
  });
});
