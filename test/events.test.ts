import { randomUUID } from 'node:crypto';
import postgres from 'postgres';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../src/config.js';
import { generationChunks, generations, projects, users } from '../src/db/schema.js';
import { serviceScope } from '../src/db/scope.js';
import { type ChunkEvent, createEventBusOver, type EventBus, type GenerationTopics } from '../src/events/bus.js';
import { createEventBus, type EventBusHandle } from '../src/events/index.js';
import { createPostgresEventTarget, MAX_NOTIFY_BYTES } from '../src/events/postgres.js';
import { createRedisEventBusTarget } from '../src/events/redis.js';
import { createLogger } from '../src/observability/logger.js';
import { waitUntil } from './support/cluster.js';
import { createTestDatabase, type TestDatabase, testDatabaseUrl } from './support/db.js';
import { within } from './support/generation-helpers.js';
import { LogCapture } from './support/log-capture.js';
import { type PrivateRedis, redisServerBin, startPrivateRedis } from './support/private-services.js';
import { startTcpProxy } from './support/tcp-proxy.js';

// The cross-process event buses, each instance standing for one process: what one
// publishes, the others receive, in order, whatever the size, and after their
// connection to PostgreSQL or Redis was cut.

const logger = createLogger('silent');
const redisUrl = process.env.TEST_REDIS_URL || undefined;

/** Collects what a subscription yields; `next(n)` resolves once n items have come. */
function collect<K extends keyof GenerationTopics>(bus: EventBus, topic: K, id: string) {
  const items: GenerationTopics[K][1][] = [];
  const iterator = (bus.subscribe as (t: K, id: string) => AsyncIterable<GenerationTopics[K][1]>)(topic, id)[Symbol.asyncIterator]();
  let wake = () => {};
  void (async () => {
    for (let next = await iterator.next(); !next.done; next = await iterator.next()) {
      items.push(next.value);
      wake();
    }
  })();
  return {
    items,
    next: (count: number, timeoutMs = 5_000) =>
      within(
        (async () => {
          while (items.length < count) await new Promise<void>((resolve) => (wake = resolve));
          return items.slice(0, count);
        })(),
        timeoutMs,
        () => `${count} ${topic} events did not arrive; got ${items.length}`,
      ),
    close: () => iterator.return?.(),
  };
}

/** A user, project and generation with `chunks` persisted: what the pointer and catch-up reads find. */
async function seedGeneration(database: TestDatabase, chunks: string[] = []) {
  return serviceScope(database.db).run(async (tx) => {
    const userId = randomUUID();
    await tx.insert(users).values({ id: userId, email: `events-${userId}@example.com` });
    const [project] = await tx.insert(projects).values({ ownerId: userId, name: 'events', target: 'WEB' }).returning();
    const [generation] = await tx
      .insert(generations)
      .values({ projectId: project!.id, createdBy: userId, sessionId: randomUUID(), prompt: 'p', provider: 'offline', model: 'offline' })
      .returning();
    if (chunks.length > 0) await tx.insert(generationChunks).values(chunks.map((text, seq) => ({ generationId: generation!.id, seq, text })));
    return generation!;
  });
}

describe.skipIf(!testDatabaseUrl)('EVENTS=postgres between processes (set TEST_DATABASE_URL to run)', () => {
  let database: TestDatabase;
  let a: EventBusHandle;
  let b: EventBusHandle;
  const config = () => parseConfig({ DATABASE_URL: database.url, EVENTS: 'postgres' });

  beforeAll(async () => {
    database = await createTestDatabase();
    [a, b] = await Promise.all([createEventBus(config(), database, logger), createEventBus(config(), database, logger)]);
  });
  afterAll(async () => {
    await a?.close();
    await b?.close();
    await database?.close();
  });

  it('delivers what one instance publishes to the others in publishing order, and to its own subscribers once', async () => {
    const id = randomUUID();
    const remote = collect(b.bus, 'generationChunks', id);
    const local = collect(a.bus, 'generationChunks', id);
    // createEventBus resolved once LISTEN was in place, so B hears everything from here on.
    const batches = Array.from({ length: 200 }, (_, i) => [{ seq: i, text: `chunk ${i} ` }]);
    for (const batch of batches) a.bus.publish('generationChunks', id, batch);
    expect(await remote.next(200)).toEqual(batches);
    expect(await local.next(200)).toEqual(batches);
    // Nothing arrives twice (the own notification is ignored).
    a.bus.publish('generationChunks', id, [{ seq: 200, text: 'last' }]);
    await remote.next(201);
    expect(local.items).toHaveLength(201);
    await Promise.all([remote.close(), local.close()]);
  });

  it('sends a pointer for a batch over the 8,000-byte NOTIFY limit, and the receiver reads the rows back', async () => {
    // Three chunks of 2,730 two-byte characters: about 16 KB of JSON.
    const texts = ['é', 'ü', 'ß'].map((c) => c.repeat(2_730));
    const generation = await seedGeneration(database, texts);
    const batch: ChunkEvent[] = texts.map((text, seq) => ({ seq, text, round: 0 }));
    expect(Buffer.byteLength(JSON.stringify(batch))).toBeGreaterThan(8_000);

    // What actually travels, seen by a LISTEN of our own.
    const spy = postgres(database.url!, { max: 1, onnotice: () => {} });
    const payloads: string[] = [];
    await spy.listen('kiln_events', (payload) => payloads.push(payload));
    const remote = collect(b.bus, 'generationChunks', generation.id);
    a.bus.publish('generationChunks', generation.id, batch);
    expect(await remote.next(1)).toEqual([batch]);
    await waitUntil(() => payloads.some((p) => p.includes(generation.id)), 5_000, () => 'the notification was not seen');
    const sent = payloads.find((p) => p.includes(generation.id))!;
    expect(Buffer.byteLength(sent)).toBeLessThan(MAX_NOTIFY_BYTES);
    expect(JSON.parse(sent)).toMatchObject({ t: `generationChunks:${generation.id}`, p: { from: 0, to: 2 } });
    await remote.close();
    await spy.end();
  });

  it('carries a cancel from one instance to a run watching on another', async () => {
    const id = randomUUID();
    const cancels = collect(b.bus, 'generationCancel', id);
    a.bus.publish('generationCancel', id, { at: new Date().toISOString() });
    await cancels.next(1, 10_000);
    await cancels.close();
  });

  it('comes back after its LISTEN connection is killed, and tells subscribers to catch up', async () => {
    const generation = await seedGeneration(database, ['one', 'two']);
    const updates = collect(b.bus, 'generationUpdated', generation.id);
    const chunks = collect(b.bus, 'generationChunks', generation.id);
    const admin = postgres(database.url!, { max: 1, onnotice: () => {} });
    const killed = await admin`
      select pg_terminate_backend(pid) from pg_stat_activity
      where datname = current_database() and application_name = 'kiln-events-listen'`;
    expect(killed.length).toBe(2); // one per instance
    // The catch-up: the current status and the last persisted chunk (a gap for anyone behind).
    expect(await updates.next(1, 15_000)).toEqual([{ status: 'QUEUED', phase: 'QUEUED' }]);
    expect(await chunks.next(1, 15_000)).toEqual([[{ seq: 1, text: 'two', round: 0 }]]);
    // And live events flow again.
    a.bus.publish('generationUpdated', generation.id, { status: 'RUNNING', phase: 'GENERATING' });
    expect((await updates.next(2, 5_000))[1]).toEqual({ status: 'RUNNING', phase: 'GENERATING' });
    expect(b.connected).toBe(true);
    await Promise.all([updates.close(), chunks.close(), admin.end()]);
  });

  it('replaces a publisher whose connection went silently dead, and sends what was published meanwhile on the new one', async () => {
    // The sender's NOTIFY connection goes through a proxy that then stops forwarding on it
    // (a half-open socket after a failover); new connections get through.
    const direct = new URL(database.url!);
    const proxy = await startTcpProxy({ host: direct.hostname, port: Number(direct.port || 5432) });
    const logs = new LogCapture();
    const channel = `kiln_events_${randomUUID().replaceAll('-', '').slice(0, 12)}`;
    const common = { channel, shrink: () => undefined, expand: async () => undefined, healthCheckMs: 100, healthTimeoutMs: 500 };
    const sender = createPostgresEventTarget({ ...common, listenUrl: database.url!, publishUrl: proxy.urlFor(database.url!), logger: createLogger('warn', logs) });
    const receiver = createPostgresEventTarget({ ...common, listenUrl: database.url!, publishUrl: database.url!, logger });
    try {
      await Promise.all([sender.start(), receiver.start()]);
      const id = randomUUID();
      const remote = collect(createEventBusOver(receiver as unknown as EventTarget), 'generationChunks', id);
      const senderBus = createEventBusOver(sender as unknown as EventTarget);
      const batches = Array.from({ length: 6 }, (_, i) => [{ seq: i, text: `chunk ${i}` }]);
      senderBus.publish('generationChunks', id, batches[0]!);
      expect(await remote.next(1)).toEqual(batches.slice(0, 1));
      expect(proxy.open).toBe(1);

      proxy.blackhole();
      for (const batch of batches.slice(1)) senderBus.publish('generationChunks', id, batch);
      // Every one of them, in order, on the new connection. A batch whose reply was still on the
      // way when the connection died is sent again (streams skip a seq they already have).
      const seqs = () => remote.items.map((batch) => batch[0]!.seq);
      await waitUntil(() => seqs().includes(5), 10_000, () => `only ${JSON.stringify(seqs())} arrived`);
      expect(seqs()).toEqual([...seqs()].sort((x, y) => x - y));
      expect(new Set(seqs())).toEqual(new Set([0, 1, 2, 3, 4, 5]));
      expect(seqs().length).toBeLessThanOrEqual(7);
      const replaced = logs.records().filter((record) => record.msg === 'the event publisher stopped answering; sending on a new connection');
      expect(replaced).toHaveLength(1);
      // And it keeps working.
      const before = remote.items.length;
      senderBus.publish('generationChunks', id, [{ seq: 6, text: 'after' }]);
      expect((await remote.next(before + 1))[before]).toEqual([{ seq: 6, text: 'after' }]);
      await remote.close();
    } finally {
      await Promise.all([sender.close(), receiver.close()]);
      await proxy.close();
    }
  });
});

describe.skipIf(!redisUrl)('EVENTS=redis between processes (set TEST_REDIS_URL to run)', () => {
  let database: TestDatabase;
  const handles: EventBusHandle[] = [];
  const open = async (url: string) => {
    const handle = await createEventBus(parseConfig({ EVENTS: 'redis', REDIS_URL: url }), database, logger);
    handles.push(handle);
    return handle;
  };

  beforeAll(async () => {
    database = await createTestDatabase(); // PGlite unless TEST_DATABASE_URL: only catch-up reads use it
  });
  afterEach(async () => {
    await Promise.all(handles.splice(0).map((handle) => handle.close()));
  });
  afterAll(async () => {
    await database?.close();
  });

  it('delivers what one instance publishes to another in publishing order', async () => {
    const [a, b] = [await open(redisUrl!), await open(redisUrl!)];
    const id = randomUUID();
    const remote = collect(b.bus, 'buildLogs', id);
    await waitUntil(() => b.connected, 5_000, () => 'not connected');
    // A SUBSCRIBE is asynchronous: wait until Redis counts the subscriber.
    await waitUntil(async () => (await countSubscribers(redisUrl!, `buildLogs:${id}`)) === 1, 5_000, () => 'no subscriber');
    const batches = Array.from({ length: 300 }, (_, i) => [{ seq: i, step: 'build', stream: 'STDOUT' as const, text: `line ${i}` }]);
    for (const batch of batches) a.bus.publish('buildLogs', id, batch);
    expect(await remote.next(300)).toEqual(batches);
    await remote.close();
  });

  it('notices a subscriber connection that went silently dead, resubscribes and tells subscribers to catch up', async () => {
    // The receiver reaches Redis through a proxy that then stops forwarding on its connections.
    const direct = new URL(redisUrl!);
    const proxy = await startTcpProxy({ host: direct.hostname, port: Number(direct.port || 6379) });
    try {
      const sender = await open(redisUrl!);
      const target = createRedisEventBusTarget({ url: proxy.urlFor(redisUrl!), logger, resync: async () => ({ status: 'QUEUED', phase: 'QUEUED' }), healthCheckMs: 100, healthTimeoutMs: 500 });
      handles.push({ kind: 'redis', bus: createEventBusOver(target as unknown as EventTarget), connected: true, close: () => target.close() });
      await target.start();
      const id = randomUUID();
      const updates = collect(handles.at(-1)!.bus, 'generationUpdated', id);
      await waitUntil(async () => (await countSubscribers(redisUrl!, `generationUpdated:${id}`)) === 1, 5_000, () => 'no subscriber');
      sender.bus.publish('generationUpdated', id, { status: 'RUNNING', phase: 'GENERATING' });
      await updates.next(1);

      proxy.blackhole();
      // The catch-up after the reconnect, then live events again on the new connection.
      expect((await updates.next(2, 10_000))[1]).toEqual({ status: 'QUEUED', phase: 'QUEUED' });
      expect(target.reconnects).toBeGreaterThanOrEqual(1);
      await waitUntil(async () => (await countSubscribers(redisUrl!, `generationUpdated:${id}`)) === 1, 5_000, () => 'not resubscribed');
      sender.bus.publish('generationUpdated', id, { status: 'SUCCEEDED', phase: 'DONE' });
      await waitUntil(() => updates.items.some((u) => u.status === 'SUCCEEDED'), 5_000, () => 'the live event after the reconnect did not arrive');
      await updates.close();
    } finally {
      await Promise.all(handles.splice(0).map((handle) => handle.close()));
      await proxy.close();
    }
  });

  describe.skipIf(!redisServerBin)('with a Redis of its own that is restarted (needs redis-server on PATH)', () => {
    let redis: PrivateRedis;
    beforeAll(async () => {
      redis = await startPrivateRedis();
    });
    afterAll(async () => {
      await redis?.close();
    });

    it('publishing during the outage neither throws nor crashes; after the restart subscribers catch up and events flow', async () => {
      const [a, b] = [await open(redis.url), await open(redis.url)];
      const generation = await seedGeneration(database, ['only']);
      const updates = collect(b.bus, 'generationUpdated', generation.id);
      const chunks = collect(b.bus, 'generationChunks', generation.id);
      await waitUntil(async () => (await countSubscribers(redis.url, `generationUpdated:${generation.id}`)) === 1, 5_000, () => 'no subscriber');

      await redis.stop();
      await waitUntil(() => !a.connected && !b.connected, 5_000, () => 'the clients did not notice the outage');
      expect(() => a.bus.publish('generationUpdated', generation.id, { status: 'RUNNING', phase: 'GENERATING' })).not.toThrow();
      await redis.start();

      // The catch-up after the reconnect, then live events again.
      expect(await updates.next(1, 15_000)).toEqual([{ status: 'QUEUED', phase: 'QUEUED' }]);
      expect(await chunks.next(1, 15_000)).toEqual([[{ seq: 0, text: 'only', round: 0 }]]);
      await waitUntil(() => a.connected && b.connected, 10_000, () => 'not reconnected');
      await waitUntil(async () => (await countSubscribers(redis.url, `generationUpdated:${generation.id}`)) === 1, 5_000, () => 'not resubscribed');
      a.bus.publish('generationUpdated', generation.id, { status: 'SUCCEEDED', phase: 'DONE' });
      expect((await updates.next(2, 5_000))[1]).toEqual({ status: 'SUCCEEDED', phase: 'DONE' });
      await Promise.all([updates.close(), chunks.close()]);
    });
  });
});

async function countSubscribers(url: string, channel: string): Promise<number> {
  const { Redis } = await import('ioredis');
  const client = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
  client.on('error', () => {});
  try {
    await client.connect();
    const [, count] = (await client.pubsub('NUMSUB', channel)) as [string, number];
    return Number(count);
  } catch {
    return 0;
  } finally {
    client.disconnect();
  }
}
