import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { createInterface } from 'node:readline';
import { sql } from 'drizzle-orm';
import { afterEach, describe, expect, it } from 'vitest';
import { openDatabase } from '../src/db/client.js';
import { ConversationDocument, ProjectDocument } from './gql/graphql.js';
import { createTestDatabase, databaseKind } from './support/db.js';
import { createProject, graphqlClient, signUp } from './support/fixtures.js';
import {
  fakeFlutter,
  type FakeFlutter,
  type FakeFlutterMode,
  firstChunks,
  GenerationWatch,
  type Generation,
  getGeneration,
  isAlive,
  logLineMatching,
  rawId,
  repoRoot,
  replayChunks,
  retryOf,
  startAccepted,
  tempDir,
  within,
} from './support/generation-helpers.js';
import { waitUntil } from './support/cluster.js';
import { type GraphQLClient, unsandboxedBuilds } from './support/server.js';

// Kiln as a real process (scripts/start.mjs, what `npm start` runs: the bundled server,
// built first when a source is newer), killed with SIGKILL while a generation streams,
// then started again on the same database: the generation ends FAILED/INTERRUPTED
// instead of staying RUNNING, its retry runs to SUCCEEDED, and what streamed before the
// kill is still there. A build at the first launch (after a source changed) takes up to
// ~15 s, and beside the other suites a PGlite start-up has taken 40 s, so the bounds
// leave room for a busy runner.

interface KilnProcess {
  url: string;
  /** From spawn to listening. */
  startupMs: number;
  client(token?: string): GraphQLClient;
  /** SIGKILL to the whole process group (Kiln and any build it runs). */
  kill(): Promise<void>;
  /** SIGTERM, as an operator stops it; resolves with the exit code. */
  stop(): Promise<number | null>;
  /** Resolves with the first line of its output, past or to come, that matches `pattern`. */
  line(pattern: RegExp, timeoutMs: number): Promise<string>;
  /** Its output so far, a line each (stderr in chunks). */
  readonly output: readonly string[];
}

const running = new Set<ChildProcess>();
const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const child of running) killGroup(child);
  running.clear();
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

function killGroup(child: ChildProcess) {
  try {
    process.kill(-child.pid!, 'SIGKILL');
  } catch {
    // already gone
  }
}

async function launch(env: Record<string, string>): Promise<KilnProcess> {
  const child = spawn(process.execPath, ['scripts/start.mjs'], {
    cwd: repoRoot,
    // Its own process group, so a kill reaches a build it may have started too.
    detached: true,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: {
      PATH: process.env.PATH,
      HOME: process.env.HOME,
      TMPDIR: process.env.TMPDIR,
      HOST: '127.0.0.1',
      PORT: '0',
      LOG_LEVEL: 'info',
      ...env,
    },
  });
  running.add(child);
  const exited = once(child, 'exit') as Promise<[number | null, NodeJS.Signals | null]>;
  const output: string[] = [];
  child.stderr!.setEncoding('utf8').on('data', (text: string) => output.push(text));
  const lines = createInterface({ input: child.stdout! });
  const listening = new Promise<string>((resolve, reject) => {
    lines.on('line', (line) => {
      output.push(line);
      const url = /Kiln is listening on (\S+)\/graphql/.exec(line)?.[1];
      if (url) resolve(url);
    });
    void exited.then(([code, signal]) => reject(new Error(`Kiln exited (${code ?? signal}) before listening:\n${output.join('\n')}`)));
  });
  const launchedAt = performance.now();
  const url = await within(listening, 90_000, () => `Kiln did not start listening:\n${output.join('\n')}`);
  const startupMs = Math.round(performance.now() - launchedAt);
  return {
    url,
    startupMs,
    client: (token) => graphqlClient(url, token),
    kill: async () => {
      killGroup(child);
      await exited;
      running.delete(child);
    },
    stop: async () => {
      process.kill(child.pid!, 'SIGTERM');
      const [code] = await within(exited, 15_000, () => `Kiln did not stop on SIGTERM:\n${output.slice(-20).join('\n')}`);
      running.delete(child);
      return code;
    },
    line: (pattern, timeoutMs) => {
      const seen = output.find((line) => pattern.test(line));
      if (seen !== undefined) return Promise.resolve(seen);
      const coming = new Promise<string>((resolve) => {
        const onLine = (line: string) => {
          if (pattern.test(line)) (lines.off('line', onLine), resolve(line));
        };
        lines.on('line', onLine);
      });
      return within(coming, timeoutMs, () => `no line of Kiln's output matched ${pattern}:\n${output.slice(-20).join('\n')}`);
    },
    output,
  };
}

/** At cleanup, SIGKILL the process group of `pid` (a build's: its shell ignores SIGTERM), if it is still there. */
function killGroupOfAtCleanup(pid: number) {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const group = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[2]);
  cleanups.push(async () => {
    if (isAlive(pid)) process.kill(-group, 'SIGKILL');
  });
}

/** The environment of a Kiln that is killed and started again: its own DATA_DIR, or its own PostgreSQL database. */
async function restartEnv(flutterMode: FakeFlutterMode = 'ok'): Promise<{ env: Record<string, string>; flutter: FakeFlutter }> {
  const data = await tempDir('restart');
  cleanups.push(() => data.remove());
  const flutter = await fakeFlutter(flutterMode);
  cleanups.push(() => flutter.remove());
  const env: Record<string, string> = {
    DATA_DIR: data.path,
    FLUTTER_BIN: flutter.bin,
    OFFLINE_CHUNK_DELAY_MS: '100',
    // The fake flutter's wrapper runs a script outside its own folder, which the sandbox hides.
    ...unsandboxedBuilds,
    // Embedded, the restarted process ends what the crash left RUNNING at once: the lease plays no part.
    GENERATION_LEASE_SECONDS: databaseKind === 'pglite' ? '600' : '2',
  };
  if (databaseKind === 'postgres') {
    // Two processes could share it; here they run one after the other like a restart.
    const database = await createTestDatabase();
    cleanups.push(() => database.close());
    env.DATABASE_URL = database.url!;
  }
  return { env, flutter };
}

describe(`a Kiln process killed mid-generation and started again (${databaseKind})`, () => {
  it('ends the interrupted generation as FAILED/INTERRUPTED, retries it once to success, and keeps its chunks', { timeout: 150_000 }, async () => {
    const { env } = await restartEnv();
    const began = performance.now();

    // ---- first life: start a generation and kill the process while it streams
    const first = await launch(env);
    const owner = await signUp(first);
    const project = await createProject(owner.client, { target: 'FLUTTER' });
    const prompt = 'A packing list for a weekend trip';
    const started = await startAccepted(owner.client, { projectId: project.id, prompt });
    await firstChunks(first.url, owner.accessToken, started.id, 3);
    // What it has spent so far, as its heartbeat records it (about every second).
    let before = await getGeneration(owner.client, started.id);
    await waitUntil(async () => (before = await getGeneration(owner.client, started.id)).usage.outputTokens > 0, 20_000, () => 'no spend was recorded as it streamed');
    expect(before).toMatchObject({ status: 'RUNNING', phase: 'GENERATING' });
    expect(before.output.length).toBeGreaterThan(0);
    expect(before.usage.inputTokens).toBeGreaterThan(0);
    await first.kill();

    // ---- second life: the same token works, the stuck generation is ended and retried
    // Faster model this time, so the retry does not take long.
    const second = await launch({ ...env, OFFLINE_CHUNK_DELAY_MS: '10' });
    const client = second.client(owner.accessToken);
    const watch = new GenerationWatch(second.url, owner.accessToken, started.id);
    cleanups.push(() => watch.close());
    const ended = await watch.finished(20_000);
    expect(ended).toMatchObject({ status: 'FAILED', phase: 'DONE', error: { code: 'INTERRUPTED' } });
    expect(watch.states.map((s) => s.status)).not.toContain('SUCCEEDED');

    const retry = await retryOf(client, project.id, started.id);
    expect(retry).toMatchObject({ attempt: 2, prompt, sessionId: started.sessionId, retryOf: { id: started.id } });
    const retryWatch = new GenerationWatch(second.url, owner.accessToken, retry.id);
    cleanups.push(() => retryWatch.close());
    expect(await retryWatch.finished(30_000)).toMatchObject({ status: 'SUCCEEDED' });
    const succeeded = await getGeneration(client, retry.id);
    expect(succeeded.files.map((f) => f.path)).toContain('lib/main.dart');

    // What streamed before the kill is intact: contiguous seqs from 0, the same text.
    const interrupted = await getGeneration(client, started.id);
    const chunks = await replayChunks(second.url, owner.accessToken, started.id);
    expect(chunks.map((c) => c.seq)).toEqual(chunks.map((_, i) => i));
    expect(interrupted.output).toBe(chunks.map((c) => c.text).join(''));
    expect(interrupted.output.startsWith(before.output)).toBe(true);
    expect(interrupted.output).not.toContain('</file>');
    expect(interrupted.error?.message).toMatch(/worker .*stopped/);
    // The model was paid for what it streamed: the spend last recorded is charged, not nothing.
    expect(interrupted.usage.inputTokens).toBe(before.usage.inputTokens);
    expect(interrupted.usage.outputTokens).toBeGreaterThanOrEqual(before.usage.outputTokens);

    // Exactly one retry, and the session's conversation ends with the retry's answer.
    const { project: listed } = await client.expectNoErrors(ProjectDocument, { id: project.id });
    expect(listed?.generations.edges.map((e) => e.node.id).sort()).toEqual([started.id, retry.id].sort());
    const { project: talk } = await client.expectNoErrors(ConversationDocument, { projectId: project.id, sessionId: started.sessionId });
    expect(talk?.conversation.at(-1)).toMatchObject({ role: 'MODEL', content: succeeded.output, generation: { id: retry.id } });

    // An operator's SIGTERM stops it cleanly.
    expect(await second.stop()).toBe(0);
    console.info(`[restart figures ${databaseKind}] kill, restart, interruption and retry took ${Math.round(performance.now() - began)} ms in all (process start-ups ${first.startupMs} ms and ${second.startupMs} ms)`);
  });

  it('closes the build steps a killed run left RUNNING and PENDING when it ends the run', { timeout: 150_000 }, async () => {
    const { env, flutter } = await restartEnv('hang');
    const first = await launch(env);
    const owner = await signUp(first);
    const project = await createProject(owner.client, { target: 'FLUTTER' });
    const started = await startAccepted(owner.client, { projectId: project.id, prompt: 'A build that never ends' });
    await logLineMatching(first.url, owner.accessToken, started.id, (line) => line.text.startsWith('Waiting for another flutter command'));
    killGroupOfAtCleanup(Number(await readFile(flutter.pidFile, 'utf8'))); // the hanging build outlives the kill
    const building = await getGeneration(owner.client, started.id);
    expect(building.buildSteps.map((step) => step.status)).toEqual(['RUNNING', 'PENDING', 'PENDING']);
    await first.kill();

    // Its retry hangs in the build too: no grace for it at the end.
    const second = await launch({ ...env, WORKER_SHUTDOWN_GRACE_SECONDS: '0' });
    const watch = new GenerationWatch(second.url, owner.accessToken, started.id);
    cleanups.push(() => watch.close());
    expect(await watch.finished(20_000)).toMatchObject({ status: 'FAILED', error: { code: 'INTERRUPTED' } });
    // The same steps, none of them left looking as if it still ran or were still to run.
    const ended = await getGeneration(second.client(owner.accessToken), started.id);
    expect(ended.buildSteps.map((step) => [step.name, step.status])).toEqual(building.buildSteps.map((step, i) => [step.name, i === 0 ? 'CANCELLED' : 'SKIPPED']));
    expect(await second.stop()).toBe(0);
  });

  it('ends a generation whose stop was asked for (a cancel, an archive) as CANCELLED when its worker died first, and does not retry it', { timeout: 150_000 }, async () => {
    const { env } = await restartEnv();
    const first = await launch(env);
    const owner = await signUp(first);
    const project = await createProject(owner.client, { target: 'FLUTTER' });
    const started = await startAccepted(owner.client, { projectId: project.id, prompt: 'A stopwatch' });
    await firstChunks(first.url, owner.accessToken, started.id, 3);
    await first.kill();
    // The stop was asked for on another instance, and this worker never heard of it.
    const database = await openDatabase(env.DATABASE_URL ? { url: env.DATABASE_URL } : { dataDir: env.DATA_DIR });
    await database.db.execute(sql`update generations set cancel_requested_at = now() where id = ${rawId(started.id)}`);
    await database.close();

    const second = await launch(env);
    const watch = new GenerationWatch(second.url, owner.accessToken, started.id);
    cleanups.push(() => watch.close());
    expect(await watch.finished(20_000)).toMatchObject({ status: 'CANCELLED', phase: 'DONE', error: null });
    // A retry would have been queued in the same transaction.
    const { project: listed } = await second.client(owner.accessToken).expectNoErrors(ProjectDocument, { id: project.id });
    expect(listed?.generations.edges.map((e) => e.node.id)).toEqual([started.id]);
    expect(await second.stop()).toBe(0);
  });
});

describe(`Kiln as \`npm start\` runs it (the bundle), with OTEL_TRACES_EXPORTER=console (${databaseKind})`, () => {
  it("exports the pipeline's spans, not only the GraphQL operations': the run, the model call and each build step", { timeout: 150_000 }, async () => {
    const { env } = await restartEnv();
    const kiln = await launch({ ...env, OTEL_TRACES_EXPORTER: 'console', OFFLINE_CHUNK_DELAY_MS: '0' });
    const owner = await signUp(kiln);
    const project = await createProject(owner.client, { target: 'FLUTTER' });
    const started = await startAccepted(owner.client, { projectId: project.id, prompt: 'A tip calculator' });
    const watch = new GenerationWatch(kiln.url, owner.accessToken, started.id);
    cleanups.push(() => watch.close());
    expect(await watch.finished(60_000)).toMatchObject({ status: 'SUCCEEDED' });
    // The console exporter writes each span as it ends (console.dir: one `name: '…',` line a span); the run's ends last.
    await kiln.line(/^\s*name: 'generation run',$/, 20_000);
    const spans = kiln.output.flatMap((line) => /^\s*name: '([^']+)',$/.exec(line)?.[1] ?? []);
    expect(spans).toEqual(expect.arrayContaining(['generation run', 'llm stream', expect.stringMatching(/^build step /), expect.stringMatching(/^mutation/)]));
    expect(await kiln.stop()).toBe(0);
  });
});
