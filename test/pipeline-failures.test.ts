import { AsyncLocalStorage } from 'node:async_hooks';
import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sql } from 'drizzle-orm';
import { afterAll, describe, expect, it } from 'vitest';
import { type Db, rowsOf } from '../src/db/client.js';
import { serviceScope } from '../src/db/scope.js';
import { MAX_ERROR_MESSAGE_CHARS } from '../src/generations/output-parser.js';
import type { PipelineDeps } from '../src/generations/pipeline.js';
import { createLogger } from '../src/observability/logger.js';
import type { BuildSandbox } from '../src/toolchain/sandbox.js';
import { getTarget } from '../src/toolchain/targets.js';
import { ConversationDocument, GeneratedFileDocument } from './gql/graphql.js';
import { waitUntil } from './support/cluster.js';
import { createTestDatabase, databaseKind } from './support/db.js';
import { createProject } from './support/fixtures.js';
import { useGeminiServer } from './support/gemini-server.js';
import {
  type FakeFlutterMode,
  fakeFlutter,
  filesUnder,
  getGeneration,
  rawId,
  queuedOnApiInstance,
  replayChunks,
  startAccepted,
  startOwnWorker,
  waitForEnd,
} from './support/generation-helpers.js';
import { LogCapture } from './support/log-capture.js';
import { startSuiteServer } from './support/suite-server.js';

// How a generation fails, as its owner sees it: the error code and a message a person
// can act on, which build steps ran, and nothing written where it must not be.

describe(`build failures (${databaseKind})`, () => {
  const cleanups: (() => Promise<void>)[] = [];
  afterAll(async () => {
    for (const cleanup of cleanups.reverse()) await cleanup();
  });

  async function serverWith(env: Record<string, string>, flutterMode?: FakeFlutterMode) {
    const suite = await startSuiteServer(env, flutterMode);
    cleanups.push(() => suite.stop());
    const project = await createProject(suite.owner.client, { target: 'FLUTTER' });
    return { ...suite, project };
  }

  it('fails with BUILD_FAILED when analysis finds an error: that step FAILED, the later ones SKIPPED', async () => {
    // Self-healing off: this is the failure as the user sees it when no fix round runs (test/fix-rounds.test.ts has those).
    const { server, owner, project } = await serverWith({ AUTO_FIX_MAX_ROUNDS: '0' }, 'analyze-fail');

    const started = await startAccepted(owner.client, { projectId: project.id, prompt: 'A todo list' });
    const generation = await waitForEnd(server, owner.client, owner.accessToken, started.id);

    expect(generation.status).toBe('FAILED');
    expect(generation.error?.code).toBe('BUILD_FAILED');
    expect(generation.error?.message).toContain('analyze');
    expect(generation.error?.message).toContain("Undefined name 'runAp'");
    expect(generation.buildSteps.map((s) => [s.name, s.status, s.exitCode])).toEqual([
      ['install', 'SUCCEEDED', 0],
      ['analyze', 'FAILED', 1],
      ['build', 'SKIPPED', null],
    ]);
    expect(generation.buildLog.map((l) => l.text)).toContain("  error - lib/main.dart:3:5 - Undefined name 'runAp'. - undefined_identifier");
    // The code was written before the build: the user can read what failed to build.
    expect(generation.files.map((f) => f.path)).toContain('lib/main.dart');
    expect(generation.usage.outputTokens).toBeGreaterThan(0);
  });

  it('fails promptly with TOOLCHAIN_MISSING naming the binary when FLUTTER_BIN does not exist', async () => {
    const missing = join(tmpdir(), `kiln-no-such-dir-${randomUUID()}`, 'flutter');
    const { server, owner, project } = await serverWith({ FLUTTER_BIN: missing });

    const started = await startAccepted(owner.client, { projectId: project.id, prompt: 'A weather app' });
    const generation = await waitForEnd(server, owner.client, owner.accessToken, started.id, 15_000);

    expect(generation).toMatchObject({ status: 'FAILED', error: { code: 'TOOLCHAIN_MISSING' } });
    expect(generation.error?.message).toContain(missing);
    expect(generation.error?.message).toMatch(/FLUTTER_BIN/);
    expect(generation.buildSteps.map((s) => [s.name, s.status])).toEqual([
      ['install', 'FAILED'],
      ['analyze', 'SKIPPED'],
      ['build', 'SKIPPED'],
    ]);
  });
});

describe(`model output through a fake Gemini (${databaseKind})`, () => {
  const suite = useGeminiServer();

  async function run(prompt: string, sessionId?: string) {
    const project = await createProject(suite.owner.client, { target: 'FLUTTER' });
    const started = await startAccepted(suite.owner.client, { projectId: project.id, prompt, sessionId });
    return { project, generation: await waitForEnd(suite.server, suite.owner.client, suite.owner.accessToken, started.id) };
  }

  it('fails with UNSAFE_OUTPUT on a path that climbs out, and writes nothing outside the workspaces', async () => {
    suite.gemini.script({ kind: 'stream', chunks: ['Here you go.\n<file path="../esc', 'ape.txt">x</file>\n'] });
    const { project, generation } = await run('Write a file next to the workspace');

    expect(generation).toMatchObject({ status: 'FAILED', error: { code: 'UNSAFE_OUTPUT' } });
    expect(generation.error?.message).toContain('"../escape.txt"');
    expect(generation.files).toEqual([]);
    expect(generation.buildSteps).toEqual([]);
    // What the model said stays readable, exactly as it streamed.
    expect(generation.output).toBe('Here you go.\n<file path="../escape.txt">x</file>\n');
    // Nothing anywhere under DATA_DIR (which holds WORKSPACES_DIR) but the key file, and no workspace.
    const written = await filesUnder(suite.server.dataDir);
    expect(written.filter((path) => path.includes('escape'))).toEqual([]);
    expect(await filesUnder(join(suite.server.workspacesDir, rawId(project.id)))).toEqual([]);
  });

  it('fails with UNSAFE_OUTPUT on an absolute path, which is never written', async () => {
    const target = join(tmpdir(), `kiln-escape-${randomUUID()}.txt`);
    suite.gemini.script({ kind: 'stream', chunks: [`<file path="${target}">pwned</file>`] });
    const { generation } = await run('Write an absolute path');

    expect(generation).toMatchObject({ status: 'FAILED', error: { code: 'UNSAFE_OUTPUT' } });
    expect(generation.error?.message).toMatch(/absolute/);
    expect(existsSync(target)).toBe(false);
  });

  it('fails with LLM_ERROR and a readable message when Gemini answers 500 every time', async () => {
    suite.gemini.script({ kind: 'error', status: 500, message: 'Internal error encountered.' });
    const before = suite.gemini.requests.length;
    const { generation } = await run('A calculator');

    expect(generation).toMatchObject({ status: 'FAILED', error: { code: 'LLM_ERROR' }, files: [], buildSteps: [] });
    expect(generation.error?.message).toMatch(/^Gemini is unavailable right now \(500: Internal error encountered\.\)/);
    expect(generation.error?.message).toMatch(/Gave up after 3 attempts/);
    expect(generation.error?.message).not.toMatch(/\n\s+at |ApiError|\{"error"/);
    expect(suite.gemini.requests.length - before).toBe(3);
  });

  it('keeps at most MAX_ERROR_MESSAGE_CHARS of an error message, however long what it quotes', async () => {
    // The dependency policy quotes the name it refuses; the model chose a name of 40,000 characters.
    const name = 'a'.repeat(40_000);
    suite.gemini.script({ kind: 'stream', chunks: [`<file path="pubspec.yaml">\nname: app\ndependencies:\n  ? ${name}\n  :\n    git: https://example.com/x.git\n</file>\n`] });
    const { generation } = await run('A long complaint');

    expect(generation).toMatchObject({ status: 'FAILED', error: { code: 'UNSAFE_OUTPUT' } });
    expect(generation.error!.message).toHaveLength(MAX_ERROR_MESSAGE_CHARS);
    expect(generation.error!.message).toMatch(/^Build step "install" did not run: pubspec\.yaml "dependencies" asks for "a+…$/);
  });

  it('fails with LLM_ERROR when Gemini blocks the answer part-way, counting the tokens Gemini says it spent', async () => {
    suite.gemini.script({ kind: 'stream', chunks: ['Here is the app.\n', '<file path="lib/main.dart">'], finishReason: 'SAFETY', usage: { promptTokens: 900, outputTokens: 400 } });
    const { generation } = await run('A blocked answer');

    expect(generation).toMatchObject({ status: 'FAILED', error: { code: 'LLM_ERROR' }, files: [] });
    expect(generation.error?.message).toMatch(/blocked the response \(SAFETY\)/);
    // Gemini's count is more than the estimate of what streamed: the count is recorded.
    expect(generation.usage).toEqual({ inputTokens: 900, outputTokens: 400 });
  });

  it('counts the tokens Gemini spent thinking when every attempt is cut before any answer text', async () => {
    suite.gemini.script({ kind: 'thinkThenDrop', thoughts: ['Planning the layout.', 'Choosing widgets.'], usage: { promptTokens: 700, outputTokens: 300 } });
    const before = suite.gemini.requests.length;
    const { generation } = await run('An app the connection never delivers');

    expect(generation).toMatchObject({ status: 'FAILED', error: { code: 'LLM_ERROR' }, output: '' });
    expect(generation.error?.message).toMatch(/Gave up after 3 attempts/);
    // Each attempt read the prompt and thought before its connection was lost: all of them count.
    const attempts = suite.gemini.requests.length - before;
    expect(attempts).toBe(3);
    expect(generation.usage).toEqual({ inputTokens: attempts * 700, outputTokens: attempts * 300 });
  });

  it('fails with LLM_ERROR when Gemini finishes every answer without any text, counting each attempt', async () => {
    suite.gemini.script({ kind: 'stream', chunks: [], usage: { promptTokens: 500, outputTokens: 0 } });
    const before = suite.gemini.requests.length;
    const { generation } = await run('An answer that never comes');

    // Not SUCCEEDED with the template's files and no reply: nothing was generated.
    expect(generation).toMatchObject({ status: 'FAILED', error: { code: 'LLM_ERROR' }, output: '', files: [], buildSteps: [] });
    expect(generation.error?.message).toBe('The model sent an empty answer. Gave up after 3 attempts.');
    expect(suite.gemini.requests.length - before).toBe(3);
    expect(generation.usage).toEqual({ inputTokens: 3 * 500, outputTokens: 0 });
  });

  it('asks again after an answer without any text, and goes on with the answer that follows', async () => {
    const answer = 'Here it is.\n<file path="lib/main.dart">\nvoid main() {}\n</file>\n';
    suite.gemini.script({ kind: 'stream', chunks: [], usage: { promptTokens: 500, outputTokens: 0 } }, { kind: 'stream', chunks: [answer], usage: { promptTokens: 500, outputTokens: 30 } });
    const before = suite.gemini.requests.length;
    const { generation } = await run('An answer that comes the second time');

    expect(generation).toMatchObject({ status: 'SUCCEEDED', output: answer, usage: { inputTokens: 1000, outputTokens: 30 } });
    expect(suite.gemini.requests.length - before).toBe(2);
  });

  it('fails with LLM_ERROR saying so when Gemini rate-limits every request', async () => {
    suite.gemini.script({ kind: 'error', status: 429, message: 'Resource has been exhausted (e.g. check quota).' });
    const { generation } = await run('A stopwatch');

    expect(generation).toMatchObject({ status: 'FAILED', error: { code: 'LLM_ERROR' } });
    expect(generation.error?.message).toMatch(/^Gemini is rate limiting requests \(429: Resource has been exhausted/);
    expect(generation.error?.message).toMatch(/wait a minute and try again/);
  });

  it('fails with INVALID_OUTPUT when the model leaves a file unterminated, writing nothing', async () => {
    const chunks = ['<file path="lib/main.dart">\nvoid main() {', '\n  runApp('];
    suite.gemini.script({ kind: 'stream', chunks });
    const { generation } = await run('Cut off mid-file');

    expect(generation).toMatchObject({ status: 'FAILED', error: { code: 'INVALID_OUTPUT' }, files: [], buildSteps: [] });
    expect(generation.error?.message).toContain('lib/main.dart');
    // The answer streamed to its end, so Gemini's count of it is what it cost (the fake counts 11 and a token a character).
    expect(generation.usage).toEqual({ inputTokens: 11, outputTokens: chunks.join('').length });
  });

  it('fails with INVALID_OUTPUT when the answer holds a NUL character, which no text column takes, keeping what came before', async () => {
    const chunks = ['Here you go.\n', '<file path="lib/main.dart">void main() {}\u0000\n</file>\n'];
    suite.gemini.script({ kind: 'stream', chunks });
    const { generation } = await run('A NUL in the answer');

    expect(generation).toMatchObject({ status: 'FAILED', error: { code: 'INVALID_OUTPUT' }, files: [], buildSteps: [] });
    expect(generation.error?.message).toMatch(/NUL/);
    expect(generation.output).toBe('Here you go.\n<file path="lib/main.dart">void main() {}');
    // The model spent tokens all the same: Gemini's count of its whole answer, past the NUL too (the fake counts a token a character).
    expect(generation.usage.inputTokens).toBeGreaterThan(0);
    expect(generation.usage.outputTokens).toBe(chunks.join('').length);
  });

  it('fails with INVALID_OUTPUT saying so when the answer goes on and on, instead of holding all of it', async () => {
    // A model that never stops (a local server with no output limit): 21 MiB of prose, past the 20 MiB a generation may hold.
    const MiB = 1024 * 1024;
    suite.gemini.script({ kind: 'stream', chunks: Array.from({ length: 21 }, () => `${'I will now write the app. '.repeat(MiB / 26)}\n`) });
    const { generation } = await run('Never stops');

    expect(generation).toMatchObject({ status: 'FAILED', error: { code: 'INVALID_OUTPUT' }, files: [], buildSteps: [] });
    expect(generation.error?.message).toMatch(/^The model's answer was too long/);
    expect(generation.output.length).toBeLessThanOrEqual(20 * MiB);
  });

  it('splits a huge model event into chunks of at most 8 KiB that add up to exactly what was said', async () => {
    const big = `${'é☕ '.repeat(4000)}\n`;
    const text = `Big one.\n<file path="lib/big.txt">${big}</file>\n<file path="lib/main.dart">void main() {}\n</file>\n`;
    suite.gemini.script({ kind: 'stream', chunks: [text] });
    const { generation } = await run('Something large');

    expect(generation.status).toBe('SUCCEEDED');
    const chunks = await replayChunks(suite.server.url, suite.owner.accessToken, generation.id);
    expect(chunks.length).toBeGreaterThan(2);
    for (const chunk of chunks) expect(Buffer.byteLength(chunk.text, 'utf8')).toBeLessThanOrEqual(8192);
    expect(chunks.map((c) => c.seq)).toEqual(chunks.map((_, i) => i));
    expect(chunks.map((c) => c.text).join('')).toBe(text);
    expect(generation.output).toBe(text);
    expect(generation.files.find((f) => f.path === 'lib/big.txt')?.size).toBe(Buffer.byteLength(big, 'utf8'));
  });

  it('builds a follow-up on the parent: its files carry over and the model sees the conversation and files', async () => {
    const extra = "const String greeting = 'hello from extra';\n";
    suite.gemini.script(
      {
        kind: 'stream',
        chunks: [
          'First version.\n<file path="lib/main.dart">\nimport ',
          "'package:flutter/material.dart';\nvoid main() => runApp(const Placeholder());\n</file>\n",
          `<file path="lib/extra.dart">\n${extra}</file>\n`,
        ],
        usage: { promptTokens: 120, outputTokens: 40 },
      },
      {
        kind: 'stream',
        chunks: ['Second version.\n<file path="lib/main.dart">\nvoid main() {}\n</file>\n'],
        usage: { promptTokens: 300, outputTokens: 20 },
      },
    );
    const { project, generation: first } = await run('Start the app');
    expect(first).toMatchObject({ status: 'SUCCEEDED', usage: { inputTokens: 120, outputTokens: 40 } });
    const requestsBefore = suite.gemini.requests.length;

    const started = await startAccepted(suite.owner.client, { projectId: project.id, prompt: 'Simplify main', sessionId: first.sessionId });
    const second = await waitForEnd(suite.server, suite.owner.client, suite.owner.accessToken, started.id);
    expect(second).toMatchObject({ status: 'SUCCEEDED', parent: { id: first.id }, usage: { inputTokens: 300, outputTokens: 20 } });

    // The parent's extra file is still there, unchanged; main.dart is the new one.
    const extraOf = (g: typeof first) => g.files.find((f) => f.path === 'lib/extra.dart');
    expect(extraOf(second)).toEqual(extraOf(first));
    const { generation: main } = await suite.owner.client.expectNoErrors(GeneratedFileDocument, { id: second.id, path: 'lib/main.dart' });
    expect(main?.file?.content).toBe('void main() {}\n');

    // The model was given the earlier turn and the current files.
    const request = suite.gemini.requests[requestsBefore]!;
    expect(request.body.contents.map((c) => c.role)).toEqual(['user', 'model', 'user']);
    expect(request.body.contents[0]!.parts[0]!.text).toBe('Start the app');
    expect(request.body.contents[2]!.parts[0]!.text).toBe('Simplify main');
    const system = request.body.systemInstruction?.parts.map((p) => p.text).join('');
    expect(system).toContain(extra);
    // And the manifest it rewrites whole to add a package, unchanged from the template as it is.
    expect(system).toContain(`<file path="pubspec.yaml">\n${getTarget('FLUTTER').template['pubspec.yaml']}`);

    const { project: withConversation } = await suite.owner.client.expectNoErrors(ConversationDocument, {
      projectId: project.id,
      sessionId: first.sessionId,
    });
    expect(withConversation?.conversation.map((m) => `${m.role}:${m.content.split('\n')[0]}`)).toEqual([
      'USER:Start the app',
      'MODEL:First version.',
      'USER:Simplify main',
      'MODEL:Second version.',
    ]);
  });
});

describe(`a run on a worker of its own (${databaseKind})`, () => {
  const cleanups: (() => Promise<void>)[] = [];
  afterAll(async () => {
    for (const cleanup of cleanups.reverse()) await cleanup();
  });

  /** Starts a FLUTTER generation on an API instance and runs it on a worker whose toolchain `toolchain` changes; resolves once it ended. */
  async function runOnWorker(mode: FakeFlutterMode, toolchain: Partial<PipelineDeps['toolchain']>) {
    const { database, dataDir, owner, started } = await queuedOnApiInstance(cleanups, 'A timer');
    const flutter = await fakeFlutter(mode);
    cleanups.push(() => flutter.remove());
    const logs = new LogCapture();
    const worker = await startOwnWorker(database, { DATA_DIR: dataDir, FLUTTER_BIN: flutter.bin }, { logger: createLogger('warn', logs), toolchain });
    cleanups.push(() => worker.stop({ graceMs: 0 }));
    worker.wake(rawId(started.id));

    let generation = await getGeneration(owner.client, started.id);
    await waitUntil(async () => ['SUCCEEDED', 'FAILED'].includes((generation = await getGeneration(owner.client, started.id)).status), 60_000, () => `still ${generation.status}`);
    return { generation, logs, database };
  }

  it("fails INTERNAL without the server's paths when a step cannot run, and the operator's log says why", async () => {
    // A sandbox that cannot be set up on this host (a cgroup it may not create).
    const cgroupFailure = '/sys/fs/cgroup/memory/kiln/step-1: permission denied';
    const brokenSandbox: BuildSandbox = {
      kind: 'bwrap',
      enforcement: 'cgroup v1',
      forStep: () => ({ enter: () => Promise.reject(new Error(`mkdir ${cgroupFailure}`)) }),
    };
    const { generation, logs } = await runOnWorker('ok', { sandbox: brokenSandbox });

    expect(generation.error?.code).toBe('INTERNAL');
    expect(generation.error?.message).toMatch(/^Build step "install" could not finish on this server/);
    expect(generation.error?.message).not.toContain('cgroup');
    expect(logs.text).toContain(cgroupFailure);
  });

  it('keeps a generation\'s build log within its limit, every step together, and says where it stopped', async () => {
    // Each step of the flood writes 1 MB of lines: three steps pass a 200,000-character log many times over.
    const { generation, database } = await runOnWorker('flood', { maxLogChars: 200_000 });

    const [kept] = await serviceScope(database.db).run(async (tx) =>
      rowsOf<{ lines: number; chars: number }>(
        await tx.execute(sql`select count(*)::int as lines, coalesce(sum(length(text)), 0)::int as chars from build_log_lines where generation_id = ${rawId(generation.id)}`),
      ),
    );
    expect(kept!.chars).toBeGreaterThanOrEqual(200_000);
    expect(kept!.chars).toBeLessThan(200_000 + 4_000 + 200);
    const last = generation.buildLog.at(-1);
    expect(last?.text).toBe("[kiln] This generation's build log passed 200,000 characters; later lines are not kept.");
    // Every step ran, the later ones with none of their lines kept.
    expect(generation.buildSteps.filter((step) => step.status !== 'SKIPPED').length).toBeGreaterThan(1);
  });
});

describe(`a claim whose COMMIT's reply is lost (${databaseKind})`, () => {
  it('runs the generation it claimed, instead of leaving it RUNNING until its lease lapses', async () => {
    // The worker's claim commits, then its connection goes before the reply arrives: the
    // pipeline runs the claim again (pipelineScope is idempotent), finding the row RUNNING.
    const transaction = new AsyncLocalStorage<{ claims: boolean }>();
    const database = await createTestDatabase({
      onQuery: (query) => {
        const current = transaction.getStore();
        if (current && /^update "generations" set .*, "started_at" = /.test(query)) current.claims = true;
      },
    });
    let lost = 0;
    const db = new Proxy(database.db, {
      get(target, property) {
        if (property === 'transaction') {
          return async (...args: Parameters<Db['transaction']>) => {
            const current = { claims: false };
            const result = await transaction.run(current, () => target.transaction(...args));
            if (current.claims && lost++ === 0) throw Object.assign(new Error('read ECONNRESET (injected by the test after COMMIT)'), { code: 'ECONNRESET' });
            return result;
          };
        }
        const value: unknown = Reflect.get(target, property, target);
        return typeof value === 'function' ? value.bind(target) : value;
      },
    });
    const suite = await startSuiteServer({ GENERATION_LEASE_SECONDS: '2' }, 'ok', { database: { ...database, db } });
    try {
      const project = await createProject(suite.owner.client, { target: 'FLUTTER' });
      const started = await startAccepted(suite.owner.client, { projectId: project.id, prompt: 'A timer' });
      const generation = await waitForEnd(suite.server, suite.owner.client, suite.owner.accessToken, started.id);
      expect(lost).toBeGreaterThan(0);
      expect(generation).toMatchObject({ status: 'SUCCEEDED', error: null, attempt: 1, retryOf: null });
      expect(generation.files.length).toBeGreaterThan(0);
    } finally {
      await suite.stop();
      await database.close();
    }
  });
});
