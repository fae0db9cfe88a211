import { readFile } from 'node:fs/promises';
import { sql } from 'drizzle-orm';
import { afterEach, describe, expect, it } from 'vitest';
import { rowsOf } from '../src/db/client.js';
import { estimateTokens } from '../src/generations/budget.js';
import { CancelGenerationDocument, ConversationDocument, ProjectDocument } from './gql/graphql.js';
import { createTestDatabase, databaseKind, type TestDatabase } from './support/db.js';
import { createProject, expectTypename, signUp } from './support/fixtures.js';
import {
  fakeFlutter,
  type FakeFlutterMode,
  firstChunks,
  GenerationWatch,
  getGeneration,
  isAlive,
  logLineMatching,
  queuedOnApiInstance,
  rawId,
  retryOf,
  startAccepted,
  startInstance,
  startOwnWorker,
  tempDir,
  waitForEnd,
} from './support/generation-helpers.js';
import { waitUntil } from './support/cluster.js';
import type { GraphQLClient } from './support/server.js';
import { startSuiteServer } from './support/suite-server.js';

// Cancelling: a queued generation ends at once, a running one stops within about a
// second whatever it is doing (streaming the model, running a build), from any instance.

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/** Sends cancelGeneration and waits until the generation is seen CANCELLED. */
async function cancelAndWait(client: GraphQLClient, watch: GenerationWatch) {
  const { cancelGeneration } = await client.expectNoErrors(CancelGenerationDocument, { id: watch.id });
  // Running: the mutation records the request and returns; the run stops right after.
  expect(['RUNNING', 'CANCELLED']).toContain(expectTypename(cancelGeneration, 'Generation').status);
  expect(await watch.finished(10_000)).toMatchObject({ status: 'CANCELLED', phase: 'DONE', error: null });
}

describe(`cancelling a running generation (${databaseKind})`, () => {
  async function serverWith(env: Record<string, string>, flutterMode?: FakeFlutterMode) {
    const suite = await startSuiteServer(env, flutterMode);
    cleanups.push(() => suite.stop());
    return suite;
  }

  it('stops the model stream mid-way, keeping what streamed so far', async () => {
    const { server, owner } = await serverWith({ OFFLINE_CHUNK_DELAY_MS: '200' });
    const project = await createProject(owner.client, { target: 'FLUTTER' });

    const started = await startAccepted(owner.client, { projectId: project.id, prompt: 'A slow poem app' });
    const watch = new GenerationWatch(server.url, owner.accessToken, started.id);
    cleanups.push(() => watch.close());
    await watch.until((g) => g.phase === 'GENERATING');
    const seen = await firstChunks(server.url, owner.accessToken, started.id, 2);

    await cancelAndWait(owner.client, watch);

    const generation = await getGeneration(owner.client, started.id);
    // The stream stopped part-way: the file never completed, nothing was written or built.
    expect(generation.output.startsWith(seen.map((c) => c.text).join(''))).toBe(true);
    expect(generation.output).not.toContain('</file>');
    expect(generation.files).toEqual([]);
    expect(generation.buildSteps).toEqual([]);
    expect(generation.finishedAt).toBeTruthy();
    // The model was asked and answered part-way: that counts against the project's month.
    expect(generation.usage.inputTokens).toBeGreaterThan(0);
    expect(generation.usage.outputTokens).toBe(estimateTokens(generation.output.length));
    const { project: after } = await owner.client.expectNoErrors(ProjectDocument, { id: project.id });
    expect(after!.usage).toMatchObject(generation.usage);
  });

  it('counts what a run spent when its generation was ended elsewhere meanwhile (a lease recovery), and puts its answer in the conversation', async () => {
    // Slow enough that the run still streams when the test ends it below (the heartbeat notices within a second).
    const { server, owner } = await serverWith({ OFFLINE_CHUNK_DELAY_MS: '200' });
    const project = await createProject(owner.client, { target: 'FLUTTER' });
    const started = await startAccepted(owner.client, { projectId: project.id, prompt: 'A slow poem app' });
    await firstChunks(server.url, owner.accessToken, started.id, 2);
    // What lease recovery does to a run it takes for dead; this one is alive and goes on until it notices.
    const ended = await server.database.db.execute(
      sql`update generations set status = 'FAILED', phase = 'DONE', error_code = 'INTERRUPTED', error_message = 'ended elsewhere', finished_at = now(), lease_expires_at = null
          where id = ${rawId(started.id)} and status = 'RUNNING' returning id`,
    );
    expect(rowsOf(ended)).toHaveLength(1);
    await waitUntil(async () => (await getGeneration(owner.client, started.id)).usage.outputTokens > 0, 30_000, () => "the run's usage never reached its generation");

    const generation = await getGeneration(owner.client, started.id);
    expect(generation).toMatchObject({ status: 'FAILED', error: { code: 'INTERRUPTED', message: 'ended elsewhere' } });
    expect(generation.usage.inputTokens).toBeGreaterThan(0);
    // Recorded with the usage: the answer so far, under its prompt, as Generation.output has it.
    expect(generation.output).not.toBe('');
    const { project: talk } = await owner.client.expectNoErrors(ConversationDocument, { projectId: project.id, sessionId: started.sessionId });
    expect(talk?.conversation.map((message) => [message.role, message.content, message.generation?.id])).toEqual([
      ['USER', 'A slow poem app', started.id],
      ['MODEL', generation.output, started.id],
    ]);
  });

  it('kills the build tool and the process it started, and ends CANCELLED', async () => {
    const { server, owner, flutter } = await serverWith({}, 'hang');
    const project = await createProject(owner.client, { target: 'FLUTTER' });

    const started = await startAccepted(owner.client, { projectId: project.id, prompt: 'A build that never ends' });
    const watch = new GenerationWatch(server.url, owner.accessToken, started.id);
    cleanups.push(() => watch.close());
    await watch.until((g) => g.phase === 'BUILDING');
    // The fake writes its grandchild's pid before this line.
    await logLineMatching(server.url, owner.accessToken, started.id, (line) => line.text.startsWith('Waiting for another flutter command'));
    const grandchild = Number(await readFile(flutter.pidFile, 'utf8'));
    expect(isAlive(grandchild)).toBe(true);
    cleanups.push(async () => {
      if (isAlive(grandchild)) process.kill(grandchild, 'SIGKILL');
    });

    await cancelAndWait(owner.client, watch);
    expect(isAlive(grandchild)).toBe(false);

    const generation = await getGeneration(owner.client, started.id);
    expect(generation.buildSteps.map((s) => [s.name, s.status])).toEqual([
      ['install', 'CANCELLED'],
      ['analyze', 'CANCELLED'],
      ['build', 'CANCELLED'],
    ]);
    expect(generation.buildLog.map((l) => l.text)).toContain('Waiting for another flutter command to release the startup lock...');
  });
});

describe(`cancelling across instances: ROLE=api and ROLE=worker on one database (${databaseKind})`, () => {
  async function twoInstances(workerEnv: Record<string, string>) {
    const database: TestDatabase = await createTestDatabase();
    cleanups.push(() => database.close());
    const data = await tempDir('instances');
    cleanups.push(() => data.remove());
    const flutter = await fakeFlutter('ok');
    cleanups.push(() => flutter.remove());
    const api = await startInstance(database, { ROLE: 'api', DATA_DIR: data.path });
    cleanups.push(() => api.stop());
    const startWorker = async () => {
      const worker = await startInstance(database, {
        ROLE: 'worker',
        DATA_DIR: data.path,
        FLUTTER_BIN: flutter.bin,
        // The lease sets how often the worker looks at the table and heartbeats.
        GENERATION_LEASE_SECONDS: '2',
        ...workerEnv,
      });
      cleanups.push(() => worker.stop());
      return worker;
    };
    return { api, startWorker };
  }

  it('never runs a generation cancelled while queued; a worker started later runs the others', async () => {
    const { api, startWorker } = await twoInstances({});
    const owner = await signUp(api);
    const project = await createProject(owner.client, { target: 'FLUTTER' });
    const cancelled = await startAccepted(owner.client, { projectId: project.id, prompt: 'Cancelled before it ran' });
    const kept = await startAccepted(owner.client, { projectId: project.id, prompt: 'Run me' });
    const { cancelGeneration } = await owner.client.expectNoErrors(CancelGenerationDocument, { id: cancelled.id });
    expect(expectTypename(cancelGeneration, 'Generation').status).toBe('CANCELLED');

    const worker = await startWorker();
    const done = await waitForEnd(worker, owner.client, owner.accessToken, kept.id);
    expect(done.status).toBe('SUCCEEDED');
    const untouched = await getGeneration(owner.client, cancelled.id);
    expect(untouched).toMatchObject({ status: 'CANCELLED', startedAt: null, output: '', files: [] });
  });

  it('stops a generation running on the worker instance when the API instance cancels it', async () => {
    const { api, startWorker } = await twoInstances({ OFFLINE_CHUNK_DELAY_MS: '200' });
    const worker = await startWorker();
    const owner = await signUp(api);
    const project = await createProject(owner.client, { target: 'FLUTTER' });
    const started = await startAccepted(owner.client, { projectId: project.id, prompt: 'Cancelled from elsewhere' });

    // Followed on the worker instance, cancelled on the API instance.
    const watch = new GenerationWatch(worker.url, owner.accessToken, started.id);
    cleanups.push(() => watch.close());
    await watch.until((g) => g.phase === 'GENERATING');
    await firstChunks(worker.url, owner.accessToken, started.id, 2);

    await cancelAndWait(owner.client, watch);
    expect((await getGeneration(owner.client, started.id)).output).not.toContain('</file>');
  });
});

describe(`a stopping worker hands its run back (${databaseKind})`, () => {
  /**
   * An API instance and worker instances on one database; a statement matching
   * `failNext` fails once. Each instance has its own event bus here, so a run is
   * followed on the worker that runs it.
   */
  async function handingBack() {
    const faults: { failNext?: RegExp } = {};
    const database = await createTestDatabase({
      onQuery: (query) => {
        if (faults.failNext?.test(query)) {
          faults.failNext = undefined;
          throw new Error('the statement could not be written (injected by the test)');
        }
      },
    });
    cleanups.push(() => database.close());
    const data = await tempDir('hand-back');
    cleanups.push(() => data.remove());
    const api = await startInstance(database, { ROLE: 'api', DATA_DIR: data.path });
    cleanups.push(() => api.stop());
    const worker = async (mode: FakeFlutterMode) => {
      const flutter = await fakeFlutter(mode);
      cleanups.push(() => flutter.remove());
      const started = await startInstance(database, { ROLE: 'worker', DATA_DIR: data.path, FLUTTER_BIN: flutter.bin, GENERATION_LEASE_SECONDS: '2' });
      cleanups.push(() => started.stop());
      return started;
    };
    const owner = await signUp(api);
    const project = await createProject(owner.client, { target: 'FLUTTER' });
    /** A generation on a worker whose build never ends, once it is building. */
    const building = async () => {
      const stopping = await worker('hang');
      const started = await startAccepted(owner.client, { projectId: project.id, prompt: 'Handed back mid-build' });
      const watch = new GenerationWatch(stopping.url, owner.accessToken, started.id);
      await watch.until((g) => g.phase === 'BUILDING');
      await watch.close();
      return { stopping, started };
    };
    return { faults, worker, owner, project, building };
  }

  it('with its retry in the same commit: when nothing after the ending goes through, the run is still retried, its answer kept', async () => {
    const { faults, worker, owner, project, building } = await handingBack();
    const { stopping, started } = await building();

    // The worker stops with no grace: the run ends INTERRUPTED, and writing its retry fails.
    faults.failNext = /insert into "generations"/i;
    await stopping.stop();
    expect(faults.failNext).toBeUndefined();

    // The ending and its retry are one commit: neither stayed, so the lease lapses and the
    // next worker ends the run and queues the retry itself. Written apart, the run would
    // stay FAILED with no retry.
    const next = await worker('ok');
    const retry = await retryOf(owner.client, project.id, started.id);
    const interrupted = await getGeneration(owner.client, started.id);
    expect(interrupted).toMatchObject({ status: 'FAILED', error: { code: 'INTERRUPTED' }, output: expect.stringContaining('</file>') });
    expect(await waitForEnd(next, owner.client, owner.accessToken, retry.id)).toMatchObject({ status: 'SUCCEEDED', attempt: 2 });
    // The answer the ending would have written, recovery wrote from the chunks: under its prompt, before the retry's.
    const { project: talk } = await owner.client.expectNoErrors(ConversationDocument, { projectId: project.id, sessionId: started.sessionId });
    expect(talk?.conversation.map((message) => [message.role, message.generation?.id])).toEqual([
      ['USER', started.id],
      ['MODEL', started.id],
      ['USER', retry.id],
      ['MODEL', retry.id],
    ]);
    expect(talk?.conversation[1]?.content).toBe(interrupted.output);
  });

  it("lists the run's answer before its retry's prompt in the conversation", async () => {
    const { owner, project, building } = await handingBack();
    const { stopping, started } = await building();
    await stopping.stop();

    const retry = await retryOf(owner.client, project.id, started.id);
    const interrupted = await getGeneration(owner.client, started.id);
    expect(interrupted).toMatchObject({ status: 'FAILED', error: { code: 'INTERRUPTED' }, output: expect.stringContaining('</file>') });
    const { project: talk } = await owner.client.expectNoErrors(ConversationDocument, { projectId: project.id, sessionId: started.sessionId });
    expect(talk?.conversation.map((message) => [message.role, message.generation?.id])).toEqual([
      ['USER', started.id],
      ['MODEL', started.id],
      ['USER', retry.id],
    ]);
  });
});

describe(`a worker stopped while it claims a run (${databaseKind})`, () => {
  it('hands the run back at once instead of running it to the end', async () => {
    const { database, dataDir, owner, project, started } = await queuedOnApiInstance(cleanups, 'Stopped while claimed');

    // A worker of its own, woken for the run and stopped while its claim is under way.
    const flutter = await fakeFlutter('hang');
    cleanups.push(() => flutter.remove());
    const worker = await startOwnWorker(database, { DATA_DIR: dataDir, FLUTTER_BIN: flutter.bin });
    worker.wake(rawId(started.id));
    await worker.stop({ graceMs: 0 });

    // Run to the end, it would still be building (the build never ends) and stop would not have returned.
    expect(await getGeneration(owner.client, started.id)).toMatchObject({ status: 'FAILED', error: { code: 'INTERRUPTED' } });
    expect(await retryOf(owner.client, project.id, started.id)).toMatchObject({ status: 'QUEUED', attempt: 2 });
  });
});

describe(`a cancel while a run stores its outputs (${databaseKind})`, () => {
  it('ends the run CANCELLED, with no preview or archive, though the store went on to its end', async () => {
    const { database, dataDir, owner, started } = await queuedOnApiInstance(cleanups, 'Cancelled while stored');
    const flutter = await fakeFlutter('ok');
    cleanups.push(() => flutter.remove());
    let storing!: () => void;
    const inStore = new Promise<void>((resolve) => (storing = resolve));
    let recorded = false;
    const worker = await startOwnWorker(database, { OFFLINE_CHUNK_DELAY_MS: '0', DATA_DIR: dataDir, FLUTTER_BIN: flutter.bin }, {
      outputs: {
        // Held until the run has taken the cancel, then finished as a store that does not stop early would.
        storeBlobs: async (_generationId, _bundleDir, _sources, signal) => {
          if (!signal) throw new Error('a run hands its signal to the store');
          storing();
          await new Promise((resolve) => signal.addEventListener('abort', resolve, { once: true }));
          return {
            record: async () => {
              recorded = true;
            },
          };
        },
      },
    });
    cleanups.push(() => worker.stop({ graceMs: 0 }));
    worker.wake(rawId(started.id));
    await inStore;

    const { cancelGeneration } = await owner.client.expectNoErrors(CancelGenerationDocument, { id: started.id });
    expect(expectTypename(cancelGeneration, 'Generation').status).toBe('RUNNING');
    // The grace lets the run go to its end.
    await worker.stop({ graceMs: 3_600_000 });

    expect(await getGeneration(owner.client, started.id)).toMatchObject({ status: 'CANCELLED', phase: 'DONE', error: null });
    expect(recorded).toBe(false);
  });
});
