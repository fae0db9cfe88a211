import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { ProcessGroup } from '../src/toolchain/process-group.js';

// Time from `npm start` (spawned as an operator would) until GET /ready answers 200:
// first start on a fresh DATA_DIR (PGlite initialised, every migration applied, keys
// generated) and warm start on the same DATA_DIR (nothing left to migrate). `npm start`
// runs the server that `npm run build` compiled into dist/ and bundled into dist/bundle/
// (when no source is newer: run the build first, or the first start pays for building;
// the build also makes the PGlite template a fresh DATA_DIR is copied from). The baseline, in the same run: the
// warm start as it was before dist/, `tsx src/main.ts` compiling at start.
// STARTUP_RUNS (2 of each, to stay within a minute; the median, the slower of two, is reported).

const RUNS = Number(process.env.STARTUP_RUNS ?? 2);
const repoRoot = fileURLToPath(new URL('..', import.meta.url));
const log = (line: string) => process.stdout.write(`${line}\n`);

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** Starts Kiln with `npm start` (or with tsx from the sources), resolves with the milliseconds until /ready said 200, then stops it. */
async function timeStart(dataDir: string, fromSources = false): Promise<number> {
  const port = await freePort();
  const started = performance.now();
  // Its own process group, so stopping it stops npm, tsc and node together.
  const [command, args] = fromSources ? [process.execPath, ['--import', 'tsx', 'src/main.ts']] : ['npm', ['start', '--silent']];
  const child: ChildProcess = spawn(command, args, {
    cwd: repoRoot,
    env: { ...process.env, DATA_DIR: dataDir, PORT: String(port), HOST: '127.0.0.1', LOG_LEVEL: 'warn' },
    stdio: ['ignore', 'ignore', 'pipe'],
    detached: true,
  });
  let stderr = '';
  child.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  let exited = false;
  child.once('exit', () => (exited = true));
  try {
    for (;;) {
      if (exited) throw new Error(`npm start exited before it was ready: ${stderr}`);
      const ready = await fetch(`http://127.0.0.1:${port}/ready`).then(
        (response) => response.status === 200,
        () => false,
      );
      if (ready) return performance.now() - started;
      if (performance.now() - started > 120_000) throw new Error(`not ready after 120 s: ${stderr}`);
      await delay(10);
    }
  } finally {
    // npm exits at once on SIGTERM, the server only once it has shut down: the next start
    // must not open the data directory while this one still has it open.
    await new ProcessGroup(child.pid!, 15_000).terminate();
  }
}

const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!;
const format = (values: number[]) => `median ${(median(values) / 1000).toFixed(2)} s   (${values.map((v) => (v / 1000).toFixed(2)).join(', ')})`;

export default async function bench(): Promise<void> {
  log(`npm start until /ready is 200, embedded PGlite, ${RUNS} runs each after an unmeasured start of each kind`);
  const first: number[] = [];
  const warm: number[] = [];
  const tsx: number[] = [];
  const dirs: string[] = [];
  try {
    // Not measured: the first start after a build took 0.4-0.7 s longer here (its caches,
    // V8's compile cache of the new bundle among them, are cold), where a restart finds them
    // warm; the same for the baseline's (tsx's own cache).
    const coldDir = await mkdtemp(path.join(tmpdir(), 'kiln-bench-startup-'));
    dirs.push(coldDir);
    await timeStart(coldDir);
    await timeStart(coldDir, true);
    for (let run = 0; run < RUNS; run++) {
      const dir = await mkdtemp(path.join(tmpdir(), 'kiln-bench-startup-'));
      dirs.push(dir);
      first.push(await timeStart(dir));
      warm.push(await timeStart(dir));
      tsx.push(await timeStart(dir, true));
    }
  } finally {
    for (const dir of dirs) await rm(dir, { recursive: true, force: true });
  }
  log(`  first start (fresh DATA_DIR, migrations)  ${format(first)}`);
  log(`  warm start  (same DATA_DIR)                ${format(warm)}`);
  log(`  warm start from the sources with tsx         ${format(tsx)}`);
  log(`  ratio to the tsx warm start: first ×${(median(first) / median(tsx)).toFixed(2)}, warm ×${(median(warm) / median(tsx)).toFixed(2)} (goals: first ≤ 4 s, warm ≤ 1.5 s)`);
}
