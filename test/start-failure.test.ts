import { randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { readdir } from 'node:fs/promises';
import { createServer, type AddressInfo } from 'node:net';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { ConfigError, parseConfig } from '../src/config.js';
import { openDatabase, type Database } from '../src/db/client.js';
import { migrateDatabase } from '../src/db/migrate.js';
import { generations, projects, users } from '../src/db/schema.js';
import { serviceScope } from '../src/db/scope.js';
import { listen } from '../src/events/bus.js';
import { insertGeneration } from '../src/generations/generations.js';
import { isTerminal } from '../src/generations/status.js';
import { generationStore } from '../src/generations/store.js';
import type { Worker } from '../src/jobs/worker.js';
import { startKiln } from '../src/main.js';
import { createLogger } from '../src/observability/logger.js';
import { createTestDatabase } from './support/db.js';
import { fakeFlutter, tempDir } from './support/generation-helpers.js';
import { LogCapture } from './support/log-capture.js';
import { startProcess } from './support/process.js';
import { unsandboxedBuilds } from './support/server.js';

// `npm start` with ROLE=api on the embedded database is refused: no worker could join it.
// A start that fails to listen (the port is taken) holds nothing afterwards: no worker goes on
// claiming generations, and what it opened (an embedded DATA_DIR among them) is let go of.

// Every worker a start makes, to see whether one is left running after the start failed.
const workers = vi.hoisted(() => [] as { worker: Worker; stopped: boolean }[]);
vi.mock('../src/jobs/worker.js', async (importOriginal) => {
  const real = await importOriginal<typeof import('../src/jobs/worker.js')>();
  return {
    ...real,
    startWorker: (options: Parameters<typeof real.startWorker>[0]) => {
      const made = { worker: real.startWorker(options), stopped: false };
      workers.push(made);
      return { wake: made.worker.wake, stop: (stopOptions?: { graceMs?: number }) => ((made.stopped = true), made.worker.stop(stopOptions)) };
    },
  };
});

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  workers.splice(0);
});

const logger = createLogger('silent');

/** A port on loopback that something else listens on. */
async function takenPort(): Promise<number> {
  const server = createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  cleanups.push(() => new Promise((resolve) => server.close(resolve)));
  return (server.address() as AddressInfo).port;
}

/** A QUEUED FLUTTER generation of a new user's new project. */
async function queueOne(database: Database): Promise<string> {
  return serviceScope(database.db).run(async (tx) => {
    const userId = randomUUID();
    await tx.insert(users).values({ id: userId, email: `taken-port-${userId}@example.com` });
    const [project] = await tx.insert(projects).values({ ownerId: userId, name: 'taken port', target: 'FLUTTER' }).returning();
    const values = { projectId: project!.id, createdBy: userId, sessionId: randomUUID(), parentId: null, prompt: 'Queued before a failed start' };
    return (await insertGeneration(tx, { provider: { name: 'offline', model: 'offline' }, maxActivePerUser: 10 }, values, 'waive')).id;
  });
}

async function envWith(dataDir: string) {
  const flutter = await fakeFlutter('ok');
  cleanups.push(() => flutter.remove());
  // No grace: on the embedded database, a second start waits 40 s for the first to let go of DATA_DIR.
  return { DATA_DIR: dataDir, FLUTTER_BIN: flutter.bin, LOG_LEVEL: 'silent', OFFLINE_CHUNK_DELAY_MS: '0', WORKER_SHUTDOWN_GRACE_SECONDS: '0', ...unsandboxedBuilds };
}

describe('a start whose port is taken', () => {
  it('lets go of its embedded DATA_DIR and runs nothing: the next start there runs the queued generation, once', async () => {
    const data = await tempDir('taken-port');
    cleanups.push(() => data.remove());
    const seeding = await openDatabase({ dataDir: data.path });
    await migrateDatabase(seeding);
    const id = await queueOne(seeding);
    await seeding.close();
    const config = parseConfig(await envWith(data.path));

    const port = await takenPort();
    await expect(startKiln(config, { port, logger })).rejects.toThrow(new ConfigError([`Cannot listen on 127.0.0.1:${port} (EADDRINUSE): something else listens there: choose another PORT, or stop it`]));
    expect(workers.filter((made) => !made.stopped)).toEqual([]);

    // Still held, DATA_DIR would keep this start waiting, then refuse it.
    const kiln = await startKiln(config, { port: 0, logger });
    cleanups.push(() => kiln.stop());
    await new Promise<void>((resolve) => {
      const stop = listen(kiln.bus, 'generationUpdated', id, (update) => {
        if (isTerminal(update.status)) (stop(), resolve());
      });
    });
    await kiln.stop();

    const database = await openDatabase({ dataDir: data.path });
    try {
      const ran = await serviceScope(database.db).run((tx) => generationStore.find(tx, id));
      // Claimed by the failed start and handed back, it would be FAILED/INTERRUPTED with a retry.
      expect(ran).toMatchObject({ status: 'SUCCEEDED', attempt: 1 });
      const all = await serviceScope(database.db).run((tx) => tx.select({ id: generations.id }).from(generations));
      expect(all).toEqual([{ id }]);
    } finally {
      await database.close();
    }
  });

  it('that cannot build its API (an unreadable persisted-operations manifest) lets go of its embedded DATA_DIR too', async () => {
    const data = await tempDir('bad-manifest');
    cleanups.push(() => data.remove());
    const env = await envWith(data.path);
    const unreadable = parseConfig({ ...env, PERSISTED_OPERATIONS_ONLY: 'true', PERSISTED_OPERATIONS_MANIFEST: `${data.path}/no-such-manifest.json` });
    await expect(startKiln(unreadable, { port: 0, logger })).rejects.toThrow('PERSISTED_OPERATIONS_MANIFEST');

    // Still held, DATA_DIR would keep this start waiting, then refuse it (the second start does not wait: it says so).
    const logs = new LogCapture();
    const kiln = await startKiln(parseConfig(env), { port: 0, logger: createLogger('warn', logs) });
    cleanups.push(() => kiln.stop());
    expect(logs.records().filter((record) => String(record.msg).includes('to let go of DATA_DIR'))).toEqual([]);
  });

  it('on a database handed in, leaves no worker behind to claim what is queued there', async () => {
    const database = await createTestDatabase();
    cleanups.push(() => database.close());
    const data = await tempDir('taken-port-shared');
    cleanups.push(() => data.remove());
    const config = parseConfig(await envWith(data.path));

    await expect(startKiln(config, { database, port: await takenPort(), logger })).rejects.toThrow(/^Invalid configuration:\n {2}- Cannot listen on 127\.0\.0\.1:\d+ \(EADDRINUSE\)/);

    // Each worker the failed start made is woken for a generation queued now, then stopped,
    // letting what it launched run to its end: a live one would have claimed it.
    const id = await queueOne(database);
    for (const { worker } of workers) worker.wake(id);
    for (const { worker } of workers) await worker.stop({ graceMs: 3_600_000 });
    expect(await serviceScope(database.db).run((tx) => generationStore.find(tx, id))).toMatchObject({ status: 'QUEUED', startedAt: null });
  });
});

describe('Kiln as a process with ROLE=api and no DATABASE_URL', () => {
  it('refuses to start, saying why, and opens nothing under DATA_DIR', async () => {
    const data = await tempDir('api-embedded');
    cleanups.push(() => data.remove());
    const { code, stderr } = await startProcess({ ROLE: 'api', DATA_DIR: data.path, LOG_LEVEL: 'silent' }, 30_000);
    expect(code).toBe(1);
    expect(stderr).toContain('Invalid configuration:\n  - ROLE=api needs DATABASE_URL');
    expect(await readdir(data.path)).toEqual([]);
  });
});

describe('Kiln as a process that cannot have its database or its manifest', () => {
  /** What an operator reads: one line or a list of problems, no stack trace, no password. */
  const expectClean = (stderr: string) => {
    expect(stderr).not.toMatch(/^\s+at /m);
    expect(stderr).not.toContain('S3cret');
  };

  it('refuses a DATABASE_URL whose password is not percent-encoded, without printing it', async () => {
    const data = await tempDir('bad-database-url');
    cleanups.push(() => data.remove());
    for (const url of ['postgres://kiln:S3cret#Pass@127.0.0.1:1/kiln', 'postgres://kiln:S3cretPa%ss@127.0.0.1:1/kiln']) {
      const { code, stderr } = await startProcess({ DATABASE_URL: url, LISTEN_DATABASE_URL: url, DATA_DIR: data.path, LOG_LEVEL: 'silent' }, 30_000);
      expect(code, url).toBe(1);
      expect(stderr, url).toMatch(/^Invalid configuration:\n {2}- DATABASE_URL .*\n {2}- LISTEN_DATABASE_URL .*\n$/);
      expectClean(stderr);
    }
  });

  it('says in one line which database it could not reach, and why, when PostgreSQL refuses the connection', async () => {
    const data = await tempDir('unreachable-database');
    cleanups.push(() => data.remove());
    const { code, stderr } = await startProcess({ DATABASE_URL: 'postgres://kiln:S3cret@127.0.0.1:1/kiln', DATA_DIR: data.path, LOG_LEVEL: 'silent' }, 30_000);
    expect(code).toBe(1);
    expect(stderr).toBe('Cannot reach the database at 127.0.0.1:1 (ECONNREFUSED)\n');
  });

  it('refuses a missing persisted-operations manifest before it opens the database', async () => {
    const data = await tempDir('missing-manifest');
    cleanups.push(() => data.remove());
    const manifest = `${data.path}/no-such-manifest.json`;
    const env = { PERSISTED_OPERATIONS_ONLY: 'true', PERSISTED_OPERATIONS_MANIFEST: manifest, DATA_DIR: data.path, LOG_LEVEL: 'silent' };
    const { code, stderr } = await startProcess(env, 30_000);
    expect(code).toBe(1);
    expect(stderr).toBe(`Invalid configuration:\n  - PERSISTED_OPERATIONS_MANIFEST ${manifest} cannot be read (ENOENT)\n`);
    expectClean(stderr);
    expect(await readdir(data.path)).toEqual([]);
  });
});
