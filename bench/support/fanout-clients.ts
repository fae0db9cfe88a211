import { type ChildProcess, execFileSync, fork } from 'node:child_process';
import { mkdir } from 'node:fs/promises';
import { request } from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { decodeGlobalID } from '@pothos/plugin-relay';
import WebSocket from 'ws';
import type { Command, Reply } from './fanout-server.js';

// What bench/fanout*.ts share: the server process (support/fanout-server.ts: Kiln built into dist/, run with
// --expose-gc), set-up over GraphQL, subscribers of each kind and what they record.
//
// FANOUT_N (1000), FANOUT_RATE batches/s (20), FANOUT_SECONDS (5), FANOUT_IDLE (5000),
// FANOUT_JOIN (500), FANOUT_HISTORY (200); FANOUT_PROFILE=<dir> writes there a CPU
// profile of the server per phase (subscribing, live) and a heap snapshot of the idle
// subscriptions (fanout-memory), for Chrome DevTools.

export const N = Number(process.env.FANOUT_N ?? 1000);
export const RATE = Number(process.env.FANOUT_RATE ?? 20);
export const SECONDS = Number(process.env.FANOUT_SECONDS ?? 5);
export const JOIN = Number(process.env.FANOUT_JOIN ?? 500);
export const HISTORY = Number(process.env.FANOUT_HISTORY ?? 200);
export const IDLE = Number(process.env.FANOUT_IDLE ?? 5000);
export const BATCHES = RATE * SECONDS;
/**
 * FANOUT_PERSIST=1 writes each measured chunk to the database before publishing it.
 * Off by default: the embedded PGlite runs on the server's own thread (~20 ms of it
 * per insert here), which would measure the database rather than the fan-out; with
 * PostgreSQL, or a worker in another process, the write is not on this path. The
 * warm-up chunk is always persisted, so a subscription registered after it was
 * published still gets it by replay.
 */
export const PERSIST = process.env.FANOUT_PERSIST === '1';
/** How long after the last publish stragglers may still arrive. */
export const DRAIN_MS = 5000;

export const CHUNKS = /* GraphQL */ `subscription GenerationChunks($id: ID!, $afterSeq: Int) { generationChunks(generationId: $id, afterSeq: $afterSeq) { seq text } }`;

export const now = () => performance.timeOrigin + performance.now();
export const log = (line: string) => process.stdout.write(`${line}\n`);

// ------------------------------------------------------------------ the server process

let built = false;

/** `npm run build` (tsc -b: only checks timestamps when nothing changed): the server runs dist/. */
function buildOnce() {
  if (built) return;
  execFileSync('tsc', ['-b', 'tsconfig.build.json'], { cwd: fileURLToPath(new URL('../..', import.meta.url)), stdio: 'inherit' });
  built = true;
}

export class ServerProcess {
  private readonly child: ChildProcess;
  /** Waiting askers by command: a reply goes to the oldest ask of its own command (a produce stays pending while a profile starts and stops). */
  private readonly pending = new Map<Reply['cmd'], ((reply: Reply) => void)[]>();

  constructor() {
    buildOnce();
    this.child = fork(fileURLToPath(new URL('./fanout-server.ts', import.meta.url)), {
      execArgv: ['--import', 'tsx', '--expose-gc'],
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    this.child.on('message', (reply: Reply) => this.pending.get(reply.cmd)?.shift()?.(reply));
  }

  ask<C extends Command['cmd']>(command: Extract<Command, { cmd: C }>): Promise<Extract<Reply, { cmd: C }>> {
    return new Promise((resolve) => {
      const waiting = this.pending.get(command.cmd as Reply['cmd']) ?? [];
      waiting.push(resolve as (reply: Reply) => void);
      this.pending.set(command.cmd as Reply['cmd'], waiting);
      this.child.send(command);
    });
  }

  /** A command that gets no reply of its own. */
  tell(command: Extract<Command, { cmd: 'halt' }>) {
    this.child.send(command);
  }

  async stop() {
    await this.ask({ cmd: 'stop' });
  }

  /** Runs `phase` under the server's CPU profiler when FANOUT_PROFILE names a directory. */
  async profiled<T>(name: string, phase: () => Promise<T>): Promise<T> {
    const dir = process.env.FANOUT_PROFILE;
    if (!dir) return phase();
    await mkdir(dir, { recursive: true });
    await this.ask({ cmd: 'profileStart' });
    try {
      return await phase();
    } finally {
      await this.ask({ cmd: 'profileStop', file: path.resolve(dir, `${name.replace(/[^a-z0-9]+/gi, '-')}.cpuprofile`) });
    }
  }

  /**
   * How far this process's clock is behind the server's (performance.timeOrigin is
   * taken per process and may differ by milliseconds): the IPC round trip with the
   * shortest time gives the best estimate.
   */
  async clockOffset(): Promise<number> {
    let best = { rtt: Number.POSITIVE_INFINITY, offset: 0 };
    for (let i = 0; i < 50; i++) {
      const sent = now();
      const { now: theirs } = await this.ask({ cmd: 'clock' });
      const received = now();
      if (received - sent < best.rtt) best = { rtt: received - sent, offset: theirs - (sent + received) / 2 };
    }
    return best.offset;
  }
}

export async function graphql<T>(url: string, query: string, variables: Record<string, unknown>, token?: string): Promise<T> {
  const response = await fetch(`${url}/graphql`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: JSON.stringify({ query, variables }),
  });
  const body = (await response.json()) as { data?: T; errors?: unknown };
  if (!body.data || body.errors) throw new Error(`GraphQL errors: ${JSON.stringify(body.errors)}`);
  return body.data;
}

/** A user, a project and `count` QUEUED generations (ROLE=api: nothing runs them). */
export async function setUp(url: string, count: number) {
  const email = `bench-${Date.now()}@example.com`;
  const { signUp } = await graphql<{ signUp: { accessToken: string } }>(
    url,
    `mutation($e: String!, $p: String!) { signUp(input: { email: $e, password: $p }) { ... on AuthSession { accessToken } } }`,
    { e: email, p: 'correct horse battery staple' },
  );
  const token = signUp.accessToken;
  const { createProject } = await graphql<{ createProject: { id: string } }>(
    url,
    `mutation { createProject(input: { name: "Fan-out", target: WEB }) { ... on Project { id } } }`,
    {},
    token,
  );
  const generations: { id: string; uuid: string }[] = [];
  for (let i = 0; i < count; i++) {
    const { startGeneration } = await graphql<{ startGeneration: { id: string } }>(
      url,
      `mutation($p: ID!) { startGeneration(input: { projectId: $p, prompt: "Fan-out ${i}" }) { ... on Generation { id } } }`,
      { p: createProject.id },
      token,
    );
    generations.push({ id: startGeneration.id, uuid: decodeGlobalID(startGeneration.id).id });
  }
  return { token, generations };
}

// ------------------------------------------------------------------ subscribers

/** What every kind of subscriber records: latency of each chunk from its publish time. */
export class Recorder {
  readonly latencies: number[] = [];
  private readonly seen: Set<number>[] = [];
  /** How many subscribers have each seq. */
  private readonly counts = new Map<number, number>();
  private readonly waiters = new Map<number, (() => void)[]>();

  /** `offset`: the server's clock minus ours; latency counts from `firstLiveSeq` on (earlier seqs are warm-up or history). */
  constructor(
    readonly subscribers: number,
    private readonly offset = 0,
    private readonly firstLiveSeq = 1,
  ) {
    for (let i = 0; i < subscribers; i++) this.seen.push(new Set());
  }

  record(subscriber: number, seq: number, text: string) {
    const at = now() + this.offset;
    const seen = this.seen[subscriber]!;
    if (seen.has(seq)) return;
    seen.add(seq);
    if (seq >= this.firstLiveSeq) this.latencies.push(at - Number.parseFloat(text));
    const count = (this.counts.get(seq) ?? 0) + 1;
    this.counts.set(seq, count);
    if (count === this.subscribers) for (const resolve of this.waiters.get(seq) ?? []) resolve();
  }

  everyoneHas(seq: number) {
    return this.counts.get(seq) === this.subscribers;
  }

  /** Resolves when every subscriber has `seq`, or after `ms` regardless. */
  until(seq: number, ms: number): Promise<boolean> {
    if (this.everyoneHas(seq)) return Promise.resolve(true);
    return new Promise((resolve) => {
      const timer = setTimeout(() => resolve(false), ms);
      const waiting = this.waiters.get(seq) ?? [];
      waiting.push(() => {
        clearTimeout(timer);
        resolve(true);
      });
      this.waiters.set(seq, waiting);
    });
  }

  delivered(from: number, to: number): number {
    let count = 0;
    for (let seq = from; seq <= to; seq++) count += this.counts.get(seq) ?? 0;
    return count / (this.subscribers * (to - from + 1));
  }
}

export interface Subscriber {
  close(): void;
}

export function graphqlWsSubscriber(url: string, token: string, generationId: string, onChunk: (seq: number, text: string) => void, afterSeq?: number): Promise<Subscriber> {
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(`${url.replace(/^http/, 'ws')}/graphql`, 'graphql-transport-ws');
    socket.once('error', reject);
    socket.on('open', () => socket.send(JSON.stringify({ type: 'connection_init', payload: { authorization: `Bearer ${token}` } })));
    socket.on('message', (data: Buffer) => {
      const message = JSON.parse(data.toString()) as { type: string; payload?: { data?: { generationChunks?: { seq: number; text: string } } } };
      if (message.type === 'connection_ack') {
        socket.send(JSON.stringify({ id: '1', type: 'subscribe', payload: { query: CHUNKS, variables: { id: generationId, afterSeq } } }));
        resolve({ close: () => socket.terminate() });
      } else if (message.type === 'next') {
        const chunk = message.payload?.data?.generationChunks;
        if (chunk) onChunk(chunk.seq, chunk.text);
      }
    });
    socket.on('close', (code) => {
      if (code !== 1005 && code !== 1006 && code !== 1000) reject(new Error(`closed ${code}`));
    });
  });
}

export function bareWsSubscriber(wsUrl: string, onChunk: (seq: number, text: string) => void): Promise<Subscriber> {
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(wsUrl);
    socket.once('error', reject);
    socket.on('open', () => resolve({ close: () => socket.terminate() }));
    socket.on('message', (data: Buffer) => {
      const chunk = (JSON.parse(data.toString()) as { payload: { data: { generationChunks: { seq: number; text: string } } } }).payload.data.generationChunks;
      onChunk(chunk.seq, chunk.text);
    });
  });
}

/**
 * An SSE subscriber on node:http, as light on the client as the `ws` clients: fetch's web
 * streams cost the bench process several times more per event, and with a thousand
 * streams that cost showed up as server latency.
 */
export function sseSubscriber(url: string, token: string, generationId: string, onChunk: (seq: number, text: string) => void): Promise<Subscriber> {
  const body = JSON.stringify({ query: CHUNKS, variables: { id: generationId } });
  return new Promise((resolve, reject) => {
    const req = request(`${url}/graphql`, {
      method: 'POST',
      agent: false,
      headers: { 'content-type': 'application/json', accept: 'text/event-stream', authorization: `Bearer ${token}`, 'content-length': Buffer.byteLength(body) },
    });
    req.once('error', reject);
    req.once('response', (res) => {
      if (res.statusCode !== 200) {
        req.destroy();
        return reject(new Error(`SSE subscribe answered ${res.statusCode}`));
      }
      res.setEncoding('utf8');
      let buffer = '';
      res.on('data', (text: string) => {
        buffer += text;
        for (let end = buffer.indexOf('\n\n'); end !== -1; end = buffer.indexOf('\n\n')) {
          const data = buffer
            .slice(0, end)
            .split('\n')
            .find((line) => line.startsWith('data: '));
          buffer = buffer.slice(end + 2);
          const chunk = data ? (JSON.parse(data.slice(6)) as { data?: { generationChunks?: { seq: number; text: string } } }).data?.generationChunks : undefined;
          if (chunk) onChunk(chunk.seq, chunk.text);
        }
      });
      res.on('error', () => {}); // closed by the bench
      resolve({ close: () => req.destroy() });
    });
    req.end(body);
  });
}

/** Opens `count` subscribers, `parallel` at a time. */
export async function openAll(count: number, open: (index: number) => Promise<Subscriber>, parallel = 100): Promise<Subscriber[]> {
  const subscribers: Subscriber[] = [];
  for (let start = 0; start < count; start += parallel) {
    subscribers.push(...(await Promise.all(Array.from({ length: Math.min(parallel, count - start) }, (_, i) => open(start + i)))));
  }
  return subscribers;
}

// ------------------------------------------------------------------ measurements

export interface FanoutResult {
  name: string;
  /** Server CPU time per delivered message, in microseconds. */
  cpuPerMessage: number;
  p50: number;
  p99: number;
  max: number;
  delivered: number;
}

export function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

export async function fanout(
  server: ServerProcess,
  name: string,
  target: 'kiln' | 'ws',
  generationId: string,
  open: (index: number, onChunk: (seq: number, text: string) => void) => Promise<Subscriber>,
): Promise<FanoutResult> {
  const recorder = new Recorder(N, await server.clockOffset());
  const started = performance.now();
  const subscribers = await server.profiled(`${name} subscribing`, () => openAll(N, (i) => open(i, (seq, text) => recorder.record(i, seq, text))));
  // Warm-up: seq 0 reaching everyone proves every subscription is live.
  for (let attempt = 0; !recorder.everyoneHas(0); attempt++) {
    if (attempt === 0) await server.ask({ cmd: 'produce', target, generationId, firstSeq: 0, batches: 1, rate: RATE, persist: true });
    if (!(await recorder.until(0, 30_000))) throw new Error(`${name}: not every subscriber got the warm-up chunk`);
  }
  const connectMs = performance.now() - started;
  const cpuBefore = (await server.ask({ cmd: 'cpu' })).micros;
  await server.profiled(`${name} live`, async () => {
    await server.ask({ cmd: 'produce', target, generationId, firstSeq: 1, batches: BATCHES, rate: RATE, persist: PERSIST });
    await recorder.until(BATCHES, DRAIN_MS);
  });
  const cpu = (await server.ask({ cmd: 'cpu' })).micros - cpuBefore;
  for (const subscriber of subscribers) subscriber.close();
  const sorted = recorder.latencies.sort((a, b) => a - b);
  const delivered = recorder.delivered(1, BATCHES);
  const result = { name, cpuPerMessage: cpu / Math.max(1, delivered * N * BATCHES), p50: percentile(sorted, 50), p99: percentile(sorted, 99), max: sorted.at(-1) ?? Number.NaN, delivered };
  log(
    `  ${name.padEnd(22)} p50 ${result.p50.toFixed(2).padStart(8)} ms  p99 ${result.p99.toFixed(2).padStart(8)} ms  max ${result.max.toFixed(1).padStart(8)} ms  delivered ${(result.delivered * 100).toFixed(2)}%  server CPU ${result.cpuPerMessage.toFixed(1)} µs/message  (subscribed in ${(connectMs / 1000).toFixed(1)} s)`,
  );
  // Let the server notice the closes before the next phase.
  await new Promise((resolve) => setTimeout(resolve, 500));
  return result;
}

export async function idleMemory(kind: 'graphql-ws' | 'bare ws'): Promise<{ perConnection: number; perConnectionHeap: number }> {
  const server = new ServerProcess();
  try {
    const { url, wsUrl } = await server.ask({ cmd: 'start' });
    const { token, generations } = await setUp(url, 1);
    const generation = generations[0]!;
    const before = await server.ask({ cmd: 'memory' });
    const recorder = new Recorder(IDLE);
    const started = performance.now();
    const subscribers = await openAll(
      IDLE,
      (i) =>
        kind === 'graphql-ws'
          ? graphqlWsSubscriber(url, token, generation.id, (seq, text) => recorder.record(i, seq, text))
          : bareWsSubscriber(wsUrl, (seq, text) => recorder.record(i, seq, text)),
      200,
    );
    // One chunk to everyone: every subscription is registered; then all are idle.
    await server.ask({ cmd: 'produce', target: kind === 'graphql-ws' ? 'kiln' : 'ws', generationId: generation.uuid, firstSeq: 0, batches: 1, rate: 1, persist: true });
    if (!(await recorder.until(0, 60_000))) throw new Error(`${kind}: not every idle subscriber got the warm-up chunk`);
    const openMs = performance.now() - started;
    const after = await server.ask({ cmd: 'memory' });
    if (process.env.FANOUT_PROFILE) {
      // Taken after the figures: a snapshot of the idle subscriptions, to look at what each one holds.
      await mkdir(process.env.FANOUT_PROFILE, { recursive: true });
      await server.ask({ cmd: 'memory', snapshot: path.resolve(process.env.FANOUT_PROFILE, `${kind.replace(/ /g, '-')}-idle.heapsnapshot`) });
    }
    for (const subscriber of subscribers) subscriber.close();
    const perConnection = (after.rss - before.rss) / IDLE;
    const perConnectionHeap = (after.heapUsed - before.heapUsed) / IDLE;
    log(
      `  ${kind.padEnd(11)} ${IDLE} idle: RSS ${(before.rss / 2 ** 20).toFixed(0)} → ${(after.rss / 2 ** 20).toFixed(0)} MiB, ` +
        `${(perConnection / 1024).toFixed(1)} KiB RSS and ${(perConnectionHeap / 1024).toFixed(1)} KiB heap each (opened in ${(openMs / 1000).toFixed(1)} s)`,
    );
    return { perConnection, perConnectionHeap };
  } finally {
    await server.stop();
  }
}
