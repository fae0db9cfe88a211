import { randomBytes } from 'node:crypto';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { migrateDatabase } from '../src/db/migrate.js';
import { openDatabase } from '../src/db/client.js';
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
  textOf,
  waitUntil,
} from './support/cluster.js';
import { testDatabaseUrl } from './support/db.js';
import { type FakeGemini, heldAnswer, startFakeGemini } from './support/fake-gemini.js';
import { createProject, graphqlClient, signUp, type TestUser } from './support/fixtures.js';
import { type FakeFlutter, fakeFlutter, GenerationWatch, getGeneration, retryOf, startAccepted, tempDir } from './support/generation-helpers.js';
import { type PrivatePostgres, privatePostgresUnavailable, startPrivatePostgres } from './support/private-services.js';

// A PostgreSQL restart under a scaled-out Kiln (QUEUE=pgboss, EVENTS=postgres). The
// shared server other suites use must not be restarted, so this runs on a private
// cluster (initdb on a port of its own) and restarts that one. The worker's model is a
// fake Gemini in this process, whose answers the test holds and lets out piece by piece;
// the API reads a quiet stream's chunks from the database only after 10 minutes
// (STREAM_POLL_MS), so chunks reach subscribers over LISTEN.

const skip = !testDatabaseUrl || privatePostgresUnavailable !== undefined;
const reason = !testDatabaseUrl ? 'set TEST_DATABASE_URL to run' : `skipped: ${privatePostgresUnavailable}`;

describe.skipIf(skip)(`scaled out through a PostgreSQL restart (private cluster; ${reason})`, () => {
  let pg: PrivatePostgres;
  let flutter: FakeFlutter;
  let gemini: FakeGemini;
  let data: { path: string; remove(): Promise<void> };
  let api: KilnProcess;
  let worker: KilnProcess;
  let owner: TestUser;
  let projectId: string;

  beforeAll(async () => {
    [pg, flutter, gemini, data] = await Promise.all([startPrivatePostgres(), fakeFlutter('ok'), startFakeGemini(), tempDir('scale-restart')]);
    // What the model answers unless the test holds an answer (the last behaviour scripted repeats).
    gemini.script(streamedApp());
    const database = await openDatabase({ url: pg.url });
    await migrateDatabase(database);
    await database.close();
    const env = {
      DATABASE_URL: pg.url,
      QUEUE: 'pgboss',
      EVENTS: 'postgres',
      AUTH_JWT_SECRET: randomBytes(48).toString('base64'),
      FLUTTER_BIN: flutter.bin,
      GENERATION_LEASE_SECONDS: '3',
      ...gemini.kilnEnv,
      RATE_LIMIT_GENERATIONS_PER_USER: 'off',
      RATE_LIMIT_GENERATIONS_PER_IP: 'off',
    };
    [api, worker] = await Promise.all([
      spawnKiln('api', { ...env, ROLE: 'api', STREAM_POLL_MS: BUS_ONLY_POLL_MS, DATA_DIR: `${data.path}/api` }),
      spawnKiln('worker', { ...env, ROLE: 'worker', DATA_DIR: `${data.path}/worker` }),
    ]);
    owner = await signUp({ client: (token) => graphqlClient(api.url, token) });
    projectId = (await createProject(owner.client, { target: 'FLUTTER' })).id;
  });

  afterAll(async () => {
    await Promise.all([api, worker].filter(Boolean).map((p) => p.stop(5_000)));
    await Promise.all([pg?.close(), gemini?.close(), flutter?.remove(), data?.remove()]);
  });

  it('keeps both processes up through a restart mid-stream; the stream resumes by seq; jobs and events work after', async () => {
    // The answer's first pieces go out; the rest wait until the restart (pg_ctl restart, one
    // step: stopped and started again) is over, so the run is mid-answer all through it.
    const answer = heldAnswer(APP_PIECES, { released: 3 });
    gemini.script(...answer.behaviours);
    const started = await startAccepted(owner.client, { projectId, prompt: 'A bird song quiz' });
    let restarted: Promise<void> | undefined;
    const { chunks, resumes } = await followChunks([api.url], owner.accessToken, started.id, {
      onChunk: (seen) => {
        if (restarted || !hasReceived(seen, answer.pieces.slice(0, 3))) return;
        restarted = pg.restart().then(() => answer.gate.open());
      },
    });
    expect(restarted).toBeDefined();
    await restarted;
    expect(api.alive && worker.alive).toBe(true);
    await waitUntil(() => ready(api.url), 30_000, () => 'the API is not ready again');

    // Whatever the restart did to the run (it may have failed, or been interrupted and
    // retried), it ended, and the client saw exactly what was persisted, in order.
    const watch = new GenerationWatch(api.url, owner.accessToken, started.id);
    const end = await watch.finished(60_000).finally(() => watch.close());
    const generation = await getGeneration(owner.client, started.id);
    expect(chunks.map((c) => c.seq)).toEqual(chunks.map((_, i) => i));
    expect(chunks.map((c) => c.text).join('')).toBe(generation.output);
    console.info(`[restart figures] PostgreSQL restart mid-stream: the run ended ${end.status}${end.error ? `/${end.error.code}` : ''}, the client resumed ${resumes} times`);

    // An interrupted run has its retry queued as it ends: that one runs to its end too, so
    // the held answer below goes to the next generation.
    if (end.error?.code === 'INTERRUPTED') {
      const retry = await retryOf(owner.client, projectId, started.id);
      const retryWatch = new GenerationWatch(api.url, owner.accessToken, retry.id);
      await retryWatch.finished(60_000).finally(() => retryWatch.close());
    }

    // After the restart: a job reaches the worker (pg-boss), chunks stream live (LISTEN is back).
    const held = heldAnswer(APP_PIECES);
    gemini.script(...held.behaviours);
    const next = await startAccepted(owner.client, { projectId, prompt: 'A bird song quiz, again' });
    // Each piece goes out only once the subscriber has the one before: LISTEN brought it.
    const live = await followPieceByPiece(api.url, owner.accessToken, next.id, held);
    const after = new GenerationWatch(api.url, owner.accessToken, next.id);
    expect(await after.finished(60_000).finally(() => after.close())).toMatchObject({ status: 'SUCCEEDED' });
    expect(live.map((c) => c.seq)).toEqual(live.map((_, i) => i));
    expect(textOf(live)).toBe((await getGeneration(owner.client, next.id)).output);

    // Nothing left behind.
    const admin = postgres(pg.url, { max: 1, onnotice: () => {} });
    try {
      expect([...(await admin`select id, status from generations where status in ('RUNNING', 'QUEUED')`)]).toEqual([]);
    } finally {
      await admin.end();
    }
  });
});
