import { spawn } from 'node:child_process';
import { spawnProcess } from '../src/toolchain/spawner.js';

// What starting a build step costs everyone else: the server's event loop stands still
// while a process is started, and with it every live stream. This process first holds
// SPAWN_RSS_MB (400) of touched memory, as a server with thousands of subscriptions does,
// then starts SPAWN_STEPS (40) short processes one after another in turns of five: forked
// from itself as node's child_process does (the baseline, as Kiln did before
// src/toolchain/spawner.ts), and through Kiln's spawner. Reported: the event loop's
// stalls while they start (the gaps between the ticks of a 1 ms interval, less its 1 ms),
// and each process's time from start to exit.

const RSS_MB = Number(process.env.SPAWN_RSS_MB ?? 400);
const STEPS = Number(process.env.SPAWN_STEPS ?? 40);
const TURN = 5;
const COMMAND = '/bin/true';
const log = (line: string) => process.stdout.write(`${line}\n`);

interface Side {
  name: string;
  start(): Promise<void>;
  stalls: number[];
  walls: number[];
}

/** Records how late each tick of a 1 ms interval comes until the returned stop is called. */
function watchStalls(into: number[]): () => void {
  let last = performance.now();
  const timer = setInterval(() => {
    const now = performance.now();
    into.push(Math.max(0, now - last - 1));
    last = now;
  }, 1);
  return () => clearInterval(timer);
}

const direct = () =>
  new Promise<void>((resolve, reject) => {
    const child = spawn(COMMAND, [], { stdio: ['ignore', 'pipe', 'pipe'], detached: true, env: {} });
    child.once('error', reject);
    child.stdout.resume();
    child.stderr.resume();
    child.once('close', () => resolve());
  });

const hosted = async () => {
  const child = await spawnProcess({ command: COMMAND, args: [], env: {}, detached: true });
  if (!('pid' in child)) throw new Error(child.message);
  child.stdout.resume();
  child.stderr.resume();
  await Promise.all([child.exit, new Promise((resolve) => child.stdout.once('end', resolve)), new Promise((resolve) => child.stderr.once('end', resolve))]);
};

export default async function bench(): Promise<void> {
  const held: Buffer[] = [];
  for (let i = 0; i < RSS_MB; i++) held.push(Buffer.alloc(1024 * 1024, i));
  const sides: Side[] = [
    { name: 'forked by this process', start: direct, stalls: [], walls: [] },
    { name: 'through the spawner', start: hosted, stalls: [], walls: [] },
  ];
  // Warm-up: the spawner's helper starts, both paths compile.
  for (const side of sides) await side.start();
  log(`${STEPS} processes (${COMMAND}) a side, in turns of ${TURN}, from a process of ${(process.memoryUsage().rss / 2 ** 20).toFixed(0)} MB RSS`);
  for (let done = 0; done < STEPS; done += TURN) {
    for (const side of sides) {
      const stop = watchStalls(side.stalls);
      for (let i = 0; i < TURN; i++) {
        const started = performance.now();
        await side.start();
        side.walls.push(performance.now() - started);
      }
      stop();
    }
  }
  const at = (values: number[], q: number) => [...values].sort((a, b) => a - b)[Math.min(values.length - 1, Math.floor(q * values.length))]!;
  for (const { name, stalls, walls } of sides) {
    log(
      `  ${name.padEnd(24)} event-loop stall p50 ${at(stalls, 0.5).toFixed(1)} ms  p99 ${at(stalls, 0.99).toFixed(1)} ms  max ${at(stalls, 1).toFixed(1)} ms   start to exit median ${at(walls, 0.5).toFixed(1)} ms`,
    );
  }
  const [forked, spawner] = sides as [Side, Side];
  log(`  spawner vs forked: event-loop stall max ×${(at(spawner.stalls, 1) / at(forked.stalls, 1)).toFixed(2)}, p99 ×${(at(spawner.stalls, 0.99) / at(forked.stalls, 0.99)).toFixed(2)}`);
  held.length = 0;
}
