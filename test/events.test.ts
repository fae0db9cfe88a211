import { randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { connect, createServer, type Socket } from 'node:net';
import { eq } from 'drizzle-orm';
import postgres from 'postgres';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { parseConfig } from '../src/config.js';
import { generationChunks, generations } from '../src/db/schema.js';
import { serviceScope } from '../src/db/scope.js';
import { type ChunkEvent, createEventBusOver, createMemoryEventBus, type EventBus, type GenerationTopics, listen } from '../src/events/bus.js';
import { createEventBus, type EventBusHandle, pointerTo } from '../src/events/index.js';
import { createPostgresEventTarget, MAX_NOTIFY_BYTES, MAX_WAITING } from '../src/events/postgres.js';
import { createRedisEventBusTarget } from '../src/events/redis.js';
import { createLogger } from '../src/observability/logger.js';
import { waitUntil } from './support/cluster.js';
import { createTestDatabase, type TestDatabase, testDatabaseUrl } from './support/db.js';
import { within } from './support/generation-helpers.js';
import { LogCapture } from './support/log-capture.js';
import { type PrivateRedis, redisServerBin, startPrivateRedis } from './support/private-services.js';
import { insertGenerationRow } from './support/rows.js';
import { startTcpProxy } from './support/tcp-proxy.js';

// The event buses. The cross-process ones, each instance standing for one process: what
// one publishes, the others receive, in order, whatever the size, and after their
// connection to PostgreSQL or Redis was cut. On every bus a listener that throws, or a
// message nobody can read, is logged and never ends the process.

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
    const { generation } = await insertGenerationRow(tx, 'events');
    if (chunks.length > 0) await tx.insert(generationChunks).values(chunks.map((text, seq) => ({ generationId: generation.id, seq, text })));
    return generation;
  });
}

describe('EVENTS=memory', () => {
  it('logs a listener that throws; the other viewers of the generation still get the event, and the process goes on', () => {
    const logs = new LogCapture();
    const bus = createMemoryEventBus(createLogger('warn', logs));
    const id = randomUUID();
    const got: string[] = [];
    listen(bus, 'generationUpdated', id, () => {
      throw new Error("one viewer's listener fails");
    });
    listen(bus, 'generationUpdated', id, (update) => got.push(update.status));
    bus.publish('generationUpdated', id, { status: 'SUCCEEDED', phase: 'DONE' });
    expect(got).toEqual(['SUCCEEDED']);
    expect(logs.records()).toContainEqual(expect.objectContaining({ msg: 'an event listener failed', topic: `generationUpdated:${id}` }));
  });
});

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

  describe('a batch too large for NOTIFY, read back from the database', () => {
    const bigBatch = (): ChunkEvent[] => ['é', 'ü', 'ß'].map((c, seq) => ({ seq, text: c.repeat(2_730), round: 0 }));
    /** Two processes on a channel of their own; the receiver's reads back are `expand`, its catch-ups `resync`. */
    const pair = async (receiver: { expand: () => Promise<unknown>; readTimeoutMs: number; logger?: ReturnType<typeof createLogger> }) => {
      const channel = `kiln_events_${randomUUID().replaceAll('-', '').slice(0, 12)}`;
      const common = { channel, listenUrl: database.url!, publishUrl: database.url!, shrink: pointerTo };
      const sender = createPostgresEventTarget({ ...common, logger, expand: async () => undefined });
      const target = createPostgresEventTarget({
        ...common,
        logger,
        ...receiver,
        // The last persisted chunk: a seq past a stream's last one reads as a gap, repaired from the database.
        resync: async (topic) => (topic.startsWith('generationChunks:') ? [{ seq: 9, text: 'caught up', round: 0 }] : undefined),
      });
      await Promise.all([sender.start(), target.start()]);
      return {
        senderBus: createEventBusOver(sender as unknown as EventTarget),
        receiverBus: createEventBusOver(target as unknown as EventTarget),
        close: () => Promise.all([sender.close(), target.close()]),
      };
    };

    it('holds up no other generation while its read hangs, and its viewers catch up once the read is given up', async () => {
      // The read never answers: a pooled connection gone silently dead, or an outage the scope rides out.
      const { senderBus, receiverBus, close } = await pair({ expand: () => new Promise(() => {}), readTimeoutMs: 200 });
      try {
        const [big, other] = [randomUUID(), randomUUID()];
        const chunks = collect(receiverBus, 'generationChunks', big);
        const updates = collect(receiverBus, 'generationUpdated', other);
        senderBus.publish('generationChunks', big, bigBatch());
        senderBus.publish('generationChunks', big, [{ seq: 10, text: 'after', round: 0 }]);
        senderBus.publish('generationUpdated', other, { status: 'RUNNING', phase: 'BUILDING' });
        senderBus.publish('generationUpdated', other, { status: 'SUCCEEDED', phase: 'DONE' });
        // Another generation's viewers see its run end while the read is still under way.
        expect(await updates.next(2)).toEqual([
          { status: 'RUNNING', phase: 'BUILDING' },
          { status: 'SUCCEEDED', phase: 'DONE' },
        ]);
        // The big batch's viewers get a catch-up in its place, then what followed it, in order.
        expect(await chunks.next(2)).toEqual([[{ seq: 9, text: 'caught up', round: 0 }], [{ seq: 10, text: 'after', round: 0 }]]);
        await Promise.all([chunks.close(), updates.close()]);
      } finally {
        await close();
      }
    });

    it('keeps at most MAX_WAITING events behind a slow read; past that, its viewers get one catch-up instead of the rest', async () => {
      const logs = new LogCapture();
      let answer: (rows: unknown) => void = () => {};
      const slowRead = new Promise((resolve) => (answer = resolve));
      const { senderBus, receiverBus, close } = await pair({ expand: () => slowRead, readTimeoutMs: 60_000, logger: createLogger('warn', logs) });
      try {
        const id = randomUUID();
        const chunks = collect(receiverBus, 'generationChunks', id);
        senderBus.publish('generationChunks', id, bigBatch());
        const small = Array.from({ length: MAX_WAITING + 10 }, (_, i) => [{ seq: 3 + i, text: `chunk ${3 + i}`, round: 0 }]);
        for (const batch of small) senderBus.publish('generationChunks', id, batch);
        // The operator is told; the process did not keep them all.
        await waitUntil(
          () => logs.records().some((record) => record.msg === 'too many events waiting for reads from the database; dropping, subscribers catch up'),
          10_000,
          () => 'nothing was dropped',
        );
        answer(bigBatch());
        const got = await chunks.next(MAX_WAITING + 1);
        expect(got[0]).toEqual(bigBatch());
        expect(got.slice(1, -1)).toEqual(small.slice(0, MAX_WAITING - 1));
        expect(got.at(-1)).toEqual([{ seq: 9, text: 'caught up', round: 0 }]);
        await chunks.close();
      } finally {
        await close();
      }
    });
  });

  it('replaces a publisher whose connection went silently dead, and sends what was published meanwhile on the new one', async () => {
    // The sender's NOTIFY connection goes through a proxy that then stops forwarding on it
    // (a half-open socket after a failover); new connections get through.
    const direct = new URL(database.url!);
    const proxy = await startTcpProxy({ host: direct.hostname, port: Number(direct.port || 5432) });
    const logs = new LogCapture();
    const channel = `kiln_events_${randomUUID().replaceAll('-', '').slice(0, 12)}`;
    const common = { channel, shrink: () => undefined, expand: async () => undefined };
    // Only the sender's health check is under test. Its bound is well above a NOTIFY's round trip
    // on a loaded machine (each commits, so waits for a WAL flush): a slow ping would replace a live
    // publisher too, and send its batch again. The receiver keeps the default bound: a listener
    // rebuilt for a slow ping would miss what was sent meanwhile, with no catch-up here.
    const sender = createPostgresEventTarget({
      ...common,
      listenUrl: database.url!,
      publishUrl: proxy.urlFor(database.url!),
      logger: createLogger('warn', logs),
      healthCheckMs: 100,
      healthTimeoutMs: 2_000,
    });
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
      // The bound is well above a PING's round trip on a loaded machine: a live connection cut for a
      // slow answer would add a catch-up before the live event awaited below, or lose that event.
      const target = createRedisEventBusTarget({ url: proxy.urlFor(redisUrl!), logger, resync: async () => ({ status: 'QUEUED', phase: 'QUEUED' }), healthCheckMs: 100, healthTimeoutMs: 2_000 });
      handles.push({ kind: 'redis', bus: createEventBusOver(target as unknown as EventTarget), connected: true, close: () => target.close() });
      await target.start();
      const id = randomUUID();
      const updates = collect(handles.at(-1)!.bus, 'generationUpdated', id);
      // The catch-up once Redis has confirmed the subscription.
      expect(await updates.next(1)).toEqual([{ status: 'QUEUED', phase: 'QUEUED' }]);
      sender.bus.publish('generationUpdated', id, { status: 'RUNNING', phase: 'GENERATING' });
      expect((await updates.next(2))[1]).toEqual({ status: 'RUNNING', phase: 'GENERATING' });

      proxy.blackhole();
      // The catch-up after the reconnect, then live events again on the new connection.
      expect((await updates.next(3, 10_000))[2]).toEqual({ status: 'QUEUED', phase: 'QUEUED' });
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

  it("sends what a worker published while its connection was down once it is back: other processes' viewers hear the run end", async () => {
    const direct = new URL(redisUrl!);
    const proxy = await startRedisProxy({ host: direct.hostname, port: Number(direct.port || 6379) });
    const api = createRedisEventBusTarget({ url: redisUrl!, logger });
    const worker = createRedisEventBusTarget({ url: proxy.urlFor(redisUrl!), logger });
    try {
      await Promise.all([api.start(), worker.start()]);
      const id = randomUUID();
      const updates = collect(createEventBusOver(api as unknown as EventTarget), 'generationUpdated', id);
      await waitUntil(async () => (await countSubscribers(redisUrl!, `generationUpdated:${id}`)) === 1, 5_000, () => 'no subscriber');
      const workerBus = createEventBusOver(worker as unknown as EventTarget);
      workerBus.publish('generationUpdated', id, { status: 'RUNNING', phase: 'BUILDING' });
      await updates.next(1);

      // Only the worker's connections drop; the API's subscriber stays, so nothing else tells it.
      proxy.down = true;
      await waitUntil(() => !worker.connected, 5_000, () => 'the worker did not notice the drop');
      workerBus.publish('generationUpdated', id, { status: 'SUCCEEDED', phase: 'DONE' });
      proxy.down = false;
      expect((await updates.next(2, 10_000))[1]).toEqual({ status: 'SUCCEEDED', phase: 'DONE' });
      await updates.close();
    } finally {
      await Promise.all([api.close(), worker.close()]);
      await proxy.close();
    }
  });

  it('tells a viewer who subscribed just before the run ended, though Redis took the SUBSCRIBE after the last status went out', async () => {
    const direct = new URL(redisUrl!);
    const proxy = await startRedisProxy({ host: direct.hostname, port: Number(direct.port || 6379) });
    const { Redis } = await import('ioredis');
    const worker = new Redis(redisUrl!);
    try {
      const api = await open(proxy.urlFor(redisUrl!));
      await waitUntil(() => api.connected, 5_000, () => 'not connected');
      const generation = await seedGeneration(database);
      // The API's commands reach Redis late (a Redis a little further away than the database).
      proxy.holding = true;
      const updates = collect(api.bus, 'generationUpdated', generation.id);
      // The stream has read QUEUED; the run ends and its status goes out before Redis has the SUBSCRIBE.
      await serviceScope(database.db).run(async (tx) => {
        await tx.update(generations).set({ status: 'RUNNING', phase: 'GENERATING' }).where(eq(generations.id, generation.id));
        await tx.update(generations).set({ status: 'SUCCEEDED', phase: 'DONE', finishedAt: new Date() }).where(eq(generations.id, generation.id));
      });
      expect(await worker.publish(`generationUpdated:${generation.id}`, JSON.stringify({ status: 'SUCCEEDED', phase: 'DONE' }))).toBe(0);
      proxy.holding = false;
      expect(await updates.next(1)).toEqual([{ status: 'SUCCEEDED', phase: 'DONE' }]);
      await updates.close();
    } finally {
      worker.disconnect();
      await Promise.all(handles.splice(0).map((handle) => handle.close()));
      await proxy.close();
    }
  });

  it('logs and drops a message it cannot read, and a listener that throws; the process goes on and the other viewers get the next event', async () => {
    const logs = new LogCapture();
    const target = createRedisEventBusTarget({ url: redisUrl!, logger: createLogger('warn', logs) });
    const { Redis } = await import('ioredis');
    const stranger = new Redis(redisUrl!);
    try {
      await target.start();
      const bus = createEventBusOver(target as unknown as EventTarget);
      const id = randomUUID();
      listen(bus, 'generationUpdated', id, () => {
        throw new Error("one viewer's listener fails");
      });
      const updates = collect(bus, 'generationUpdated', id);
      await waitUntil(async () => (await countSubscribers(redisUrl!, `generationUpdated:${id}`)) === 1, 5_000, () => 'no subscriber');
      await stranger.publish(`generationUpdated:${id}`, 'not json');
      bus.publish('generationUpdated', id, { status: 'SUCCEEDED', phase: 'DONE' });
      expect(await updates.next(1)).toEqual([{ status: 'SUCCEEDED', phase: 'DONE' }]);
      const messages = logs.records().map((record) => record.msg);
      expect(messages).toContain('an unreadable message was ignored');
      expect(messages).toContain('an event listener failed');
      await updates.close();
    } finally {
      stranger.disconnect();
      await target.close();
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
      // The catch-up once Redis has confirmed the subscriptions.
      expect(await updates.next(1)).toEqual([{ status: 'QUEUED', phase: 'QUEUED' }]);
      expect(await chunks.next(1)).toEqual([[{ seq: 0, text: 'only', round: 0 }]]);

      await redis.stop();
      await waitUntil(() => !a.connected && !b.connected, 5_000, () => 'the clients did not notice the outage');
      expect(() => a.bus.publish('generationUpdated', generation.id, { status: 'RUNNING', phase: 'GENERATING' })).not.toThrow();
      await redis.start();

      // The catch-up after the reconnect (the event published meanwhile may come too), then live events again.
      await waitUntil(() => updates.items.length >= 2 && chunks.items.length >= 2, 15_000, () => 'no catch-up after the restart');
      expect(updates.items.slice(1)).toContainEqual({ status: 'QUEUED', phase: 'QUEUED' });
      expect(chunks.items[1]).toEqual([{ seq: 0, text: 'only', round: 0 }]);
      await waitUntil(() => a.connected && b.connected, 10_000, () => 'not reconnected');
      await waitUntil(async () => (await countSubscribers(redis.url, `generationUpdated:${generation.id}`)) === 1, 5_000, () => 'not resubscribed');
      a.bus.publish('generationUpdated', generation.id, { status: 'SUCCEEDED', phase: 'DONE' });
      await waitUntil(() => updates.items.at(-1)?.status === 'SUCCEEDED', 5_000, () => 'the live event after the restart did not arrive');
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

/**
 * A TCP proxy to Redis for one process's connections: `down` cuts them and refuses new
 * ones until it is cleared (a network blip); `holding` keeps what the clients send until
 * it is cleared, then lets it through in order (a Redis further away than the database).
 */
async function startRedisProxy(target: { host: string; port: number }) {
  const pairs = new Set<{ client: Socket; upstream: Socket; held: Buffer[] }>();
  let down = false;
  let holding = false;
  const server = createServer((client) => {
    if (down) return void client.destroy();
    const pair = { client, upstream: connect(target.port, target.host), held: [] as Buffer[] };
    pairs.add(pair);
    const close = () => {
      client.destroy();
      pair.upstream.destroy();
      pairs.delete(pair);
    };
    for (const socket of [client, pair.upstream]) socket.on('error', close).on('close', close);
    client.on('data', (data: Buffer) => (holding ? pair.held.push(data) : pair.upstream.write(data)));
    pair.upstream.on('data', (data: Buffer) => client.write(data));
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as { port: number };
  return {
    urlFor(url: string): string {
      const proxied = new URL(url);
      proxied.host = `127.0.0.1:${port}`;
      return proxied.toString();
    },
    set down(value: boolean) {
      down = value;
      if (value) for (const { client } of pairs) client.destroy();
    },
    set holding(value: boolean) {
      holding = value;
      if (value) return;
      for (const pair of pairs) pair.upstream.write(Buffer.concat(pair.held.splice(0)));
    },
    close: async () => {
      for (const { client, upstream } of pairs) {
        client.destroy();
        upstream.destroy();
      }
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
