import { once } from 'node:events';
import { connect, createServer, type Socket } from 'node:net';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { openDatabase } from '../src/db/client.js';
import { GenerationChunksDocument, ProjectDocument, type ProjectQuery } from './gql/graphql.js';
import { ready, waitUntil } from './support/cluster.js';
import { createTestDatabase, testDatabaseUrl, type TestDatabase } from './support/db.js';
import { createProject, signIn, signUp, type TestUser } from './support/fixtures.js';
import {
  type FakeFlutter,
  fakeFlutter,
  type Generation,
  GenerationWatch,
  getGeneration,
  startAccepted,
  subscribe,
  waitForEnd,
  wsClient,
} from './support/generation-helpers.js';
import { type CapturedServer, startCapturedServer } from './support/log-capture.js';
import type { GraphQLResponse } from './support/server.js';

// A database outage in the middle of a run (a managed-Postgres failover, a restart):
// a TCP proxy between Kiln and PostgreSQL drops every connection and refuses new ones
// until the test lets them through again. The run waits for the database and succeeds;
// a subscriber gets every chunk once and in order; clients arriving during the outage
// (a socket, a query) wait for it too; /ready says 503 meanwhile. An
// outage longer than the lease hands the run back: FAILED/INTERRUPTED, and its retry.
//
// PostgreSQL only: PGlite runs inside the process, so there is no connection to lose.

/** A TCP proxy on 127.0.0.1 that can drop every connection and refuse new ones, as a failover does. */
async function startOutageProxy(target: { host: string; port: number }) {
  const open = new Set<Socket>();
  let down = false;
  let refused = 0;
  const server = createServer((client) => {
    if (down) {
      refused++;
      return client.resetAndDestroy();
    }
    const upstream = connect(target.port, target.host);
    const close = () => {
      client.destroy();
      upstream.destroy();
      open.delete(client);
      open.delete(upstream);
    };
    for (const socket of [client, upstream]) {
      open.add(socket);
      socket.on('error', close).on('close', close);
    }
    client.pipe(upstream).pipe(client);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as { port: number };
  return {
    port,
    /** Connections refused since the outage began. */
    get refused() {
      return refused;
    },
    /** Resets every open connection and refuses new ones until `end()`. */
    begin() {
      down = true;
      refused = 0;
      for (const socket of open) socket.resetAndDestroy();
      open.clear();
    },
    end() {
      down = false;
    },
    close: async () => {
      for (const socket of open) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

type OutageProxy = Awaited<ReturnType<typeof startOutageProxy>>;

describe.skipIf(!testDatabaseUrl)('database outages (postgres only: PGlite runs in-process, with no connection to lose)', () => {
  let database: TestDatabase;
  let proxy: OutageProxy;
  let proxyUrl: string;
  let flutter: FakeFlutter;
  const cleanups: (() => Promise<void>)[] = [];

  beforeAll(async () => {
    database = await createTestDatabase();
    const direct = new URL(database.url!);
    proxy = await startOutageProxy({ host: direct.hostname, port: Number(direct.port || 5432) });
    const proxied = new URL(direct);
    proxied.host = `127.0.0.1:${proxy.port}`;
    proxyUrl = proxied.toString();
    flutter = await fakeFlutter('ok');
  });

  afterEach(async () => {
    proxy.end();
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });

  afterAll(async () => {
    await proxy?.close();
    await database?.close();
    await flutter?.remove();
  });

  /** Kiln whose every database connection (pool, LISTEN/NOTIFY, pg-boss) goes through the proxy. */
  async function startBehindProxy(env: Record<string, string>): Promise<CapturedServer> {
    const through = await openDatabase({ url: proxyUrl });
    const server = await startCapturedServer(
      // Chunks come at a model's pace, so the outage lands mid-stream.
      { LOG_LEVEL: 'info', DATABASE_URL: proxyUrl, FLUTTER_BIN: flutter.bin, OFFLINE_CHUNK_DELAY_MS: '20', EVENTS: 'postgres', ...env },
      { ...through, url: proxyUrl },
    );
    cleanups.push(async () => {
      await server.stop();
      await through.close();
    });
    return server;
  }

  const logged = (server: CapturedServer, message: string, where: (record: Record<string, unknown>) => boolean = () => true) =>
    server.logs.records().some((record) => record.msg === message && where(record));

  /** Starts a generation and follows its chunks; `onFirstChunk` runs (once) when the first one arrives. */
  async function startFollowed(
    server: CapturedServer,
    owner: TestUser,
    onFirstChunk: (run: { project: { id: string }; started: { id: string } }) => Promise<void>,
  ) {
    const project = await createProject(owner.client, { target: 'FLUTTER' });
    const started = await startAccepted(owner.client, { projectId: project.id, prompt: 'A reading list for the holidays' });
    const watch = new GenerationWatch(server.url, owner.accessToken, started.id);
    // Subscribed before the outage: a socket that connects during it cannot have its token verified.
    await watch.until(() => true);
    const ws = wsClient(server.url, owner.accessToken);
    cleanups.push(async () => {
      await watch.close();
      await ws.dispose();
    });
    const chunks: { seq: number; text: string }[] = [];
    let outage: Promise<void> | undefined;
    const streamed = (async () => {
      for await (const { generationChunks } of subscribe(ws, GenerationChunksDocument, { id: started.id })) {
        chunks.push(generationChunks);
        if (!outage) {
          outage = onFirstChunk({ project, started });
          outage.catch(() => {}); // awaited below; a failed stream must not leave it unhandled
        }
      }
      await outage;
    })();
    return { project, started, watch, chunks, streamed };
  }

  it('lets a run ride out an outage: it SUCCEEDS, the subscriber gets every chunk once and in order, /ready says 503 meanwhile', { timeout: 120_000 }, async () => {
    const server = await startBehindProxy({ GENERATION_LEASE_SECONDS: '60', QUEUE: 'pgboss' });
    const owner = await signUp(server);
    let readyDuringOutage: number | undefined;
    // Clients that arrive during the outage: a new viewer of the stream from its start, and a query.
    let lateViewer: Promise<{ seq: number; text: string }[]> | undefined;
    let lateQuery: Promise<GraphQLResponse<ProjectQuery>> | undefined;
    let queryAnsweredDuringOutage: boolean | undefined;
    const run = await startFollowed(server, owner, async ({ project, started }) => {
      proxy.begin();
      // Their tokens cannot be verified until the database is back; they are awaited after the run.
      const lateWs = wsClient(server.url, owner.accessToken);
      cleanups.push(async () => lateWs.dispose());
      lateViewer = (async () => {
        const chunks: { seq: number; text: string }[] = [];
        for await (const { generationChunks } of subscribe(lateWs, GenerationChunksDocument, { id: started.id })) chunks.push(generationChunks);
        return chunks;
      })();
      lateViewer.catch(() => {});
      let answered = false;
      lateQuery = owner.client.request(ProjectDocument, { id: project.id });
      lateQuery.then(
        () => (answered = true),
        () => (answered = true),
      );
      readyDuringOutage = (await fetch(`${server.url}/ready`)).status;
      // The pipeline has been waiting for the database through several back-offs, and Kiln keeps knocking.
      await waitUntil(
        () => logged(server, 'the database is unreachable; retrying', (record) => Number(record.attempt) >= 5) && proxy.refused >= 10,
        60_000,
        () => `no retries seen (${proxy.refused} connections refused)`,
      );
      queryAnsweredDuringOutage = answered;
      proxy.end();
      await waitUntil(() => ready(server.url), 30_000, () => '/ready did not come back after the outage');
    });

    const finished = await run.watch.finished(90_000);
    await run.streamed;
    expect(readyDuringOutage).toBe(503);
    expect(finished).toMatchObject({ status: 'SUCCEEDED', phase: 'DONE' });
    const generation = await getGeneration(owner.client, run.started.id);
    // Every chunk once, in order, and together the whole output.
    expect(run.chunks.map((chunk) => chunk.seq)).toEqual(run.chunks.map((_, i) => i));
    expect(run.chunks.map((chunk) => chunk.text).join('')).toBe(generation.output);
    expect(generation.output).toContain('<file path="lib/main.dart">');
    expect(generation.buildSteps.every((step) => step.status === 'SUCCEEDED')).toBe(true);

    // The clients that arrived during the outage waited for the database: the new viewer got
    // every chunk once and in order, the query its project, without errors.
    const late = await lateViewer!;
    expect(late.map((chunk) => chunk.seq)).toEqual(late.map((_, i) => i));
    expect(late.map((chunk) => chunk.text).join('')).toBe(generation.output);
    expect(queryAnsweredDuringOutage).toBe(false);
    const answered = await lateQuery!;
    expect(answered.errors).toBeUndefined();
    expect(answered.data?.project?.id).toBe(run.project.id);
  });

  it('signs in through an outage: its rate-limit count waits for the database as the rest of the request does', { timeout: 120_000 }, async () => {
    const server = await startBehindProxy({});
    const user = await signUp(server);
    proxy.begin();
    const signingIn = signIn(server, user.email);
    let settled = false;
    signingIn.then(
      () => (settled = true),
      () => (settled = true),
    );
    await waitUntil(() => settled || proxy.refused >= 5, 60_000, () => `no connection tried (${proxy.refused} refused)`);
    proxy.end();
    expect((await signingIn).id).toBe(user.id);
  });

  it('hands a run back when the outage outlasts its lease: FAILED/INTERRUPTED, then its retry succeeds', { timeout: 120_000 }, async () => {
    const server = await startBehindProxy({ GENERATION_LEASE_SECONDS: '2', QUEUE: 'pgboss' });
    const owner = await signUp(server);
    const run = await startFollowed(server, owner, async () => {
      proxy.begin();
      await waitUntil(
        () => logged(server, 'the lease lapsed while the database was unreachable; handing the run back'),
        60_000,
        () => 'the run did not notice its lease lapse',
      );
      proxy.end();
    });

    const finished = await run.watch.finished(90_000);
    expect(finished).toMatchObject({ status: 'FAILED', phase: 'DONE', error: { code: 'INTERRUPTED' } });
    await run.streamed;
    const retry = await retryOf(owner, run.project.id, run.started.id);
    expect(retry).toMatchObject({ attempt: 2, retryOf: { id: run.started.id } });
    expect(await waitForEnd(server, owner.client, owner.accessToken, retry.id, 60_000)).toMatchObject({ status: 'SUCCEEDED' });
  });
});

/** The project's generation that retries `id`, once it exists (the worker queues it right after the run ends). */
async function retryOf(owner: TestUser, projectId: string, id: string): Promise<Generation> {
  let retry: Generation | undefined;
  await waitUntil(
    async () => {
      const { project } = await owner.client.expectNoErrors(ProjectDocument, { id: projectId });
      for (const edge of project?.generations.edges ?? []) {
        if (edge.node.id === id) continue;
        const generation = await getGeneration(owner.client, edge.node.id);
        if (generation.retryOf?.id === id) retry = generation;
      }
      return retry !== undefined;
    },
    30_000,
    () => `no retry of ${id} appeared`,
    200,
  );
  return retry!;
}
