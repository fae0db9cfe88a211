import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { Session } from 'node:inspector/promises';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { writeHeapSnapshot } from 'node:v8';
import path from 'node:path';
import { WebSocketServer } from 'ws';

// The server side of bench/fanout.ts, in a process of its own (run with --expose-gc):
// Kiln (ROLE=api, so generations stay QUEUED and only the bench produces chunks) and,
// beside it, a bare `ws` server as the baseline. Commands come over IPC.
//
// Kiln runs as `npm start` runs it: the JavaScript that `npm run build` compiled into
// dist/ (ServerProcess builds it first). Run from the sources under tsx, every function
// would also carry a `name` property of its own (esbuild's keepNames), a few KiB per
// idle subscription and some CPU that production does not spend.

const fromDist = <M>(module: string): Promise<M> => import(new URL(`../../dist/${module}`, import.meta.url).href) as Promise<M>;
const { parseConfig } = await fromDist<typeof import('../../src/config.js')>('config.js');
const { openDatabase } = await fromDist<typeof import('../../src/db/client.js')>('db/client.js');
const { migrateDatabase } = await fromDist<typeof import('../../src/db/migrate.js')>('db/migrate.js');
const { serviceScope } = await fromDist<typeof import('../../src/db/scope.js')>('db/scope.js');
const { generationStore } = await fromDist<typeof import('../../src/generations/store.js')>('generations/store.js');
const { startKiln } = await fromDist<typeof import('../../src/main.js')>('main.js');
const { createLogger } = await fromDist<typeof import('../../src/observability/logger.js')>('observability/logger.js');

export type Command =
  | { cmd: 'start' }
  /**
   * Publish `batches` one-chunk batches, `rate` a second, to Kiln's subscribers or the
   * bare sockets; `persist` writes each chunk to the database first, as the pipeline does.
   */
  | { cmd: 'produce'; target: 'kiln' | 'ws'; generationId: string; firstSeq: number; batches: number; rate: number; persist: boolean }
  /** Ends the `produce` under way after its current batch (no reply: that produce replies). */
  | { cmd: 'halt' }
  /** Persist seqs 0..count-1 of a generation (history that a late subscriber replays), in one transaction. */
  | { cmd: 'history'; generationId: string; count: number }
  /** Memory after forced GC; with `snapshot`, also writes a heap snapshot there (FANOUT_PROFILE). */
  | { cmd: 'memory'; snapshot?: string }
  /** This process's `now()`, to compare the two clocks. */
  | { cmd: 'clock' }
  /** CPU time this process has used (user + system), in microseconds. */
  | { cmd: 'cpu' }
  /** Starts a CPU profile of this process (FANOUT_PROFILE): one phase of a bench. */
  | { cmd: 'profileStart' }
  /** Stops it and writes it to `file` (a .cpuprofile for Chrome DevTools). */
  | { cmd: 'profileStop'; file: string }
  | { cmd: 'stop' };

export type Reply =
  | { cmd: 'start'; url: string; wsUrl: string }
  | { cmd: 'produce'; published: number }
  | { cmd: 'history'; persisted: number }
  /** After memory-reducing GCs (see 'memory'). */
  | { cmd: 'memory'; rss: number; heapUsed: number; external: number; sockets: number }
  | { cmd: 'clock'; now: number }
  | { cmd: 'cpu'; micros: number }
  | { cmd: 'profileStart' }
  | { cmd: 'profileStop' }
  | { cmd: 'stop' };

/** Wall-clock milliseconds with sub-millisecond resolution, comparable across processes. */
export const now = () => performance.timeOrigin + performance.now();

/** A chunk's text: its publish time, padded to a typical ~100-character LLM batch. */
export const chunkText = (publishedAt: number) => `${publishedAt.toFixed(3)}|`.padEnd(100, 'x');

const dataDir = await mkdtemp(path.join(tmpdir(), 'kiln-bench-'));
const config = parseConfig({
  DATA_DIR: dataDir,
  ROLE: 'api',
  LOG_LEVEL: 'silent',
  MAX_ACTIVE_GENERATIONS_PER_USER: '20',
  WS_MAX_SUBSCRIPTIONS: '100',
  // Every viewer here is the same user (signing up thousands would dominate the set-up), on 127.0.0.1.
  LIVE_STREAMS_PER_USER: '100000',
  LIVE_STREAMS_PER_ADDRESS: '100000',
  // Hundreds of sockets connect at once here; on a loaded machine some wait longer than the default 3 s for their turn.
  WS_CONNECTION_INIT_TIMEOUT_MS: '60000',
});
const database = await openDatabase({});
await migrateDatabase(database);
const kiln = await startKiln(config, { database, port: 0, logger: createLogger('silent') });

const bare = new WebSocketServer({ port: 0, host: '127.0.0.1' });
await new Promise<void>((resolve) => bare.once('listening', resolve));

const reply = (message: Reply) => process.send!(message);

const inspector = new Session();
inspector.connect();

let halted = false;

async function produce(command: Extract<Command, { cmd: 'produce' }>): Promise<number> {
  const db = serviceScope(database.db);
  const interval = 1000 / command.rate;
  const started = performance.now();
  halted = false;
  let i = 0;
  for (; i < command.batches && !halted; i++) {
    const due = started + i * interval;
    const wait = due - performance.now();
    if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
    const seq = command.firstSeq + i;
    if (command.target === 'kiln') {
      if (command.persist) {
        // As the pipeline does it: persisted first, then published. (A replayed row
        // carries its write time, a little before the publish time: latency errs high.)
        const text = chunkText(now());
        await db.run((tx) => generationStore.appendChunks(tx, [{ generationId: command.generationId, seq, text }]));
      }
      kiln.bus.publish('generationChunks', command.generationId, [{ seq, text: chunkText(now()) }]);
    } else {
      const frame = JSON.stringify({ id: '1', type: 'next', payload: { data: { generationChunks: { seq, text: chunkText(now()) } } } });
      for (const client of bare.clients) client.send(frame);
    }
  }
  return i;
}

process.on('message', (command: Command) => {
  void (async () => {
    switch (command.cmd) {
      case 'cpu': {
        const { user, system } = process.cpuUsage();
        return reply({ cmd: 'cpu', micros: user + system });
      }
      case 'profileStart':
        await inspector.post('Profiler.enable');
        await inspector.post('Profiler.start');
        return reply({ cmd: 'profileStart' });
      case 'profileStop': {
        const { profile } = await inspector.post('Profiler.stop');
        await writeFile(command.file, JSON.stringify(profile));
        return reply({ cmd: 'profileStop' });
      }
      case 'clock':
        return reply({ cmd: 'clock', now: now() });
      case 'start':
        return reply({ cmd: 'start', url: kiln.url, wsUrl: `ws://127.0.0.1:${(bare.address() as AddressInfo).port}` });
      case 'produce':
        return reply({ cmd: 'produce', published: await produce(command) });
      case 'halt':
        halted = true;
        return;
      case 'history': {
        const rows = Array.from({ length: command.count }, (_, seq) => ({ generationId: command.generationId, seq, text: chunkText(0) }));
        await serviceScope(database.db).run((tx) => generationStore.appendChunks(tx, rows));
        return reply({ cmd: 'history', persisted: rows.length });
      }
      case 'memory': {
        // What V8's memory reducer does to a process that has gone idle, at once: GCs that
        // compact the heap's pages and give back the young generation's.
        for (let i = 0; i < 3; i++) {
          globalThis.gc?.({ type: 'major', execution: 'sync', flavor: 'last-resort' });
          await new Promise((resolve) => setImmediate(resolve));
        }
        if (command.snapshot) writeHeapSnapshot(command.snapshot);
        const { rss, heapUsed, external } = process.memoryUsage();
        return reply({ cmd: 'memory', rss, heapUsed, external, sockets: bare.clients.size });
      }
      case 'stop':
        bare.close();
        await kiln.stop();
        await database.close();
        await rm(dataDir, { recursive: true, force: true });
        reply({ cmd: 'stop' });
        return process.exit(0);
    }
  })();
});
