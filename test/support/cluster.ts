import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { expect } from 'vitest';
import { readProcStat } from '../../src/proc-stat.js';
import { GenerationChunksDocument, type GenerationChunksSubscription } from '../gql/graphql.js';
import { answerInPieces, flutterApp, type GeminiBehaviour, type HeldAnswer } from './fake-gemini.js';
import { repoRoot, subscribe, within, wsClient } from './generation-helpers.js';
import { unsandboxedBuilds } from './server.js';

// Kiln as real child processes (`node --import tsx src/main.ts`, one process each, so a
// signal reaches Kiln itself), for the scale-out suites: ROLE=api and ROLE=worker side
// by side on one database, killed and restarted at will. With what those suites steer
// them by (a fake flutter, the model's answers as a fake Gemini streams them) and the
// clients that follow their streams.

export interface KilnProcess {
  readonly name: string;
  readonly pid: number;
  /** Base URL (http://127.0.0.1:port), known once the process listens. */
  readonly url: string;
  /** Every line the process wrote (pino JSON), for diagnosing a failure. */
  readonly logs: string[];
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  readonly alive: boolean;
  signal(signal: NodeJS.Signals): void;
  /** SIGTERM and wait for the exit (SIGKILL after `timeoutMs`). */
  stop(timeoutMs?: number): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** The environment every Kiln child gets besides its own settings: nothing of the test runner's. */
function baseEnv(): Record<string, string> {
  const env: Record<string, string> = {};
  for (const name of ['PATH', 'HOME', 'USER', 'LANG', 'TMPDIR', 'TZ']) {
    const value = process.env[name];
    if (value !== undefined) env[name] = value;
  }
  return env;
}

/** Starts Kiln with `env` on a port of its own and resolves once /ready answers 200. */
export async function spawnKiln(name: string, env: Record<string, string>, timeoutMs = 60_000): Promise<KilnProcess> {
  const child: ChildProcess = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts'], {
    cwd: repoRoot,
    env: { ...baseEnv(), HOST: '127.0.0.1', PORT: '0', LOG_LEVEL: 'info', ...unsandboxedBuilds, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const logs: string[] = [];
  let url: string | undefined;
  let exitedWith: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  const exited = once(child, 'exit').then(([code, signal]) => (exitedWith = { code: code as number | null, signal: signal as NodeJS.Signals | null }));
  let listening: () => void = () => {};
  const listened = new Promise<void>((resolve) => (listening = resolve));
  const collect = (stream: NodeJS.ReadableStream | null) => {
    let rest = '';
    stream?.setEncoding('utf8');
    stream?.on('data', (text: string) => {
      const lines = (rest + text).split('\n');
      rest = lines.pop() ?? '';
      for (const line of lines) {
        logs.push(line);
        const match = /Kiln is listening on (http:\/\/[^/"]+)\/graphql/.exec(line);
        if (match && !url) {
          url = match[1];
          listening();
        }
      }
    });
  };
  collect(child.stdout);
  collect(child.stderr);

  const process_: KilnProcess = {
    name,
    pid: child.pid!,
    get url() {
      if (!url) throw new Error(`${name} is not listening`);
      return url;
    },
    logs,
    exited,
    get alive() {
      return exitedWith === undefined;
    },
    signal: (signal) => void child.kill(signal),
    stop: async (stopTimeoutMs = 30_000) => {
      if (exitedWith) return exitedWith;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), stopTimeoutMs);
      try {
        return await exited;
      } finally {
        clearTimeout(timer);
      }
    },
  };

  const started = Promise.race([
    listened,
    exited.then(() => {
      throw new Error(`${name} exited before listening:\n${logs.slice(-30).join('\n')}`);
    }),
    delay(timeoutMs).then(() => {
      throw new Error(`${name} did not start within ${timeoutMs} ms:\n${logs.slice(-30).join('\n')}`);
    }),
  ]);
  try {
    await started;
    await waitUntil(() => ready(url!), timeoutMs, () => `${name} never became ready`);
  } catch (error) {
    child.kill('SIGKILL');
    throw error;
  }
  return process_;
}

/** True when GET /ready answers 200. */
export async function ready(url: string): Promise<boolean> {
  try {
    const response = await fetch(`${url}/ready`, { signal: AbortSignal.timeout(2_000) });
    return response.status === 200;
  } catch {
    return false;
  }
}

/**
 * Checks `condition` until it holds. For states that only a poll can observe (another
 * process's readiness, a process's death, a database row); events are awaited directly.
 */
export async function waitUntil(condition: () => boolean | Promise<boolean>, timeoutMs: number, message: () => string, everyMs = 50): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`${message()} (after ${timeoutMs} ms)`);
    await delay(everyMs);
  }
}

/** The parent pid of a process, from /proc (Linux). */
export async function parentOf(pid: number): Promise<number> {
  const stat = await readProcStat(pid);
  if (!stat) throw new Error(`process ${pid} is gone`);
  return stat.ppid;
}

// ------------------------------------------------------------------ a fake flutter to steer

export interface SteeredFlutter {
  /** Pass as FLUTTER_BIN. */
  bin: string;
  /** What the next invocations do: `ok`, or `hang` (ignores SIGTERM, starts a grandchild). */
  setMode(mode: 'ok' | 'hang'): Promise<void>;
  /** Where a hanging build of `generationId` writes its grandchild's pid. */
  pidFileOf(generationId: string): string;
  remove(): Promise<void>;
}

/**
 * A wrapper around test/fixtures/bin/flutter whose mode a file decides, read at each
 * invocation (the step runner scrubs the environment, and the worker processes are
 * already running). Pid files are named by the workspace, i.e. by the generation.
 */
export async function steeredFlutter(): Promise<SteeredFlutter> {
  const fixture = fileURLToPath(new URL('../fixtures/bin/flutter', import.meta.url));
  const dir = await mkdtemp(join(tmpdir(), 'kiln-flutter-steered-'));
  const bin = join(dir, 'flutter');
  await writeFile(join(dir, 'mode'), 'ok');
  await writeFile(
    bin,
    [
      '#!/bin/sh',
      `dir='${dir}'`,
      'mode=$(cat "$dir/mode" 2>/dev/null || echo ok)',
      `FAKE_FLUTTER_MODE="$mode" FAKE_FLUTTER_PIDFILE="$dir/$(basename "$PWD").pid" exec '${fixture}' "$@"`,
      '',
    ].join('\n'),
  );
  await chmod(bin, 0o755);
  return {
    bin,
    setMode: (mode) => writeFile(join(dir, 'mode'), mode),
    pidFileOf: (generationId) => join(dir, `${generationId}.pid`),
    remove: () => rm(dir, { recursive: true, force: true }),
  };
}

// ------------------------------------------------------------------ model answers to steer

/** STREAM_POLL_MS for the API processes: a quiet live stream reads the database only after 10 minutes, so chunks reach a subscriber over the bus or at the stream's end. */
export const BUS_ONLY_POLL_MS = '600000';

/**
 * The model's answer in these suites: a small Flutter app (the fake flutter builds it) in
 * pieces. A test that needs a run mid-answer holds it (heldAnswer in fake-gemini.ts).
 */
export const APP_PIECES = answerInPieces(flutterApp('Checklist'), 8);

/** The app, streamed at once: what the model answers unless a test holds the answer. */
export function streamedApp(): GeminiBehaviour {
  return { kind: 'stream', chunks: APP_PIECES };
}

/** The text of the chunks, in order. */
export const textOf = (chunks: { text: string }[]): string => chunks.map((chunk) => chunk.text).join('');

/** True once `chunks` carry at least the text of `pieces` (the answer's first pieces, say). */
export const hasReceived = (chunks: { text: string }[], pieces: string[]): boolean => textOf(chunks).length >= pieces.join('').length;

// ------------------------------------------------------------------ clients

export type StreamedChunk = GenerationChunksSubscription['generationChunks'];

/** How long a released piece may take to reach the subscriber before the proof fails (a guard: the wait is for the chunk). */
const PIECE_TIMEOUT_MS = 30_000;

/**
 * Proves that a generation's chunks reach a subscriber on `url` live, by their order alone:
 * the run's answer (`held`, none of it released, its behaviours scripted for the run) goes
 * out one piece at a time, each only once the subscriber has received everything before it.
 * A piece does not exist until the one before it has been received, and the run cannot end
 * while a piece is held; so every piece from the second to the one before the last reached
 * the subscriber while the run was under way (the last one is followed by the run's end,
 * whose final read could bring it). On an API process with STREAM_POLL_MS at
 * BUS_ONLY_POLL_MS, only the event bus can have brought them. Then it lets the rest out and
 * follows the stream to its end, the generation's.
 * `diagnose` adds to a failure's message.
 */
export async function followPieceByPiece(url: string, token: string, id: string, held: HeldAnswer, diagnose: () => string = () => ''): Promise<StreamedChunk[]> {
  const client = wsClient(url, token);
  const chunks: StreamedChunk[] = [];
  let text = '';
  let arrived = () => {};
  const followed = (async () => {
    for await (const { generationChunks } of subscribe(client, GenerationChunksDocument, { id })) {
      chunks.push(generationChunks);
      text += generationChunks.text;
      arrived();
    }
  })();
  const endedEarly = followed.then(() => {
    throw new Error(`the stream ended with ${text.length} characters in ${chunks.length} chunks, while the answer was still held`);
  });
  endedEarly.catch(() => {}); // raced below; on its own, not a failure
  try {
    let expected = '';
    for (const [i, piece] of held.pieces.entries()) {
      expected += piece;
      const received = new Promise<void>((resolve) => {
        arrived = () => {
          if (text.length >= expected.length) resolve();
        };
        arrived();
      });
      held.gate.release();
      await within(
        Promise.race([received, endedEarly]),
        PIECE_TIMEOUT_MS,
        () => `piece ${i + 1} of ${held.pieces.length} did not reach the subscriber: it has ${text.length} of ${expected.length} characters, in ${chunks.length} chunks\n${diagnose()}`,
      );
      // Nothing past the piece: the next one is still held.
      expect(text).toBe(expected);
    }
    held.gate.open();
    await within(followed, 60_000, () => `the stream did not complete; got ${chunks.length} chunks\n${diagnose()}`);
    return chunks;
  } finally {
    held.gate.open(); // a failed proof leaves no stream waiting
    await client.dispose();
  }
}

/**
 * Follows a generation's chunks as a resilient client does: when the subscription fails
 * (its server lost the database, say), it subscribes again with the last seq it saw,
 * on the next API in `urls`. `onChunk` runs after each chunk (e.g. to break something).
 */
export async function followChunks(
  urls: string[],
  token: string,
  id: string,
  options: { onChunk?: (chunks: StreamedChunk[]) => Promise<void> | void; timeoutMs?: number; attempts?: number } = {},
): Promise<{ chunks: StreamedChunk[]; resumes: number }> {
  const chunks: StreamedChunk[] = [];
  let resumes = 0;
  const once = async (url: string) => {
    const client = wsClient(url, token);
    try {
      const afterSeq = chunks.at(-1)?.seq ?? null;
      for await (const { generationChunks } of subscribe(client, GenerationChunksDocument, { id, afterSeq })) {
        chunks.push(generationChunks);
        await options.onChunk?.(chunks);
      }
      return true;
    } catch {
      return false;
    } finally {
      await client.dispose();
    }
  };
  await within(
    (async () => {
      for (let attempt = 0; attempt < (options.attempts ?? 20); attempt++) {
        if (await once(urls[attempt % urls.length]!)) return;
        resumes++;
        await delay(250);
      }
      throw new Error('the stream never completed');
    })(),
    options.timeoutMs ?? 90_000,
    () => `the chunks did not complete; got ${chunks.length} after ${resumes} resumes`,
  );
  return { chunks, resumes };
}
