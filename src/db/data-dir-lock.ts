import { randomUUID } from 'node:crypto';
import { link, readFile, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { ConfigError } from '../config.js';
import { readProcStatSync } from '../proc-stat.js';

// One process at a time on an embedded database. PGlite takes no lock of its own, and two
// processes on one cluster overwrite each other's pages. It happens on an ordinary
// restart: on SIGTERM or Ctrl-C, `npm start` exits at once while the server it started
// still shuts down (up to WORKER_SHUTDOWN_GRACE_SECONDS with a generation running), so
// a supervisor or a developer starting it again opened the database twice.

const POLL_MS = 100;
/** A lock file too young to judge when it cannot be read: where there are no hard links, it may be half written. */
const WRITING_MS = 5_000;
/** Locks this process holds: its own pid in a lock file is stale unless it is one of these. */
const held = new Set<string>();

interface Holder {
  pid: number;
  /** The holder's start time (/proc/<pid>/stat), so a reused pid is not mistaken for it. */
  started?: string;
}

type Found = { kind: 'none' } | { kind: 'unreadable'; ageMs: number } | { kind: 'holder'; holder: Holder; text: string };

/**
 * Takes `dataDir`'s lock, waiting while a running process holds it (`onWait` is told once),
 * up to `waitMs`; a lock left by a process that is gone is taken over. Resolves with the release.
 * Pids say who holds it, so processes in other pid namespaces (containers sharing the
 * volume) or on other hosts (NFS) are not seen.
 */
export async function lockDataDir(dataDir: string, options: { waitMs: number; onWait?: (holder: number) => void }): Promise<() => Promise<void>> {
  const file = path.resolve(dataDir, 'kiln.lock');
  const deadline = Date.now() + options.waitMs;
  const mine: Holder = { pid: process.pid, started: readProcStatSync(process.pid)?.startTime };
  let told = false;
  for (;;) {
    if (await create(file, mine)) {
      held.add(file);
      return async () => {
        held.delete(file);
        const found = await find(file);
        if (found.kind === 'holder' && found.holder.pid === mine.pid && found.holder.started === mine.started) await rm(file, { force: true });
      };
    }
    const found = await find(file);
    if (found.kind === 'none') continue; // released meanwhile
    if (found.kind === 'holder' && !isRunning(found.holder, file)) {
      // Its process ended without releasing it (a crash, SIGKILL).
      await takeOver(file, (now) => now.kind === 'holder' && now.text === found.text);
      continue;
    }
    if (found.kind === 'unreadable' && found.ageMs > WRITING_MS) {
      await takeOver(file, (now) => now.kind === 'unreadable' && now.ageMs > WRITING_MS);
      continue;
    }
    const holder = found.kind === 'holder' ? found.holder.pid : undefined;
    if (Date.now() >= deadline) {
      throw new ConfigError([`DATA_DIR ${dataDir} is in use by process ${holder ?? 'unknown'}; stop that Kiln first (or remove ${file} if no such process is Kiln)`]);
    }
    if (!told && holder !== undefined) {
      options.onWait?.(holder);
      told = true;
    }
    await delay(POLL_MS);
  }
}

/** Written beside it and linked into place, so a lock file is never seen half written; where there are no hard links, created in place. */
async function create(file: string, holder: Holder): Promise<boolean> {
  const text = JSON.stringify(holder);
  const draft = `${file}.${randomUUID()}`;
  await writeFile(draft, text);
  try {
    await link(draft, file);
    return true;
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') return false;
    if (code !== 'EPERM' && code !== 'ENOTSUP' && code !== 'ENOSYS' && code !== 'EOPNOTSUPP') throw error;
    return writeFile(file, text, { flag: 'wx' }).then(
      () => true,
      (failure: NodeJS.ErrnoException) => {
        if (failure.code === 'EEXIST') return false;
        throw failure;
      },
    );
  } finally {
    await rm(draft, { force: true });
  }
}

async function find(file: string): Promise<Found> {
  // null: there, but not a file to read (a folder): judged by its age like a half-written one.
  const text = await readFile(file, 'utf8').catch((error: NodeJS.ErrnoException) => (error.code === 'ENOENT' ? undefined : null));
  if (text === undefined) return { kind: 'none' };
  if (text === null) return unreadable(file);
  try {
    const holder = JSON.parse(text) as Holder;
    if (Number.isInteger(holder.pid)) return { kind: 'holder', holder, text };
  } catch {
    // below
  }
  return unreadable(file);
}

async function unreadable(file: string): Promise<Found> {
  const modified = await stat(file).then((stats) => stats.mtimeMs, () => undefined);
  return modified === undefined ? { kind: 'none' } : { kind: 'unreadable', ageMs: Date.now() - modified };
}

/**
 * Removes a stale lock if it still is one, one starter at a time: starters that found the
 * same stale lock could otherwise remove the lock that the first of them made in its place.
 * A guard left by a starter that died while it held it (for a moment) is cleared once old.
 */
async function takeOver(file: string, stillStale: (now: Found) => boolean): Promise<void> {
  const guard = `${file}.takeover`;
  if (!(await create(guard, { pid: process.pid }))) {
    const ageMs = await stat(guard).then((stats) => Date.now() - stats.mtimeMs, () => 0);
    if (ageMs > WRITING_MS) await rm(guard, { force: true });
    else await delay(POLL_MS / 10);
    return;
  }
  try {
    if (stillStale(await find(file))) await rm(file, { force: true });
  } finally {
    await rm(guard, { force: true });
  }
}

function isRunning(holder: Holder, file: string): boolean {
  if (holder.pid === process.pid) return held.has(file);
  try {
    process.kill(holder.pid, 0);
  } catch (error) {
    // EPERM: it runs, as another user.
    if ((error as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  const now = readProcStatSync(holder.pid);
  // A zombie has closed its files; a pid with another start time is another process.
  if (now?.state === 'Z' || now?.state === 'X') return false;
  return holder.started === undefined || now === undefined || now.startTime === holder.started;
}
