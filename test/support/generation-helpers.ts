import { chmod, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { TypedDocumentNode } from '@graphql-typed-document-node/core';
import { decodeGlobalID } from '@pothos/plugin-relay';
import { print } from 'graphql';
import { type Client, createClient } from 'graphql-ws';
import { mapAsyncIterator } from 'graphql-yoga';
import { expect } from 'vitest';
import WebSocket from 'ws';
import { type Environment, parseConfig } from '../../src/config.js';
import { createMemoryEventBus } from '../../src/events/bus.js';
import type { PipelineDeps } from '../../src/generations/pipeline.js';
import { startWorker, type Worker } from '../../src/jobs/worker.js';
import { createLlmProvider } from '../../src/llm/index.js';
import { createLogger, type Logger } from '../../src/observability/logger.js';
import {
  BuildLogsDocument,
  CancelGenerationDocument,
  type BuildLogsSubscription,
  type GenerationFieldsFragment,
  GenerationChunksDocument,
  GenerationDocument,
  type GenerationQuery,
  GenerationUpdatedDocument,
  ProjectDocument,
  StartGenerationDocument,
  type StartGenerationInput,
  type StartGenerationMutation,
} from '../gql/graphql.js';
import { createTestDatabase, type TestDatabase } from './db.js';
import { createProject, signUp } from './fixtures.js';
import { type GraphQLClient, startTestServer, type TestServer, type TestServerOptions, unsandboxedBuilds } from './server.js';

// Helpers of the generation suites: fake build tools, a temporary data directory, and
// waiting for a generation's state through the public `generationUpdated` subscription
// (graphql-ws), so tests wait for the event rather than for time to pass.

export const repoRoot = fileURLToPath(new URL('../..', import.meta.url));
const fakeFlutterScript = fileURLToPath(new URL('../fixtures/bin/flutter', import.meta.url));

export type FakeFlutterMode = 'ok' | 'analyze-fail' | 'human' | 'hang' | 'flood' | 'chatty';

export interface FakeFlutter {
  /** Absolute path of the wrapper: pass it as FLUTTER_BIN. */
  bin: string;
  /** Where the `hang` mode writes its grandchild's pid. */
  pidFile: string;
  remove(): Promise<void>;
}

/**
 * A wrapper around test/fixtures/bin/flutter that fixes the mode itself: the step
 * runner gives build tools an allowlisted environment, so FAKE_* variables set on the
 * server would never reach the fake.
 */
export async function fakeFlutter(mode: FakeFlutterMode): Promise<FakeFlutter> {
  const dir = await mkdtemp(join(tmpdir(), `kiln-flutter-${mode}-`));
  const bin = join(dir, 'flutter');
  const pidFile = join(dir, 'grandchild.pid');
  await writeFile(
    bin,
    `#!/bin/sh\nFAKE_FLUTTER_MODE=${mode} FAKE_FLUTTER_PIDFILE='${pidFile}' exec '${fakeFlutterScript}' "$@"\n`,
  );
  await chmod(bin, 0o755);
  return { bin, pidFile, remove: () => rm(dir, { recursive: true, force: true }) };
}

/** A temporary directory, removed by `remove()`. */
export async function tempDir(label: string): Promise<{ path: string; remove(): Promise<void> }> {
  const path = await mkdtemp(join(tmpdir(), `kiln-${label}-`));
  return { path, remove: () => rm(path, { recursive: true, force: true }) };
}

export interface GenerationServer extends TestServer {
  /** Where its generations' workspaces are: WORKSPACES_DIR, under its DATA_DIR unless `env` says otherwise. */
  workspacesDir: string;
}

/** startTestServer (a DATA_DIR of its own, removed on stop), saying where the workspaces are. */
export async function startGenerationServer(env: Environment = {}, options: TestServerOptions = {}): Promise<GenerationServer> {
  const server = await startTestServer(env, options);
  return { ...server, workspacesDir: env.WORKSPACES_DIR ?? join(server.dataDir, 'workspaces') };
}

export interface Instance {
  url: string;
  client(token?: string): GraphQLClient;
  stop(): Promise<void>;
}

/**
 * One more Kiln instance on an existing database (e.g. ROLE=api and ROLE=worker side by
 * side): a DATA_DIR of its own unless `env` shares one.
 */
export async function startInstance(database: TestDatabase, env: Environment = {}): Promise<Instance> {
  return startTestServer(env, { database });
}

/**
 * An API instance (ROLE=api) alone on a fresh database, and a new user's FLUTTER generation
 * queued there for a worker the test starts itself; what it made goes into `cleanups`.
 */
export async function queuedOnApiInstance(cleanups: (() => Promise<void>)[], prompt: string) {
  const database = await createTestDatabase();
  cleanups.push(() => database.close());
  const data = await tempDir('api-instance');
  cleanups.push(() => data.remove());
  const api = await startInstance(database, { ROLE: 'api', DATA_DIR: data.path });
  cleanups.push(() => api.stop());
  const owner = await signUp(api);
  const project = await createProject(owner.client, { target: 'FLUTTER' });
  const started = await startAccepted(owner.client, { projectId: project.id, prompt });
  return { database, dataDir: data.path, owner, project, started };
}

/**
 * A worker alone on `database` (no server around it), woken by the test with `wake(id)`: for
 * runs the test steers from inside, through the pipeline's `logger`, `toolchain` or `outputs`.
 */
export async function startOwnWorker(
  database: TestDatabase,
  env: Environment,
  pipeline: { logger?: Logger; toolchain?: Partial<PipelineDeps['toolchain']>; outputs?: PipelineDeps['outputs'] } = {},
): Promise<Worker> {
  const config = parseConfig({ LOG_LEVEL: 'silent', ...unsandboxedBuilds, ...env });
  const llm = await createLlmProvider(config.llm);
  return startWorker({
    provider: llm,
    concurrency: 1,
    pipeline: {
      db: database.db,
      bus: createMemoryEventBus(),
      llm,
      logger: pipeline.logger ?? createLogger('silent'),
      workspaces: config.workspaces,
      toolchain: { ...config.toolchain, ...pipeline.toolchain },
      leaseMs: config.generations.leaseMs,
      budgetReservationTokens: 0,
      ...(pipeline.outputs && { outputs: pipeline.outputs }),
    },
  });
}

// ------------------------------------------------------------------ operations

export type Generation = NonNullable<GenerationQuery['generation']>;
type StartResult = StartGenerationMutation['startGeneration'];

export async function startGeneration(client: GraphQLClient, input: StartGenerationInput): Promise<StartResult> {
  return (await client.expectNoErrors(StartGenerationDocument, { input })).startGeneration;
}

/** Starts a generation that must be accepted; returns it as the mutation answered. */
export async function startAccepted(client: GraphQLClient, input: StartGenerationInput): Promise<GenerationFieldsFragment> {
  const result = await startGeneration(client, input);
  expect(result, JSON.stringify(result)).toMatchObject({ __typename: 'Generation' });
  return result as Extract<StartResult, { __typename: 'Generation' }>;
}

/** Starts a generation of `prompt`, that must be accepted, in a new FLUTTER project of `user`'s. */
export async function startInNewProject(user: { client: GraphQLClient }, prompt: string): Promise<GenerationFieldsFragment> {
  const project = await createProject(user.client, { target: 'FLUTTER' });
  return startAccepted(user.client, { projectId: project.id, prompt });
}

export async function getGeneration(client: GraphQLClient, id: string): Promise<Generation> {
  const { generation } = await client.expectNoErrors(GenerationDocument, { id });
  if (!generation) throw new Error(`generation ${id} is not visible`);
  return generation;
}

/** The project's generation that retries `id`, once it exists (polled through GraphQL, bounded). */
export async function retryOf(client: GraphQLClient, projectId: string, id: string, timeoutMs = 20_000): Promise<Generation> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const { project } = await client.expectNoErrors(ProjectDocument, { id: projectId });
    for (const edge of project?.generations.edges ?? []) {
      if (edge.node.id === id) continue;
      const generation = await getGeneration(client, edge.node.id);
      if (generation.retryOf?.id === id) return generation;
    }
    if (Date.now() > deadline) throw new Error(`no retry of ${id} appeared within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

/** The raw uuid behind a Relay global id (workspace directories are named by it). */
export function rawId(globalId: string): string {
  return decodeGlobalID(globalId).id;
}

// ------------------------------------------------------------------ subscriptions

const TERMINAL = new Set(['SUCCEEDED', 'FAILED', 'CANCELLED']);
export const isTerminal = (g: { status: string }) => TERMINAL.has(g.status);

/** A graphql-ws client for a server's /graphql; `dispose()` it. */
export function wsClient(httpUrl: string, token: string): Client {
  return createClient({
    url: `${httpUrl.replace(/^http/, 'ws')}/graphql`,
    webSocketImpl: WebSocket,
    connectionParams: { authorization: `Bearer ${token}` },
    retryAttempts: 0,
    lazy: true,
  });
}

/**
 * The data of each event of a subscription; an event with errors throws. Subscribed at once,
 * not at the first `next()`: a state published before the caller first waits is kept for it
 * (generationUpdated's intermediate states are sent once). Its `return()` unsubscribes, taken or not.
 */
export function subscribe<T, V extends Record<string, unknown>>(client: Client, document: TypedDocumentNode<T, V>, variables: V): AsyncIterableIterator<T> {
  return mapAsyncIterator(client.iterate<T>({ query: print(document), variables }), (event) => {
    if (event.errors?.length || !event.data) throw new Error(`subscription errors: ${JSON.stringify(event.errors)}`);
    return event.data;
  });
}

/** Rejects after `ms` with `message()` unless `promise` settles first. */
export async function within<T>(promise: Promise<T>, ms: number, message: () => string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${message()} (after ${ms} ms)`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Follows one generation over `generationUpdated`: `until(predicate)` resolves with the
 * first state (the current one included) that satisfies it. One subscription serves
 * several waits, so nothing between them is missed.
 */
export class GenerationWatch {
  private readonly client: Client;
  private readonly events: AsyncIterableIterator<{ generationUpdated: GenerationFieldsFragment }>;
  /** Every state seen, in order. */
  readonly states: GenerationFieldsFragment[] = [];
  private ended = false;

  constructor(httpUrl: string, token: string, readonly id: string) {
    this.client = wsClient(httpUrl, token);
    this.events = subscribe(this.client, GenerationUpdatedDocument, { id });
  }

  get last(): GenerationFieldsFragment | undefined {
    return this.states.at(-1);
  }

  /**
   * The first state from the last one seen on that satisfies `predicate`. Waits may overlap
   * (one still pending after Promise.any): whichever takes a state from the stream keeps it in
   * `states`, where every wait looks.
   */
  async until(predicate: (g: GenerationFieldsFragment) => boolean, timeoutMs = 30_000): Promise<GenerationFieldsFragment> {
    let from = Math.max(0, this.states.length - 1);
    const next = async () => {
      for (;;) {
        const found = this.states.slice(from).find(predicate);
        if (found) return found;
        from = this.states.length;
        if (this.ended) throw new Error(`the generation's updates ended without the awaited state; seen ${this.describe()}`);
        const step = await this.events.next();
        if (step.done) this.ended = true;
        else this.states.push(step.value.generationUpdated);
      }
    };
    return within(next(), timeoutMs, () => `the awaited state did not come; seen ${this.describe()}`);
  }

  /** Waits for a terminal state. */
  finished(timeoutMs = 30_000): Promise<GenerationFieldsFragment> {
    return this.until(isTerminal, timeoutMs);
  }

  describe(): string {
    return this.states.map((s) => `${s.status}/${s.phase}`).join(' → ') || 'nothing';
  }

  async close(): Promise<void> {
    // The client first: that ends the subscription, so a next() still waiting (a wait that timed
    // out) settles, where return() alone would queue behind it and hang the test until vitest's timeout.
    await this.client.dispose();
    await this.events.return?.();
  }
}

/** A generation started, then cancelled, once it has ended: the next one of its session may start. */
export async function startCancelled(
  server: { url: string },
  owner: { client: GraphQLClient; accessToken: string },
  input: StartGenerationInput,
): Promise<GenerationFieldsFragment> {
  const started = await startAccepted(owner.client, input);
  const { cancelGeneration } = await owner.client.expectNoErrors(CancelGenerationDocument, { id: started.id });
  // A QUEUED one ends at once; a RUNNING one stops within a second.
  if (cancelGeneration.__typename !== 'Generation' || !isTerminal(cancelGeneration)) await waitForEnd(server, owner.client, owner.accessToken, started.id);
  return started;
}

/** Waits until the generation reaches a terminal state and returns all of it. */
export async function waitForEnd(
  server: { url: string },
  client: GraphQLClient,
  token: string,
  id: string,
  timeoutMs = 30_000,
): Promise<Generation> {
  const watch = new GenerationWatch(server.url, token, id);
  try {
    await watch.finished(timeoutMs);
  } finally {
    await watch.close();
  }
  return getGeneration(client, id);
}

/**
 * The items (`pick`) of one subscription's events, until `until` holds for those seen or,
 * without it, until the subscription completes. `ended` and `late` say what went wrong:
 * the subscription ended first, or time ran out.
 */
async function collectUntil<T, V extends Record<string, unknown>, I>(
  httpUrl: string,
  token: string,
  document: TypedDocumentNode<T, V>,
  variables: V,
  pick: (data: T) => I,
  options: { until?: (items: I[]) => boolean; timeoutMs: number; ended?: (items: I[]) => string; late: (items: I[]) => string },
): Promise<I[]> {
  const client = wsClient(httpUrl, token);
  const items: I[] = [];
  try {
    await within(
      (async () => {
        for await (const data of subscribe(client, document, variables)) {
          items.push(pick(data));
          if (options.until?.(items)) return;
        }
        if (options.until) throw new Error(options.ended?.(items) ?? `the subscription ended after ${items.length} items`);
      })(),
      options.timeoutMs,
      () => options.late(items),
    );
  } finally {
    await client.dispose();
  }
  return items;
}

/** Every chunk of a generation: the subscription replays them and completes when the output is over. */
export async function replayChunks(httpUrl: string, token: string, id: string, afterSeq?: number, timeoutMs = 30_000) {
  return collectUntil(httpUrl, token, GenerationChunksDocument, { id, afterSeq }, (data) => data.generationChunks, {
    timeoutMs,
    late: (chunks) => `generationChunks did not complete; got ${chunks.length} chunks`,
  });
}

/** Resolves with the chunks seen once `count` have streamed in (live or replayed). */
export async function firstChunks(httpUrl: string, token: string, id: string, count: number, timeoutMs = 30_000) {
  return collectUntil(httpUrl, token, GenerationChunksDocument, { id }, (data) => data.generationChunks, {
    until: (chunks) => chunks.length >= count,
    timeoutMs,
    ended: (chunks) => `the output ended after ${chunks.length} chunks`,
    late: (chunks) => `${count} chunks did not arrive; got ${chunks.length}`,
  });
}

/** Resolves with the build-log lines up to the first one `predicate` accepts. */
export async function logLineMatching(
  httpUrl: string,
  token: string,
  id: string,
  predicate: (line: BuildLogsSubscription['buildLogs']) => boolean,
  timeoutMs = 30_000,
) {
  return collectUntil(httpUrl, token, BuildLogsDocument, { id }, (data) => data.buildLogs, {
    until: (lines) => predicate(lines.at(-1)!),
    timeoutMs,
    ended: (lines) => `the build log ended without the awaited line: ${JSON.stringify(lines)}`,
    late: (lines) => `the awaited build-log line did not come; got ${JSON.stringify(lines)}`,
  });
}

// ------------------------------------------------------------------ processes and files

export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Every file under `dir`, as paths relative to it. */
export async function filesUnder(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true }).catch(() => []);
  return entries.filter((e) => e.isFile()).map((e) => join(e.parentPath, e.name).slice(dir.length + 1));
}
