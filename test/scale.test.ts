import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CancelGenerationDocument, GenerationChunksDocument } from './gql/graphql.js';
import {
  APP_PIECES,
  BUS_ONLY_POLL_MS,
  followPieceByPiece,
  hasReceived,
  type KilnProcess,
  parentOf,
  ready,
  spawnKiln,
  type SteeredFlutter,
  steeredFlutter,
  type StreamedChunk,
  streamedApp,
  waitUntil,
} from './support/cluster.js';
import { createTestDatabase, type TestDatabase, testDatabaseUrl } from './support/db.js';
import { type FakeGemini, heldAnswer, startFakeGemini } from './support/fake-gemini.js';
import { createProject, expectTypename, graphqlClient, signUp, type TestUser } from './support/fixtures.js';
import {
  GenerationWatch,
  getGeneration,
  isAlive,
  logLineMatching,
  rawId,
  startAccepted,
  subscribe,
  tempDir,
  wsClient,
} from './support/generation-helpers.js';
import type { GraphQLClient } from './support/server.js';

// Scaled out for real: two ROLE=api and two ROLE=worker processes (QUEUE=pgboss,
// EVENTS=postgres) on one PostgreSQL. Any API serves any subscription, any worker runs
// any generation, cancel reaches whichever worker runs it, a worker killed with -9 or
// stopped with SIGTERM loses nothing and leaves nothing running, and the whole cluster
// rides out its database connections being cut. The workers' model is a fake Gemini in
// this process: a test that needs a run mid-answer holds the answer's pieces until it
// lets them out. The API processes read a quiet stream's chunks from the database only
// after 10 minutes (STREAM_POLL_MS), so chunks reach subscribers over the event bus.

/**
 * Tests that start Kiln processes, or wait out a lease, a grace period and a retry's run: their
 * own bounds add up past vitest's default 60 s, and a process start-up beside the other suites
 * takes seconds.
 */
const SLOW_TEST_MS = 150_000;

describe.skipIf(!testDatabaseUrl)('scaled out: 2 API + 2 worker processes, QUEUE=pgboss, EVENTS=postgres (set TEST_DATABASE_URL to run)', () => {
  let database: TestDatabase;
  let admin: postgres.Sql;
  let flutter: SteeredFlutter;
  let gemini: FakeGemini;
  let data: { path: string; remove(): Promise<void> };
  let apiA: KilnProcess;
  let apiB: KilnProcess;
  const workers: KilnProcess[] = [];
  let owner: TestUser;
  let onB: GraphQLClient;
  let projectId: string;
  let env: Record<string, string>;
  let spawned = 0;

  const spawnWorker = async (extra: Record<string, string> = {}) => {
    const worker = await spawnKiln(`worker-${++spawned}`, { ...env, ROLE: 'worker', DATA_DIR: `${data.path}/worker-${spawned}`, ...extra });
    workers.push(worker);
    return worker;
  };
  const liveWorkers = () => workers.filter((w) => w.alive);
  /** By Relay id or raw uuid. */
  const uuidOf = (id: string) => (/^[0-9a-f-]{36}$/.test(id) ? id : rawId(id));
  const statusOf = async (id: string) =>
    (await admin<{ status: string; error_code: string | null }[]>`select status, error_code from generations where id = ${uuidOf(id)}`)[0];
  const retryOf = async (id: string) => (await admin<{ id: string }[]>`select id from generations where retry_of = ${uuidOf(id)}`)[0]?.id;
  const dumpLogs = () => [apiA, apiB, ...workers].map((p) => `--- ${p?.name}\n${p?.logs.slice(-15).join('\n')}`).join('\n');

  /** The worker process whose build wrote this pid file: grandchild → the tool → the worker. */
  const workerRunning = async (generationId: string) => {
    const grandchild = Number(await readFile(flutter.pidFileOf(rawId(generationId)), 'utf8'));
    const tool = await parentOf(grandchild);
    // A worker starts its build tools through its spawner helper (src/toolchain/spawner.ts).
    const workerPid = await parentOf(await parentOf(tool));
    const worker = workers.find((w) => w.pid === workerPid);
    if (!worker) throw new Error(`no worker of ours started the spawner that is the grandparent of ${grandchild}`);
    return { worker, grandchild, tool };
  };
  const waitForHangingBuild = (generationId: string) =>
    logLineMatching(apiA.url, owner.accessToken, generationId, (line) => line.text.startsWith('Waiting for another flutter command'));

  beforeAll(async () => {
    database = await createTestDatabase();
    admin = postgres(database.url!, { max: 1, onnotice: () => {} });
    [flutter, gemini, data] = await Promise.all([steeredFlutter(), startFakeGemini(), tempDir('scale')]);
    // What the model answers unless a test holds an answer (the last behaviour scripted repeats).
    gemini.script(streamedApp());
    env = {
      DATABASE_URL: database.url!,
      QUEUE: 'pgboss',
      EVENTS: 'postgres',
      AUTH_JWT_SECRET: randomBytes(48).toString('base64'),
      FLUTTER_BIN: flutter.bin,
      // One machine: the workers share the workspaces directory, as processes on one host would.
      WORKSPACES_DIR: `${data.path}/workspaces`,
      GENERATION_LEASE_SECONDS: '3',
      ...gemini.kilnEnv,
      MAX_ACTIVE_GENERATIONS_PER_USER: '20',
      RATE_LIMIT_GENERATIONS_PER_USER: 'off',
      RATE_LIMIT_GENERATIONS_PER_IP: 'off',
    };
    [apiA, apiB] = await Promise.all([
      spawnKiln('api-A', { ...env, ROLE: 'api', STREAM_POLL_MS: BUS_ONLY_POLL_MS, DATA_DIR: `${data.path}/api-a` }),
      spawnKiln('api-B', { ...env, ROLE: 'api', STREAM_POLL_MS: BUS_ONLY_POLL_MS, DATA_DIR: `${data.path}/api-b` }),
    ]);
    await Promise.all([spawnWorker(), spawnWorker()]);
    owner = await signUp({ client: (token) => graphqlClient(apiA.url, token) });
    onB = graphqlClient(apiB.url, owner.accessToken);
    projectId = (await createProject(owner.client, { target: 'FLUTTER' })).id;
  });

  afterAll(async () => {
    await Promise.all([apiA, apiB, ...workers].filter(Boolean).map((p) => p.stop(5_000)));
    await admin?.end();
    await database?.close();
    await gemini?.close();
    await flutter?.remove();
    await data?.remove();
  });

  it('every process LISTENs on its own connection', async () => {
    const listeners = await admin`select pid from pg_stat_activity where datname = current_database() and application_name = 'kiln-events-listen'`;
    expect(listeners).toHaveLength(4);
  });

  it('streams a generation started on API B to a subscriber on API A live, piece by piece, with no gap, run by either worker', async () => {
    // Nothing else runs or waits: the held answer goes to this generation.
    const held = heldAnswer(APP_PIECES);
    gemini.script(...held.behaviours);
    const started = await startAccepted(onB, { projectId, prompt: 'A recipe book with shopping lists' });
    // Each piece goes out only once API A's subscriber has the one before: the bus brought it.
    const chunks = await followPieceByPiece(apiA.url, owner.accessToken, started.id, held, dumpLogs);
    const watch = new GenerationWatch(apiA.url, owner.accessToken, started.id);
    expect(await watch.finished(60_000).finally(() => watch.close())).toMatchObject({ status: 'SUCCEEDED' });
    const generation = await getGeneration(owner.client, started.id);
    expect(chunks.map((c) => c.seq)).toEqual(chunks.map((_, i) => i));
    expect(chunks.map((c) => c.text).join('')).toBe(generation.output);
    expect(generation.output).toBe(held.pieces.join(''));
  });

  it('cancels from API A a generation a worker is streaming', async () => {
    // Its answer held: the worker is surely still streaming it when the cancel comes.
    const answer = heldAnswer(APP_PIECES);
    gemini.script(...answer.behaviours);
    const started = await startAccepted(onB, { projectId, prompt: 'A very long story generator' });
    const watch = new GenerationWatch(apiA.url, owner.accessToken, started.id);
    try {
      await watch.until((g) => g.phase === 'GENERATING', 30_000);
      const { cancelGeneration } = await owner.client.expectNoErrors(CancelGenerationDocument, { id: started.id });
      expect(['RUNNING', 'CANCELLED']).toContain(expectTypename(cancelGeneration, 'Generation').status);
      expect(await watch.finished(10_000)).toMatchObject({ status: 'CANCELLED', phase: 'DONE' });
    } finally {
      await watch.close();
    }
  });

  it('a worker killed with -9 mid-build: the generation ends INTERRUPTED, is retried on the other worker, and its build is killed', { timeout: SLOW_TEST_MS }, async () => {
    await flutter.setMode('hang');
    const started = await startAccepted(owner.client, { projectId, prompt: 'A build that hangs' });
    await waitForHangingBuild(started.id);
    const { worker: victim, grandchild, tool } = await workerRunning(started.id);
    expect(isAlive(grandchild)).toBe(true);
    await flutter.setMode('ok'); // the retry builds normally

    victim.signal('SIGKILL');
    expect(await victim.exited).toMatchObject({ signal: 'SIGKILL' });
    // The build's own process group survives its worker…
    expect(isAlive(grandchild)).toBe(true);

    const watch = new GenerationWatch(apiA.url, owner.accessToken, started.id);
    const end = await watch.finished(30_000).finally(() => watch.close());
    expect(end).toMatchObject({ status: 'FAILED', error: { code: 'INTERRUPTED' } });
    // …until the surviving worker's recovery finds it under an ended generation's workspace.
    await waitUntil(() => !isAlive(grandchild) && !isAlive(tool), 15_000, () => `the orphaned build (${tool}, ${grandchild}) is still running\n${dumpLogs()}`);

    let retry: string | undefined;
    await waitUntil(async () => (retry = await retryOf(started.id)) !== undefined, 15_000, () => 'no retry was queued');
    await waitUntil(async () => (await statusOf(retry!))?.status === 'SUCCEEDED', 60_000, () => `the retry did not succeed\n${dumpLogs()}`, 200);
    expect(liveWorkers()).toHaveLength(1);
  });

  it('SIGTERM: the worker takes no new work and lets its running generation finish, then exits', { timeout: SLOW_TEST_MS }, async () => {
    const [worker] = liveWorkers();
    // Its answer held until the signal and the next start: the generation is surely running through them.
    const answer = heldAnswer(APP_PIECES);
    gemini.script(...answer.behaviours);
    const started = await startAccepted(owner.client, { projectId, prompt: 'A habit tracker' });
    const watch = new GenerationWatch(apiA.url, owner.accessToken, started.id);
    try {
      await watch.until((g) => g.phase === 'GENERATING', 30_000);
      worker!.signal('SIGTERM');
      // Queued after the signal: the stopping worker must leave it.
      const later = await startAccepted(owner.client, { projectId, prompt: 'Started while the worker stops' });
      answer.gate.open();
      expect(await watch.finished(30_000)).toMatchObject({ status: 'SUCCEEDED' });
      expect(await worker!.exited).toEqual({ code: 0, signal: null });
      expect((await statusOf(later.id))?.status).toBe('QUEUED');
      // A new worker takes it.
      await spawnWorker();
      await waitUntil(async () => (await statusOf(later.id))?.status === 'SUCCEEDED', 60_000, () => `the queued one did not run\n${dumpLogs()}`, 200);
    } finally {
      await watch.close();
    }
  });

  it('SIGTERM past the grace period: the running generation is handed back and retried on another worker', { timeout: SLOW_TEST_MS }, async () => {
    // The only worker, with a short grace period, gets a build that never ends.
    for (const worker of liveWorkers()) await worker.stop();
    const impatient = await spawnWorker({ WORKER_SHUTDOWN_GRACE_SECONDS: '1' });
    await flutter.setMode('hang');
    const started = await startAccepted(owner.client, { projectId, prompt: 'Another hanging build' });
    await waitForHangingBuild(started.id);
    const { worker, grandchild } = await workerRunning(started.id);
    expect(worker).toBe(impatient);
    await flutter.setMode('ok');
    await spawnWorker();

    // The build never ends: the worker exits only because its grace (1 s) ran out and the build was stopped.
    expect(await impatient.stop()).toEqual({ code: 0, signal: null });
    expect(await statusOf(started.id)).toEqual({ status: 'FAILED', error_code: 'INTERRUPTED' });
    expect(isAlive(grandchild)).toBe(false);
    let retry: string | undefined;
    await waitUntil(async () => (retry = await retryOf(started.id)) !== undefined, 10_000, () => 'no retry was queued');
    await waitUntil(async () => (await statusOf(retry!))?.status === 'SUCCEEDED', 60_000, () => `the retry did not succeed\n${dumpLogs()}`, 200);
  });

  it('rides out pg_terminate_backend of every connection: no process dies, readiness returns, streams resume by seq', async () => {
    // The answer's first pieces go out, the rest wait for the cut.
    const answer = heldAnswer(APP_PIECES, { released: 3 });
    gemini.script(...answer.behaviours);
    const started = await startAccepted(onB, { projectId, prompt: 'A chess clock' });
    const chunks: StreamedChunk[] = [];
    let killed: number | undefined;
    // Read until the first pieces are in, then cut every connection to the database and let the answer go on.
    const follow = async (url: string, afterSeq: number | null) => {
      const client = wsClient(url, owner.accessToken);
      try {
        for await (const { generationChunks } of subscribe(client, GenerationChunksDocument, { id: started.id, afterSeq })) {
          chunks.push(generationChunks);
          if (killed === undefined && hasReceived(chunks, answer.pieces.slice(0, 3))) {
            const terminated = await admin`
              select pg_terminate_backend(pid) from pg_stat_activity
              where datname = current_database() and pid <> pg_backend_pid()`;
            killed = terminated.length;
            answer.gate.open();
          }
        }
        return true;
      } catch {
        return false; // the stream failed with its database connection: resume
      } finally {
        await client.dispose();
      }
    };
    let completed = await follow(apiA.url, null);
    for (let attempt = 0; !completed && attempt < 10; attempt++) {
      // A client resumes where it was, on any API instance.
      completed = await follow(attempt % 2 ? apiA.url : apiB.url, chunks.at(-1)?.seq ?? null);
    }
    expect(completed).toBe(true);
    // Pools, listeners, pg-boss: every process had several.
    expect(killed).toBeGreaterThan(8);
    for (const process_ of [apiA, apiB, ...liveWorkers()]) expect(process_.alive).toBe(true);
    await waitUntil(async () => (await ready(apiA.url)) && (await ready(apiB.url)), 20_000, () => 'not ready again');

    const watch = new GenerationWatch(apiA.url, owner.accessToken, started.id);
    const end = await watch.finished(60_000).finally(() => watch.close());
    const generation = await getGeneration(owner.client, started.id);
    // Whatever the cut did to the run, the client saw exactly what was persisted, once, in order.
    expect(chunks.map((c) => c.seq)).toEqual(chunks.map((_, i) => i));
    expect(chunks.map((c) => c.text).join('')).toBe(generation.output);
    console.info(`[scale figures] the generation running during pg_terminate_backend ended ${end.status}${end.error ? `/${end.error.code}` : ''}`);

    // And the cluster works as before: a new generation streams and succeeds.
    const next = await startAccepted(onB, { projectId, prompt: 'A metronome' });
    const after = new GenerationWatch(apiA.url, owner.accessToken, next.id);
    expect(await after.finished(60_000).finally(() => after.close())).toMatchObject({ status: 'SUCCEEDED' });
  });

  it('leaves nothing RUNNING or QUEUED behind', async () => {
    await waitUntil(
      async () => (await admin`select 1 from generations where status in ('RUNNING', 'QUEUED')`).length === 0,
      60_000,
      () => `generations still active\n${dumpLogs()}`,
      200,
    );
  });
});
