import { randomUUID } from 'node:crypto';
import { link, lstat, readFile, rm, writeFile } from 'node:fs/promises';
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
/** Tokens of the locks and guards this process holds: its own pid in one is stale unless it is one of these. */
const held = new Set<string>();

interface Holder {
  pid: number;
  /** The holder's start time (/proc/<pid>/stat), so a reused pid is not mistaken for it. */
  started?: string;
  /** One taking of the lock: two in one process (tests open a DATA_DIR twice) are told apart. */
  token?: string;
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
  // Monotonic: a clock stepped by NTP neither stretches nor cuts the wait.
  const deadline = performance.now() + options.waitMs;
  let told = false;
  for (;;) {
    const mine = await create(file);
    if (mine) return () => release(file, mine);
    const found = await find(file);
    if (found.kind === 'none') continue; // released meanwhile
    // Its process ended without releasing it (a crash, SIGKILL), or it was never written whole.
    const stale = isStale(found);
    if (stale && (await takeOver(file, found))) continue;
    const holder = found.kind === 'holder' && !stale ? found.holder.pid : undefined;
    if (performance.now() >= deadline) {
      throw new ConfigError([
        stale
          ? `DATA_DIR ${dataDir} has a stale lock that another start is taking over; remove ${file}.takeover if no other Kiln is starting`
          : `DATA_DIR ${dataDir} is in use by process ${holder ?? 'unknown'}; stop that Kiln first (or remove ${file} if no such process is Kiln)`,
      ]);
    }
    if (!told && holder !== undefined) {
      options.onWait?.(holder);
      told = true;
    }
    await delay(POLL_MS);
  }
}

/**
 * Makes `file` this process's, unless it exists: written beside it and linked into place, so
 * it is never seen half written (where there are no hard links, created in place). Resolves
 * with the text written, or undefined.
 */
async function create(file: string): Promise<string | undefined> {
  const token = randomUUID();
  const text = JSON.stringify({ pid: process.pid, started: readProcStatSync(process.pid)?.startTime, token } satisfies Holder);
  // Held from before it exists: a sibling in this process that reads it at once sees it running.
  held.add(token);
  let made = false;
  try {
    made = await place(file, `${file}.${token}`, text);
  } finally {
    if (!made) held.delete(token);
  }
  return made ? text : undefined;
}

async function place(file: string, draft: string, text: string): Promise<boolean> {
  try {
    await writeFile(draft, text);
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

/** Removes `file` if it is still the one this process made, then forgets it. */
async function release(file: string, text: string): Promise<void> {
  try {
    if ((await readFile(file, 'utf8').catch(() => undefined)) === text) await rm(file, { force: true });
  } finally {
    held.delete((JSON.parse(text) as Holder).token!);
  }
}

async function find(file: string): Promise<Found> {
  // Not read: gone, or there but not a file to read (a folder, a dangling symlink), judged by its age like a half-written one.
  const text = await readFile(file, 'utf8').catch(() => undefined);
  if (text === undefined) return unreadable(file);
  try {
    const holder = JSON.parse(text) as Holder;
    if (Number.isInteger(holder.pid) && holder.pid > 0) return { kind: 'holder', holder, text };
  } catch {
    // below
  }
  return unreadable(file);
}

async function unreadable(file: string): Promise<Found> {
  // The entry's own age: a symlink's target may be missing.
  const modified = await lstat(file).then((stats) => stats.mtimeMs, () => undefined);
  return modified === undefined ? { kind: 'none' } : { kind: 'unreadable', ageMs: Date.now() - modified };
}

/**
 * A holder that no longer runs, or a file that could not be read for longer than writing one
 * takes, or dated further ahead than that (a clock stepped back; a file made this instant
 * can look a fraction of a millisecond ahead).
 */
function isStale(found: Found): boolean {
  if (found.kind === 'holder') return !isRunning(found.holder);
  return found.kind === 'unreadable' && Math.abs(found.ageMs) > WRITING_MS;
}

/**
 * Removes a stale lock under a guard (`kiln.lock.takeover`, made like the lock): starters
 * that found the same stale lock could otherwise remove the lock the first of them made
 * in its place. Under the guard the lock is read again and removed only if it is still
 * what `found` saw. A guard whose process is gone is removed the same way; only a starter
 * that dies in the moment it holds the guard leaves a window open. False when another
 * start holds the guard, and the lock is to be looked at again later.
 */
async function takeOver(file: string, found: Found): Promise<boolean> {
  const guard = `${file}.takeover`;
  const mine = await create(guard);
  if (!mine) {
    const other = await find(guard);
    if (other.kind === 'none') return true; // let go of meanwhile
    if (!isStale(other)) return false;
    await removeIfStill(guard, other);
    return true;
  }
  try {
    await removeIfStill(file, found);
    return true;
  } finally {
    await release(guard, mine);
  }
}

async function removeIfStill(file: string, found: Found): Promise<void> {
  const now = await find(file);
  if (found.kind === 'holder' ? now.kind !== 'holder' || now.text !== found.text : !isStale(now)) return;
  await rm(file, { force: true }).catch((error: NodeJS.ErrnoException) => {
    throw new ConfigError([`${file} is not a lock file and cannot be removed (${error.code}); remove it`]);
  });
}

function isRunning(holder: Holder): boolean {
  if (holder.pid === process.pid) return holder.token !== undefined && held.has(holder.token);
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
