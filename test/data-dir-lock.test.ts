import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { lutimes, mkdir, mkdtemp, readdir, readFile, rm, symlink, utimes, writeFile } from 'node:fs/promises';
import { createInterface } from 'node:readline';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sql } from 'drizzle-orm';
import { afterEach, describe, expect, it } from 'vitest';
import { ConfigError, parseConfig } from '../src/config.js';
import { openDatabase } from '../src/db/client.js';
import { lockDataDir } from '../src/db/data-dir-lock.js';
import { migrateDatabase } from '../src/db/migrate.js';
import { startKiln } from '../src/main.js';
import { createLogger } from '../src/observability/logger.js';
import { readProcStat } from '../src/proc-stat.js';

// One process at a time on an embedded database's DATA_DIR: a restart that comes while the
// old server still shuts down waits for it instead of opening the cluster twice.

const dirs: string[] = [];
afterEach(async () => {
  for (const dir of dirs.splice(0)) await rm(dir, { recursive: true, force: true });
});
const dataDir = async () => {
  const dir = await mkdtemp(join(tmpdir(), 'kiln-lock-'));
  dirs.push(dir);
  return dir;
};

/** Starts `starters` lock takers at once; each holds the lock for `turns` event-loop turns. */
const mostHoldersAtOnce = async (dir: string, starters: number, turns: number) => {
  let holding = 0;
  let most = 0;
  const hold = async () => {
    const release = await lockDataDir(dir, { waitMs: 60_000 });
    most = Math.max(most, ++holding);
    for (let turn = 0; turn < turns; turn++) await new Promise((resolve) => setImmediate(resolve));
    holding--;
    await release();
  };
  await Promise.all(Array.from({ length: starters }, hold));
  return most;
};

describe('the DATA_DIR lock', () => {
  it('makes a second opening of the embedded database wait until the first is closed, then see its writes', async () => {
    const dir = await dataDir();
    const first = await openDatabase({ dataDir: dir });
    await first.db.execute(sql`create table kept (n int)`);
    await first.db.execute(sql`insert into kept values (1)`);

    let waitingFor: number | undefined;
    let busy!: () => void;
    const waiting = new Promise<void>((resolve) => (busy = resolve));
    const opening = openDatabase({ dataDir: dir, onDataDirBusy: (holder) => ((waitingFor = holder), busy()) });
    await waiting;
    expect(waitingFor).toBe(process.pid);

    await first.close();
    const second = await opening;
    expect(await second.db.execute(sql`select n from kept`)).toMatchObject({ rows: [{ n: 1 }] });
    await second.close();
    await expect(readFile(join(dir, 'kiln.lock'))).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('takes over a lock whose process is gone, or whose pid now names another process', async () => {
    const dir = await dataDir();
    const ended = spawnSync('true').pid;
    await writeFile(join(dir, 'kiln.lock'), JSON.stringify({ pid: ended, started: '1' }));
    const release = await lockDataDir(dir, { waitMs: 0 });
    await release();

    // The parent of this test runs, but it is not the process that wrote the lock.
    await writeFile(join(dir, 'kiln.lock'), JSON.stringify({ pid: process.ppid, started: 'not its start time' }));
    await (await lockDataDir(dir, { waitMs: 0 }))();

    // This process's own pid from an earlier life (a container restarted with the same pids).
    await writeFile(join(dir, 'kiln.lock'), JSON.stringify({ pid: process.pid, started: 'before' }));
    await (await lockDataDir(dir, { waitMs: 0 }))();
  });

  it('takes over a lock whose process is a zombie: it has exited, only its parent has not reaped it', async () => {
    const dir = await dataDir();
    // A child whose parent then becomes a `sleep`, which never reaps it: once killed, it is a zombie.
    const parent = spawn('sh', ['-c', 'sleep 60 & echo "$!"; exec sleep 60'], { stdio: ['ignore', 'pipe', 'ignore'] });
    try {
      const [line] = await createInterface({ input: parent.stdout! })[Symbol.asyncIterator]().next().then((next) => [next.value as string]);
      const zombie = Number(line);
      const wait = { timeout: 30_000 };
      await expect.poll(async () => (await readFile(`/proc/${parent.pid}/comm`, 'utf8')).trim(), wait).toBe('sleep');
      process.kill(zombie, 'SIGKILL');
      await expect.poll(async () => (await readProcStat(zombie))?.state, wait).toBe('Z');
      const started = (await readProcStat(zombie))!.startTime;
      await writeFile(join(dir, 'kiln.lock'), JSON.stringify({ pid: zombie, started }));
      await (await lockDataDir(dir, { waitMs: 0 }))();
    } finally {
      parent.kill('SIGKILL');
    }
  });

  it('lets one waiter in at a time, and leaves no draft files behind', async () => {
    const dir = await dataDir();
    expect(await mostHoldersAtOnce(dir, 3, 1)).toBe(1);
    expect(await readdir(dir)).toEqual([]);
  });

  it('lets one starter in at a time when several find the same stale lock', async () => {
    const gone = spawnSync('true').pid!;
    for (let round = 0; round < 20; round++) {
      const dir = await dataDir();
      await writeFile(join(dir, 'kiln.lock'), JSON.stringify({ pid: gone }));
      expect(await mostHoldersAtOnce(dir, 6, 5)).toBe(1);
    }
  });

  it('leaves a stale lock to the start taking it over, and takes over a takeover whose process is gone', async () => {
    const dir = await dataDir();
    const gone = spawnSync('true').pid!;
    await writeFile(join(dir, 'kiln.lock'), JSON.stringify({ pid: gone }));
    const other = spawn('sleep', ['60'], { stdio: 'ignore' });
    try {
      await writeFile(join(dir, 'kiln.lock.takeover'), JSON.stringify({ pid: other.pid }));
      const refused = await lockDataDir(dir, { waitMs: 0 }).catch((error: unknown) => error);
      expect((refused as ConfigError).problems).toEqual([
        `DATA_DIR ${dir} has a stale lock that another start is taking over; remove ${join(dir, 'kiln.lock.takeover')} if no other Kiln is starting`,
      ]);
    } finally {
      other.kill('SIGKILL');
      await once(other, 'exit');
    }
    await (await lockDataDir(dir, { waitMs: 0 }))();
    expect(await readdir(dir)).toEqual([]);
  });

  it('takes over an unreadable lock dated in the future (a clock stepped back) instead of waiting for it forever', async () => {
    const dir = await dataDir();
    const future = new Date(Date.now() + 3_600_000);
    for (const name of ['kiln.lock', 'kiln.lock.takeover']) {
      await writeFile(join(dir, name), '{"pi');
      await utimes(join(dir, name), future, future);
    }
    await (await lockDataDir(dir, { waitMs: 1_000 }))();
    expect(await readdir(dir)).toEqual([]);
  });

  it('judges a dangling symlink in place of the lock by its own age: waited for while new, taken over once old', async () => {
    const dir = await dataDir();
    await symlink(join(dir, 'nowhere'), join(dir, 'kiln.lock'));
    await expect(lockDataDir(dir, { waitMs: 200 })).rejects.toThrow(`DATA_DIR ${dir} is in use by process unknown`);
    const old = new Date(Date.now() - 60_000);
    await lutimes(join(dir, 'kiln.lock'), old, old);
    await (await lockDataDir(dir, { waitMs: 0 }))();
    expect(await readdir(dir)).toEqual([]);
  });

  it('gives up with the holder named once the wait is over', async () => {
    const dir = await dataDir();
    const release = await lockDataDir(dir, { waitMs: 0 });
    const refused = await lockDataDir(dir, { waitMs: 0 }).catch((error: unknown) => error);
    expect(refused).toBeInstanceOf(ConfigError);
    expect((refused as ConfigError).problems).toEqual([`DATA_DIR ${dir} is in use by process ${process.pid}; stop that Kiln first (or remove ${join(dir, 'kiln.lock')} if no such process is Kiln)`]);
    await release();
  });

  it('fails rather than loops when something that is not a lock file is in the way', async () => {
    const dir = await dataDir();
    await mkdir(join(dir, 'kiln.lock'));
    await expect(lockDataDir(dir, { waitMs: 0 })).rejects.toThrow(`DATA_DIR ${dir} is in use by process unknown`);
    // Once too old to be a lock being written, it is named as what it is.
    const old = new Date(Date.now() - 60_000);
    await utimes(join(dir, 'kiln.lock'), old, old);
    await expect(lockDataDir(dir, { waitMs: 0 })).rejects.toThrow(`${join(dir, 'kiln.lock')} is not a lock file and cannot be removed (ERR_FS_EISDIR); remove it`);
  });

  it('is let go of when a start fails at its migrations, so the next start need not wait', async () => {
    const dir = await dataDir();
    const database = await openDatabase({ dataDir: dir });
    await migrateDatabase(database);
    // Drizzle now believes nothing was applied: it runs the first migration again, which fails.
    await database.db.execute(sql`delete from drizzle.__drizzle_migrations`);
    await database.close();

    const start = startKiln(parseConfig({ DATA_DIR: dir, ROLE: 'api' }), { port: 0, logger: createLogger('silent') });
    await expect(start).rejects.toThrow(/Failed query: CREATE TYPE/);
    await (await lockDataDir(dir, { waitMs: 0 }))();
  });
});
