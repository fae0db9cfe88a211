import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { Redis } from 'ioredis';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CancelGenerationDocument } from './gql/graphql.js';
import {
  APP_PIECES,
  BUS_ONLY_POLL_MS,
  followChunks,
  followPieceByPiece,
  hasReceived,
  type KilnProcess,
  ready,
  spawnKiln,
  streamedApp,
  waitUntil,
} from './support/cluster.js';
import { createTestDatabase, type TestDatabase, testDatabaseUrl } from './support/db.js';
import { type FakeGemini, heldAnswer, startFakeGemini } from './support/fake-gemini.js';
import { createProject, graphqlClient, signUp, type TestUser } from './support/fixtures.js';
import { type FakeFlutter, fakeFlutter, GenerationWatch, getGeneration, startAccepted, tempDir } from './support/generation-helpers.js';
import { type PrivateRedis, redisServerBin, startPrivateRedis } from './support/private-services.js';

// EVENTS=redis across processes, and Redis going away and coming back mid-stream: the
// processes keep running, streams complete without a gap, and events flow live again.
// The Redis here is a private one on its own port, so restarting it disturbs no one. The
// worker's model is a fake Gemini in this process, whose answers a test holds and lets out
// piece by piece; the API processes read a quiet stream's chunks from the database only
// after 10 minutes (STREAM_POLL_MS), so chunks reach subscribers through Redis.

const redisUrl = process.env.TEST_REDIS_URL || undefined;
const skip = !testDatabaseUrl || !redisUrl || !redisServerBin;

describe.skipIf(skip)('scaled out with EVENTS=redis through a Redis restart (set TEST_DATABASE_URL and TEST_REDIS_URL, needs redis-server)', () => {
  let database: TestDatabase;
  let redis: PrivateRedis;
  let flutter: FakeFlutter;
  let gemini: FakeGemini;
  let data: { path: string; remove(): Promise<void> };
  let apiA: KilnProcess;
  let apiB: KilnProcess;
  let worker: KilnProcess;
  let owner: TestUser;
  let projectId: string;
  let admin: postgres.Sql;

  beforeAll(async () => {
    [database, redis, flutter, gemini, data] = await Promise.all([createTestDatabase(), startPrivateRedis(), fakeFlutter('ok'), startFakeGemini(), tempDir('scale-redis')]);
    // What the model answers unless a test holds an answer (the last behaviour scripted repeats).
    gemini.script(streamedApp());
    admin = postgres(database.url!, { max: 1, onnotice: () => {} });
    const env = {
      DATABASE_URL: database.url!,
      QUEUE: 'pgboss',
      EVENTS: 'redis',
      REDIS_URL: redis.url,
      AUTH_JWT_SECRET: randomBytes(48).toString('base64'),
      FLUTTER_BIN: flutter.bin,
      GENERATION_LEASE_SECONDS: '3',
      ...gemini.kilnEnv,
      RATE_LIMIT_GENERATIONS_PER_USER: 'off',
      RATE_LIMIT_GENERATIONS_PER_IP: 'off',
    };
    [apiA, apiB, worker] = await Promise.all([
      spawnKiln('api-A', { ...env, ROLE: 'api', STREAM_POLL_MS: BUS_ONLY_POLL_MS, DATA_DIR: `${data.path}/a` }),
      spawnKiln('api-B', { ...env, ROLE: 'api', STREAM_POLL_MS: BUS_ONLY_POLL_MS, DATA_DIR: `${data.path}/b` }),
      spawnKiln('worker', { ...env, ROLE: 'worker', DATA_DIR: `${data.path}/w` }),
    ]);
    owner = await signUp({ client: (token) => graphqlClient(apiA.url, token) });
    projectId = (await createProject(owner.client, { target: 'FLUTTER' })).id;
  });

  afterAll(async () => {
    await Promise.all([apiA, apiB, worker].filter(Boolean).map((p) => p.stop(5_000)));
    await admin?.end();
    await Promise.all([database?.close(), redis?.close(), gemini?.close(), flutter?.remove(), data?.remove()]);
  });

  /** A generation started on API B whose answer goes out piece by piece, each once API A's subscriber has the one before: Redis brought them. */
  const streamsLive = async (prompt: string) => {
    // Nothing else runs or waits: the held answer goes to this generation.
    const held = heldAnswer(APP_PIECES);
    gemini.script(...held.behaviours);
    const started = await startAccepted(graphqlClient(apiB.url, owner.accessToken), { projectId, prompt });
    const chunks = await followPieceByPiece(apiA.url, owner.accessToken, started.id, held);
    const generation = await getGeneration(owner.client, started.id);
    expect(generation.status).toBe('SUCCEEDED');
    expect(chunks.map((c) => c.seq)).toEqual(chunks.map((_, i) => i));
    expect(chunks.map((c) => c.text).join('')).toBe(generation.output);
    expect(generation.output).toBe(held.pieces.join(''));
  };

  it('streams live across processes through Redis', async () => {
    await streamsLive('A flashcards app');
  });

  it('keeps every process up and every stream whole while Redis restarts mid-stream; live again after', async () => {
    // The answer's first pieces go out; the rest wait until Redis is down, and go out while it is.
    const answer = heldAnswer(APP_PIECES, { released: 3 });
    gemini.script(...answer.behaviours);
    const started = await startAccepted(owner.client, { projectId, prompt: 'A tide table' });
    let restarted: Promise<void> | undefined;
    const { chunks } = await followChunks([apiA.url, apiB.url], owner.accessToken, started.id, {
      onChunk: (seen) => {
        if (restarted || !hasReceived(seen, answer.pieces.slice(0, 3))) return;
        restarted = redis.stop().then(() => {
          answer.gate.open();
          return redis.start();
        });
      },
    });
    expect(restarted).toBeDefined();
    await restarted;
    const watch = new GenerationWatch(apiA.url, owner.accessToken, started.id);
    expect(await watch.finished(60_000).finally(() => watch.close())).toMatchObject({ status: 'SUCCEEDED' });
    const generation = await getGeneration(owner.client, started.id);
    expect(chunks.map((c) => c.seq)).toEqual(chunks.map((_, i) => i));
    expect(chunks.map((c) => c.text).join('')).toBe(generation.output);
    for (const process_ of [apiA, apiB, worker]) expect(process_.alive).toBe(true);
    expect((await ready(apiA.url)) && (await ready(apiB.url))).toBe(true);

    // After the reconnect: live streaming and a cancel.
    await streamsLive('A tide table, again');

    // Held: the worker is surely still streaming it when the cancel comes.
    gemini.script(...heldAnswer(APP_PIECES).behaviours);
    const doomed = await startAccepted(owner.client, { projectId, prompt: 'Cancel me' });
    const doomedWatch = new GenerationWatch(apiA.url, owner.accessToken, doomed.id);
    try {
      await doomedWatch.until((g) => g.phase === 'GENERATING', 30_000);
      await owner.client.expectNoErrors(CancelGenerationDocument, { id: doomed.id });
      expect(await doomedWatch.finished(10_000)).toMatchObject({ status: 'CANCELLED' });
    } finally {
      await doomedWatch.close();
    }
  });

  it('leaves nothing RUNNING or QUEUED behind', async () => {
    await waitUntil(async () => (await admin`select 1 from generations where status in ('RUNNING', 'QUEUED')`).length === 0, 30_000, () => 'still active', 200);
  });
});

describe.skipIf(!redisServerBin)('EVENTS=redis with Redis not there yet at start-up (needs redis-server)', () => {
  it("starts all the same, warning, and its events go out through Redis once it is there", { timeout: 120_000 }, async () => {
    const [redis, flutter, data] = await Promise.all([startPrivateRedis(), fakeFlutter('ok'), tempDir('redis-later')]);
    const probe = new Redis(redis.url, { lazyConnect: true });
    let kiln: KilnProcess | undefined;
    try {
      await redis.stop(); // its port stays reserved, and nothing listens there: connections are refused
      kiln = await spawnKiln('redis-later', { EVENTS: 'redis', REDIS_URL: redis.url, FLUTTER_BIN: flutter.bin, DATA_DIR: data.path, OFFLINE_CHUNK_DELAY_MS: '0' });
      expect(kiln.logs.filter((line) => line.includes('Redis is not reachable yet'))).toHaveLength(1);

      await redis.start();
      await probe.connect();
      await probe.psubscribe('*');
      const published = once(probe, 'pmessage');
      const owner = await signUp({ client: (token) => graphqlClient(kiln!.url, token) });
      const project = await createProject(owner.client, { target: 'FLUTTER' });
      await startAccepted(owner.client, { projectId: project.id, prompt: 'A metronome' });
      await published;
      expect(kiln.alive).toBe(true);
      expect(await kiln.stop()).toEqual({ code: 0, signal: null });
    } finally {
      probe.disconnect();
      await kiln?.stop(5_000);
      await Promise.all([redis.close(), flutter.remove(), data.remove()]);
    }
  });
});
