import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { chown, mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import postgres from 'postgres';
import { Redis } from 'ioredis';
import { waitUntil } from './cluster.js';

// Servers of a test's own, so it may stop and restart them without disturbing the
// shared PostgreSQL and Redis that other suites on this machine use at the same time.

/**
 * A free TCP port on 127.0.0.1 (for a server that cannot be told to pick one), outside the
 * kernel's range of ephemeral ports: a port it handed out for `listen(0)` or an outgoing
 * connection could be taken again by one of those before our server binds it (or while the
 * test has stopped the server to start it again); one outside the range is never handed out.
 */
export async function freePort(): Promise<number> {
  const [from, to] = ephemeralPorts();
  // Below the range when there is room there, else above it; else any port the kernel gives.
  const [lowest, highest] = from - 1 - 1024 >= 1000 ? [Math.max(1024, from - 10_001), from - 1] : 65535 - to >= 1000 ? [to + 1, 65535] : [0, 0];
  for (let attempt = 0; highest > 0 && attempt < 50; attempt++) {
    const port = lowest + Math.floor(Math.random() * (highest - lowest + 1));
    if (await isFree(port)) return port;
  }
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** The kernel's range of ephemeral ports (Linux's default where it cannot be read). */
function ephemeralPorts(): [number, number] {
  try {
    const [from, to] = readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/).map(Number);
    if (Number.isInteger(from) && Number.isInteger(to) && from! <= to!) return [from!, to!];
  } catch {
    // not Linux, or no /proc
  }
  return [32768, 60999];
}

async function isFree(port: number): Promise<boolean> {
  const server = createServer();
  const free = await new Promise<boolean>((resolve) => {
    server.once('listening', () => resolve(true));
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1');
  });
  if (free) await new Promise((resolve) => server.close(resolve));
  return free;
}

function which(binary: string): string | undefined {
  try {
    return execFileSync('sh', ['-c', `command -v ${binary}`], { encoding: 'utf8' }).trim() || undefined;
  } catch {
    return undefined;
  }
}

// ------------------------------------------------------------------ Redis

export const redisServerBin = which('redis-server');

export interface PrivateRedis {
  url: string;
  port: number;
  /** Stops the server (the port stays reserved for `start`). */
  stop(): Promise<void>;
  start(): Promise<void>;
  close(): Promise<void>;
}

/** redis-server on a port of its own, no persistence, as our child (so we stop it by pid). */
export async function startPrivateRedis(): Promise<PrivateRedis> {
  if (!redisServerBin) throw new Error('redis-server is not on PATH');
  const port = await freePort();
  const url = `redis://127.0.0.1:${port}`;
  let child: ChildProcess | undefined;
  const start = async () => {
    child = spawn(redisServerBin, ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
    await waitUntil(async () => {
      const probe = new Redis(url, { lazyConnect: true, retryStrategy: () => null, maxRetriesPerRequest: 0 });
      probe.on('error', () => {});
      try {
        await probe.connect();
        return (await probe.ping()) === 'PONG';
      } catch {
        return false;
      } finally {
        probe.disconnect();
      }
    }, 10_000, () => `redis-server on ${port} did not start`);
  };
  const stop = async () => {
    const running = child;
    child = undefined;
    if (!running || running.exitCode !== null) return;
    running.kill('SIGKILL');
    await once(running, 'exit');
  };
  await start();
  return { url, port, start, stop, close: stop };
}

// ------------------------------------------------------------------ PostgreSQL

function postgresBinDir(): string | undefined {
  const fromPgConfig = (() => {
    try {
      return execFileSync('pg_config', ['--bindir'], { encoding: 'utf8' }).trim();
    } catch {
      return undefined;
    }
  })();
  for (const dir of [fromPgConfig, process.env.TEST_POSTGRES_BINDIR].filter(Boolean) as string[]) {
    if (which(join(dir, 'pg_ctl')) && which(join(dir, 'initdb'))) return dir;
  }
  return undefined;
}

const binDir = postgresBinDir();
const isRoot = userInfo().uid === 0;
/** PostgreSQL refuses to run as root: as root we run it as the `postgres` user. */
const runAs = isRoot ? (which('runuser') ? 'postgres' : undefined) : '';

/** Why a private PostgreSQL cannot be started here, or undefined when it can. */
export const privatePostgresUnavailable: string | undefined = !binDir
  ? 'no PostgreSQL server binaries (pg_ctl, initdb; set TEST_POSTGRES_BINDIR)'
  : runAs === undefined
    ? 'running as root without runuser to start PostgreSQL as the postgres user'
    : undefined;

export interface PrivatePostgres {
  url: string;
  /** `pg_ctl restart -m fast`: every connection is cut and the server is away for a moment. */
  restart(): Promise<void>;
  close(): Promise<void>;
}

/** A throwaway cluster (initdb) on a port of its own, trust auth, stopped and removed by close(). */
export async function startPrivatePostgres(): Promise<PrivatePostgres> {
  if (privatePostgresUnavailable) throw new Error(privatePostgresUnavailable);
  const dir = await mkdtemp(join(tmpdir(), 'kiln-pg-'));
  const data = join(dir, 'data');
  const port = await freePort();
  const run = (binary: string, args: string[]) =>
    runAs ? execa('runuser', ['-u', runAs, '--', join(binDir!, binary), ...args]) : execa(join(binDir!, binary), args);
  if (runAs) {
    const ids = execFileSync('id', ['-u', runAs], { encoding: 'utf8' }).trim();
    await chown(dir, Number(ids), -1);
  }
  await run('initdb', ['-D', data, '-A', 'trust', '-U', 'postgres', '--no-sync']);
  const options = `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c fsync=off`;
  await run('pg_ctl', ['-D', data, '-o', options, '-l', join(dir, 'log'), '-w', 'start']);
  const url = `postgres://postgres@127.0.0.1:${port}/postgres`;
  const admin = postgres(url, { max: 1, onnotice: () => {} });
  await admin`create database kiln`;
  await admin.end();
  return {
    url: `postgres://postgres@127.0.0.1:${port}/kiln`,
    restart: async () => void (await run('pg_ctl', ['-D', data, '-o', options, '-l', join(dir, 'log'), '-m', 'fast', '-w', 'restart'])),
    close: async () => {
      await run('pg_ctl', ['-D', data, '-m', 'immediate', '-w', 'stop']).catch(() => {});
      await rm(dir, { recursive: true, force: true });
    },
  };
}
