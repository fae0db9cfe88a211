import { type ChildProcess, fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { decodeGlobalID } from '@pothos/plugin-relay';
import WebSocket from 'ws';
import type { Command, Reply } from './support/fanout-server.js';

// Fan-out of one generation's chunks: N subscribers over graphql-ws and over SSE while
// chunks are published at a fixed rate, beside a bare `ws` broadcast of the same frames
// (the floor: no GraphQL, no auth, no stream logic); then the memory of idle
// graphql-ws subscriptions against as many bare `ws` connections. The server runs in a
// child process with --expose-gc; the clients run here.
//
// Then the same graphql-ws fan-out while FANOUT_JOIN more viewers subscribe mid-stream,
// each replaying the generation's history (FANOUT_HISTORY persisted chunks) first: the
// live latency of the viewers already there, and whether every late viewer got every seq.
//
// FANOUT_N (1000), FANOUT_RATE batches/s (20), FANOUT_SECONDS (5), FANOUT_IDLE (5000),
// FANOUT_JOIN (500), FANOUT_HISTORY (200);
// FANOUT_ONLY=latency|join|memory; FANOUT_PROFILE=<dir> writes the server's CPU profiles there.

const N = Number(process.env.FANOUT_N ?? 1000);
const RATE = Number(process.env.FANOUT_RATE ?? 20);
const SECONDS = Number(process.env.FANOUT_SECONDS ?? 5);
const JOIN = Number(process.env.FANOUT_JOIN ?? 500);
const HISTORY = Number(process.env.FANOUT_HISTORY ?? 200);
const IDLE = Number(process.env.FANOUT_IDLE ?? 5000);
const BATCHES = RATE * SECONDS;
/**
 * FANOUT_PERSIST=1 writes each measured chunk to the database before publishing it.
 * Off by default: the embedded PGlite runs on the server's own thread (~20 ms of it
 * per insert here), which would measure the database rather than the fan-out; with
 * PostgreSQL, or a worker in another process, the write is not on this path. The
 * warm-up chunk is always persisted, so a subscription registered after it was
 * published still gets it by replay.
 */
const PERSIST = process.env.FANOUT_PERSIST === '1';
/** FANOUT_ONLY=latency, join or memory runs one part. */
const ONLY = process.env.FANOUT_ONLY;
/** How long after the last publish stragglers may still arrive. */
const DRAIN_MS = 5000;

const CHUNKS = /* GraphQL */ `subscription GenerationChunks($id: ID!, $afterSeq: Int) { generationChunks(generationId: $id, afterSeq: $afterSeq) { seq text } }`;

const now = () => performance.timeOrigin + performance.now();
const log = (line: string) => process.stdout.write(`${line}\n`);

// ------------------------------------------------------------------ the server process

class ServerProcess {
  private readonly child: ChildProcess;
  private pending: ((reply: Reply) => void)[] = [];

  constructor() {
    this.child = fork(fileURLToPath(new URL('./support/fanout-server.ts', import.meta.url)), {
      execArgv: ['--import', 'tsx', '--expose-gc', ...(process.env.FANOUT_PROFILE ? ['--cpu-prof', `--cpu-prof-dir=${process.env.FANOUT_PROFILE}`] : [])],
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    this.child.on('message', (reply: Reply) => this.pending.shift()?.(reply));
  }

  ask<C extends Command['cmd']>(command: Extract<Command, { cmd: C }>): Promise<Extract<Reply, { cmd: C }>> {
    return new Promise((resolve) => {
      this.pending.push(resolve as (reply: Reply) => void);
      this.child.send(command);
    });
  }

  async stop() {
    await this.ask({ cmd: 'stop' });
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

async function graphql<T>(url: string, query: string, variables: Record<string, unknown>, token?: string): Promise<T> {
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
async function setUp(url: string, count: number) {
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
class Recorder {
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

interface Subscriber {
  close(): void;
}

function graphqlWsSubscriber(url: string, token: string, generationId: string, onChunk: (seq: number, text: string) => void, afterSeq?: number): Promise<Subscriber> {
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

function bareWsSubscriber(wsUrl: string, onChunk: (seq: number, text: string) => void): Promise<Subscriber> {
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

async function sseSubscriber(url: string, token: string, generationId: string, onChunk: (seq: number, text: string) => void): Promise<Subscriber> {
  const controller = new AbortController();
  const response = await fetch(`${url}/graphql`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'text/event-stream', authorization: `Bearer ${token}` },
    body: JSON.stringify({ query: CHUNKS, variables: { id: generationId } }),
    signal: controller.signal,
  });
  void (async () => {
    const decoder = new TextDecoder();
    let buffer = '';
    try {
      for await (const bytes of response.body!) {
        buffer += decoder.decode(bytes, { stream: true });
        for (let end = buffer.indexOf('\n\n'); end !== -1; end = buffer.indexOf('\n\n')) {
          const data = buffer
            .slice(0, end)
            .split('\n')
            .find((line) => line.startsWith('data: '));
          buffer = buffer.slice(end + 2);
          const chunk = data ? (JSON.parse(data.slice(6)) as { data?: { generationChunks?: { seq: number; text: string } } }).data?.generationChunks : undefined;
          if (chunk) onChunk(chunk.seq, chunk.text);
        }
      }
    } catch {
      // aborted
    }
  })();
  return { close: () => controller.abort() };
}

/** Opens `count` subscribers, `parallel` at a time. */
async function openAll(count: number, open: (index: number) => Promise<Subscriber>, parallel = 100): Promise<Subscriber[]> {
  const subscribers: Subscriber[] = [];
  for (let start = 0; start < count; start += parallel) {
    subscribers.push(...(await Promise.all(Array.from({ length: Math.min(parallel, count - start) }, (_, i) => open(start + i)))));
  }
  return subscribers;
}

// ------------------------------------------------------------------ measurements

interface FanoutResult {
  name: string;
  /** Server CPU time per delivered message, in microseconds. */
  cpuPerMessage: number;
  p50: number;
  p99: number;
  max: number;
  delivered: number;
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

async function fanout(
  server: ServerProcess,
  name: string,
  target: 'kiln' | 'ws',
  generationId: string,
  open: (index: number, onChunk: (seq: number, text: string) => void) => Promise<Subscriber>,
): Promise<FanoutResult> {
  const recorder = new Recorder(N, await server.clockOffset());
  const started = performance.now();
  const subscribers = await openAll(N, (i) => open(i, (seq, text) => recorder.record(i, seq, text)));
  // Warm-up: seq 0 reaching everyone proves every subscription is live.
  for (let attempt = 0; !recorder.everyoneHas(0); attempt++) {
    if (attempt === 0) await server.ask({ cmd: 'produce', target, generationId, firstSeq: 0, batches: 1, rate: RATE, persist: true });
    if (!(await recorder.until(0, 30_000))) throw new Error(`${name}: not every subscriber got the warm-up chunk`);
  }
  const connectMs = performance.now() - started;
  const cpuBefore = (await server.ask({ cmd: 'cpu' })).micros;
  await server.ask({ cmd: 'produce', target, generationId, firstSeq: 1, batches: BATCHES, rate: RATE, persist: PERSIST });
  await recorder.until(BATCHES, DRAIN_MS);
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

async function idleMemory(kind: 'graphql-ws' | 'bare ws'): Promise<{ perConnection: number; perConnectionHeap: number }> {
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

export default async function run(): Promise<void> {
  if (!ONLY || ONLY === 'latency') await latency();
  if (!ONLY || ONLY === 'join') await join();
  if (!ONLY || ONLY === 'memory') await memory();
}

/** N viewers live (their history already seen); after a second, JOIN more subscribe from the start, replaying the history. */
async function join(): Promise<void> {
  log(`join mid-stream: ${N} graphql-ws viewers live, then ${JOIN} more subscribe with a replay of ${HISTORY}+ chunks (chunks persisted first, as the pipeline does)`);
  const server = new ServerProcess();
  let base: FanoutResult;
  let joined: FanoutResult;
  try {
    const { url, wsUrl } = await server.ask({ cmd: 'start' });
    const { token, generations } = await setUp(url, 1);
    const generation = generations[0]!;
    base = await fanout(server, 'bare ws broadcast', 'ws', '', (_i, onChunk) => bareWsSubscriber(wsUrl, onChunk));
    await server.ask({ cmd: 'history', generationId: generation.uuid, count: HISTORY });
    const offset = await server.clockOffset();
    const viewers = new Recorder(N, offset, HISTORY + 1);
    const started = performance.now();
    const live = await openAll(N, (i) => graphqlWsSubscriber(url, token, generation.id, (seq, text) => viewers.record(i, seq, text), HISTORY - 1));
    await server.ask({ cmd: 'produce', target: 'kiln', generationId: generation.uuid, firstSeq: HISTORY, batches: 1, rate: RATE, persist: true });
    if (!(await viewers.until(HISTORY, 30_000))) throw new Error('join: not every viewer got the warm-up chunk');
    const connectMs = performance.now() - started;
    const last = HISTORY + BATCHES;
    const late = new Recorder(JOIN, offset, Number.POSITIVE_INFINITY);
    const cpuBefore = (await server.ask({ cmd: 'cpu' })).micros;
    const producing = server.ask({ cmd: 'produce', target: 'kiln', generationId: generation.uuid, firstSeq: HISTORY + 1, batches: BATCHES, rate: RATE, persist: true });
    await new Promise((resolve) => setTimeout(resolve, 1000));
    const joinStarted = performance.now();
    const joiners = await openAll(JOIN, (i) => graphqlWsSubscriber(url, token, generation.id, (seq, text) => late.record(i, seq, text)));
    const joinMs = performance.now() - joinStarted;
    await producing;
    await Promise.all([viewers.until(last, DRAIN_MS), late.until(last, DRAIN_MS)]);
    const cpu = (await server.ask({ cmd: 'cpu' })).micros - cpuBefore;
    for (const subscriber of [...live, ...joiners]) subscriber.close();
    const sorted = viewers.latencies.sort((a, b) => a - b);
    const delivered = viewers.delivered(HISTORY + 1, last);
    joined = {
      name: `graphql-ws, ${JOIN} joining`,
      cpuPerMessage: cpu / Math.max(1, delivered * N * BATCHES + late.delivered(0, last) * JOIN * (last + 1)),
      p50: percentile(sorted, 50),
      p99: percentile(sorted, 99),
      max: sorted.at(-1) ?? Number.NaN,
      delivered,
    };
    log(
      `  ${joined.name.padEnd(22)} p50 ${joined.p50.toFixed(2).padStart(8)} ms  p99 ${joined.p99.toFixed(2).padStart(8)} ms  max ${joined.max.toFixed(1).padStart(8)} ms  delivered ${(delivered * 100).toFixed(2)}%  server CPU ${joined.cpuPerMessage.toFixed(1)} µs/message  (subscribed in ${(connectMs / 1000).toFixed(1)} s)`,
    );
    log(`  the ${JOIN} late viewers: every seq 0..${last} delivered to ${(late.delivered(0, last) * 100).toFixed(2)}% (joined in ${(joinMs / 1000).toFixed(1)} s)`);
  } finally {
    await server.stop();
  }
  log(`  viewers' live latency while ${JOIN} join vs bare ws: p50 ×${(joined.p50 / base.p50).toFixed(1)}, p99 ×${(joined.p99 / base.p99).toFixed(1)}`);
}

async function latency(): Promise<void> {
  log(
    `fan-out: ${N} subscribers of one generation, ${RATE} one-chunk batches/s for ${SECONDS} s (latency publish → receipt; chunks ${PERSIST ? '' : 'not '}persisted first)`,
  );
  const server = new ServerProcess();
  let results: FanoutResult[];
  try {
    const { url, wsUrl } = await server.ask({ cmd: 'start' });
    const { token, generations } = await setUp(url, 2);
    const [forWs, forSse] = generations as [{ id: string; uuid: string }, { id: string; uuid: string }];
    results = [
      await fanout(server, 'bare ws broadcast', 'ws', '', (_i, onChunk) => bareWsSubscriber(wsUrl, onChunk)),
      await fanout(server, 'graphql-ws', 'kiln', forWs.uuid, (_i, onChunk) => graphqlWsSubscriber(url, token, forWs.id, onChunk)),
      await fanout(server, 'SSE', 'kiln', forSse.uuid, (_i, onChunk) => sseSubscriber(url, token, forSse.id, onChunk)),
    ];
  } finally {
    await server.stop();
  }
  const [base, ...others] = results;
  for (const other of others) {
    log(
      `  ${other.name} vs bare ws: p50 ×${(other.p50 / base!.p50).toFixed(1)}, p99 ×${(other.p99 / base!.p99).toFixed(1)}, server CPU per message ×${(other.cpuPerMessage / base!.cpuPerMessage).toFixed(1)}, delivered ${(other.delivered * 100).toFixed(2)}% vs ${(base!.delivered * 100).toFixed(2)}%`,
    );
  }

}

async function memory(): Promise<void> {
  log(`memory of idle connections: ${IDLE} each, server RSS and heap after forced GC`);
  const bare = await idleMemory('bare ws');
  const graphqlWs = await idleMemory('graphql-ws');
  // Below ~1 KiB a connection, the baseline is within what freed heap pages already held in RSS.
  const ratio = (a: number, b: number) => (b >= 1024 ? `×${(a / b).toFixed(1)}` : 'n/a (baseline below RSS granularity)');
  log(
    `  graphql-ws subscription vs bare ws connection: RSS ${ratio(graphqlWs.perConnection, bare.perConnection)}, heap ${ratio(graphqlWs.perConnectionHeap, bare.perConnectionHeap)}`,
  );
}
