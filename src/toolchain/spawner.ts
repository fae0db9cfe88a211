import { type ChildProcess, spawn } from 'node:child_process';
import { Readable } from 'node:stream';

// Build steps (and the `du` and bwrap probe around them) are started by a small helper
// process rather than by the server. Starting a process forks its parent, and a fork
// copies the parent's page tables: the server's event loop stood still for 6 ms at
// 50 MB and 23 ms at 450 MB for every process it started, and every live stream with
// it. The helper is a bare Node process that holds no secrets (its environment is
// empty; each request carries its child's). It starts on first use and is started
// again if it dies; the server keeps signalling the children's process groups itself.

export interface SpawnRequest {
  /** An absolute path, or a name looked up on `env.PATH`. */
  command: string;
  args: string[];
  cwd?: string;
  /** The child's whole environment. */
  env: Record<string, string>;
  /** Leads its own process group (see ProcessGroup). */
  detached?: boolean;
  /** Also pipe fd 3 (bwrap's JSON status). */
  info?: boolean;
}

export interface SpawnedProcess {
  pid: number;
  stdout: Readable;
  stderr: Readable;
  /** fd 3, when it was asked for. */
  info: Readable | undefined;
  /** Settles when the process has exited (its streams may still hold output). `lost`: the helper stopped first. */
  exit: Promise<{ exitCode: number | null; signal: NodeJS.Signals | null; lost?: true }>;
  /** Signals the process itself, only while it runs: its pid is never signalled once it may be another's. */
  kill(signal: NodeJS.Signals): void;
}

export interface SpawnFailure {
  /** The errno code (ENOENT, EACCES…), or ESPAWNER when the helper could not start it. */
  code: string;
  message: string;
}

export interface ProcessOutput {
  exitCode: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
}

/** Starts a process through the helper. */
export async function spawnProcess(request: SpawnRequest): Promise<SpawnedProcess | SpawnFailure> {
  try {
    if (!host?.alive) host = new SpawnerHost();
  } catch (error) {
    return { code: 'ESPAWNER', message: `the process spawner could not start: ${(error as Error).message}` };
  }
  return host.spawn(request);
}

/** Runs a process to its end and returns its output (short commands: `du`, the sandbox probe). */
export async function runProcess(request: SpawnRequest, timeoutMs: number): Promise<ProcessOutput | SpawnFailure> {
  const child = await spawnProcess(request);
  if (!('pid' in child)) return child;
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    child.kill('SIGKILL');
  }, timeoutMs);
  try {
    const [stdout, stderr, exit] = await Promise.all([text(child.stdout), text(child.stderr), child.exit]);
    return { ...exit, stdout, stderr, timedOut };
  } finally {
    clearTimeout(timer);
  }
}

async function text(stream: Readable): Promise<string> {
  let all = '';
  stream.setEncoding('utf8');
  for await (const chunk of stream) all += chunk as string;
  return all;
}

// What the helper runs (`node -e`): plain JavaScript with only node's modules, kept as text
// so that it runs the same from src/, dist/ and the bundle. A child's output is read one
// chunk at a time: the next read waits until the server has taken the last one.
const HELPER_SOURCE = String.raw`
const { spawn } = require('node:child_process');
const { closeSync, readdirSync, readFileSync } = require('node:fs');
// A descriptor the server inherited without close-on-exec (a supervisor's pipe or socket)
// would reach every build step through bwrap: closed here first. Node's own are close-on-exec.
const inherited = () => {
  try {
    return readdirSync('/proc/self/fd').map(Number);
  } catch {
    return []; // no /proc: not Linux, and no sandbox either
  }
};
for (const fd of inherited()) {
  if (fd <= 2) continue;
  try {
    const flags = /flags:\s*(\d+)/.exec(readFileSync('/proc/self/fdinfo/' + fd, 'utf8'));
    if (flags && (parseInt(flags[1], 8) & 0o2000000) === 0) closeSync(fd);
  } catch {} // the listing's own descriptor, closed by now
}
const running = new Map();
const streams = new Map();
const send = (message) => process.connected && process.send(message);
process.on('disconnect', () => process.exit(0));
process.on('message', (m) => {
  const key = m.id + ':' + m.fd;
  if (m.op === 'more') return void streams.get(key)?.resume();
  if (m.op === 'drop') return void streams.get(key)?.destroy();
  if (m.op === 'kill') return void running.get(m.id)?.kill(m.signal);
  let child;
  try {
    child = spawn(m.command, m.args, { cwd: m.cwd, env: m.env, detached: m.detached, stdio: m.info ? ['ignore', 'pipe', 'pipe', 'pipe'] : ['ignore', 'pipe', 'pipe'] });
  } catch (error) {
    return void send({ id: m.id, op: 'failed', code: error.code ?? 'ESPAWNER', message: error.message });
  }
  if (child.pid === undefined) {
    return void child.once('error', (error) => send({ id: m.id, op: 'failed', code: error.code ?? 'ESPAWNER', message: error.message }));
  }
  child.on('error', () => {});
  running.set(m.id, child);
  send({ id: m.id, op: 'spawned', pid: child.pid });
  child.stdio.forEach((stream, fd) => {
    if (!stream || fd === 0) return;
    const key = m.id + ':' + fd;
    streams.set(key, stream);
    stream.on('data', (chunk) => {
      stream.pause();
      send({ id: m.id, op: 'data', fd, chunk });
    });
    stream.on('error', () => {});
    stream.once('close', () => {
      streams.delete(key);
      send({ id: m.id, op: 'end', fd });
    });
  });
  child.once('exit', (exitCode, signal) => {
    running.delete(m.id);
    send({ id: m.id, op: 'exit', exitCode, signal });
  });
});
`;

type HelperMessage =
  | { id: number; op: 'spawned'; pid: number }
  | { id: number; op: 'failed'; code: string; message: string }
  | { id: number; op: 'data'; fd: number; chunk: Uint8Array }
  | { id: number; op: 'end'; fd: number }
  | { id: number; op: 'exit'; exitCode: number | null; signal: NodeJS.Signals | null };

interface Pending {
  info: boolean;
  started?: (result: SpawnedProcess | SpawnFailure) => void;
  streams: Map<number, Readable>;
  exited?: (exit: Awaited<SpawnedProcess['exit']>) => void;
}

let host: SpawnerHost | undefined;

/** One helper per server process, shared by every Kiln in it. */
class SpawnerHost {
  private readonly child: ChildProcess;
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private gone = false;

  constructor() {
    // Its own process group: a Ctrl-C or a signal to the server's group leaves it to finish the steps that shutdown waits for.
    this.child = spawn(process.execPath, ['-e', HELPER_SOURCE], { stdio: ['ignore', 'ignore', 'inherit', 'ipc'], serialization: 'advanced', env: {}, detached: true });
    this.child.on('message', (message: HelperMessage) => this.received(message));
    // A helper that could not start says so with 'error' and never exits.
    this.child.on('error', () => this.lost());
    this.child.once('exit', () => this.lost());
    // It keeps the server's event loop alive only while a request is outstanding.
    this.child.unref();
    this.holdLoop();
  }

  get alive(): boolean {
    return !this.gone && this.child.connected;
  }

  spawn(request: SpawnRequest): Promise<SpawnedProcess | SpawnFailure> {
    const id = this.nextId++;
    const { command, args, cwd, env, detached = false, info = false } = request;
    return new Promise((resolve) => {
      const entry: Pending = { info, streams: new Map(), started: resolve };
      this.pending.set(id, entry);
      this.holdLoop();
      if (!this.post({ op: 'spawn', id, command, args, cwd, env, detached, info })) this.settle(id, entry);
    });
  }

  private received(message: HelperMessage): void {
    const entry = this.pending.get(message.id);
    if (!entry) return;
    switch (message.op) {
      case 'spawned': {
        const [stdout, stderr, info] = [1, 2, 3].map((fd) => (fd < 3 || entry.info ? this.output(message.id, fd, entry) : undefined));
        const exit = new Promise<Awaited<SpawnedProcess['exit']>>((resolve) => (entry.exited = resolve));
        const kill = (signal: NodeJS.Signals) => void this.post({ op: 'kill', id: message.id, signal });
        entry.started?.({ pid: message.pid, stdout: stdout!, stderr: stderr!, info, exit, kill });
        entry.started = undefined;
        return;
      }
      case 'failed':
        entry.started?.({ code: message.code, message: message.message });
        return this.forget(message.id);
      case 'data':
        entry.streams.get(message.fd)?.push(Buffer.from(message.chunk.buffer, message.chunk.byteOffset, message.chunk.byteLength));
        return;
      case 'end':
        entry.streams.get(message.fd)?.push(null);
        entry.streams.delete(message.fd);
        return this.forgetWhenDone(message.id, entry);
      case 'exit':
        entry.exited?.({ exitCode: message.exitCode, signal: message.signal });
        entry.exited = undefined;
        return this.forgetWhenDone(message.id, entry);
    }
  }

  /** One of a child's outputs: each read asks the helper for the next chunk; dropping it closes the helper's end. */
  private output(id: number, fd: number, entry: Pending): Readable {
    const readable: Readable = new Readable({
      read: () => void this.post({ op: 'more', id, fd }),
      destroy: (error, done) => {
        if (entry.streams.delete(fd)) {
          this.post({ op: 'drop', id, fd });
          this.forgetWhenDone(id, entry);
        }
        done(error);
      },
    });
    entry.streams.set(fd, readable);
    return readable;
  }

  private post(message: Record<string, unknown>): boolean {
    if (!this.child.connected) return false;
    this.child.send(message, (error) => error && this.child.kill());
    return true;
  }

  private forgetWhenDone(id: number, entry: Pending): void {
    if (entry.streams.size === 0 && !entry.exited) this.forget(id);
  }

  private forget(id: number): void {
    this.pending.delete(id);
    this.holdLoop();
  }

  /** Ends what the helper can no longer report: a spawn fails, streams end, the exit settles as lost. */
  private settle(id: number, entry: Pending): void {
    entry.started?.({ code: 'ESPAWNER', message: 'the process spawner stopped' });
    for (const stream of entry.streams.values()) stream.push(null);
    entry.exited?.({ exitCode: null, signal: null, lost: true });
    this.forget(id);
  }

  private lost(): void {
    this.gone = true;
    if (host === this) host = undefined;
    this.child.kill();
    for (const [id, entry] of this.pending) this.settle(id, entry);
  }

  private holdLoop(): void {
    if (this.pending.size > 0) this.child.channel?.ref();
    else this.child.channel?.unref();
  }
}
