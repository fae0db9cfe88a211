import { readdir, readlink, realpath, stat } from 'node:fs/promises';
import path from 'node:path';
import type { Db } from '../db/client.js';
import { serviceScope } from '../db/scope.js';
import { UUID, generationStore } from '../generations/store.js';
import type { Logger } from '../observability/logger.js';
import { readProcStat } from '../proc-stat.js';

// Build steps run in process groups of their own (so a cancel or timeout kills the
// whole tree). The flip side: when a worker is killed with SIGKILL (OOM killer,
// `kill -9`) nothing kills its running build, and the group keeps running with the
// generation's workspace as its working directory.
//
// Any worker on that machine (the restarted one, or another sharing WORKSPACES_DIR)
// finds such leftovers on its recovery tick: processes of the steps' user whose working directory is inside
// `<WORKSPACES_DIR>/<project>/<generation>` for a generation that has ended (a lapsed
// lease was ended as INTERRUPTED) are killed with their process group. A generation
// still RUNNING is never touched, whichever worker runs it. Linux only (/proc); elsewhere
// this does nothing and leftovers run until their step's own end.

export interface OrphanProcess {
  pid: number;
  pgid: number;
  generationId: string;
}

/**
 * Processes of build steps' user (`stepUid`: the sandbox's host user, or the server's own)
 * whose working directory is a generation's workspace (or below it). Another user's, such
 * as an operator's shell looking into a workspace, is never one.
 */
export async function buildProcessesUnder(workspacesDir: string, stepUid: number): Promise<OrphanProcess[]> {
  let root: string;
  let entries: string[];
  try {
    root = await realpath(workspacesDir);
    entries = await readdir('/proc');
  } catch {
    return []; // no /proc (not Linux) or no workspaces yet
  }
  const found: OrphanProcess[] = [];
  for (const entry of entries) {
    if (!/^\d+$/.test(entry)) continue;
    const pid = Number(entry);
    if (pid === process.pid) continue;
    try {
      // /proc/<pid> belongs to the process's effective user.
      if ((await stat(`/proc/${pid}`)).uid !== stepUid) continue;
      const cwd = await readlink(`/proc/${pid}/cwd`);
      const relative = path.relative(root, cwd);
      if (relative === '' || relative.startsWith('..') || path.isAbsolute(relative)) continue;
      const generationId = relative.split(path.sep)[1];
      if (!generationId || !UUID.test(generationId)) continue;
      const procStat = await readProcStat(pid);
      if (procStat) found.push({ pid, pgid: procStat.pgrp, generationId });
    } catch {
      // gone meanwhile, or not ours to inspect
    }
  }
  return found;
}

/** Kills the process groups of builds whose generation has ended; returns what was killed. */
export async function reapOrphanBuilds(db: Db, workspacesDir: string, stepUid: number, logger: Logger): Promise<OrphanProcess[]> {
  const candidates = await buildProcessesUnder(workspacesDir, stepUid);
  if (candidates.length === 0) return [];
  const ids = [...new Set(candidates.map((c) => c.generationId))];
  // Only generations this database knows to have ended: a directory shared with another deployment is left alone.
  const ended = await serviceScope(db).run((tx) => generationStore.endedAmong(tx, ids));
  const orphans = candidates.filter((c) => ended.has(c.generationId));
  if (orphans.length === 0) return [];
  const ownGroup = (await readProcStat(process.pid))?.pgrp ?? -1;
  const log = logger.child({ source: 'OrphanBuilds' });
  for (const orphan of orphans) {
    log.warn({ generationId: orphan.generationId, pid: orphan.pid, pgid: orphan.pgid }, 'killing a build left behind by a stopped worker');
    try {
      // The whole group (the tool and what it started), never our own.
      if (orphan.pgid > 1 && orphan.pgid !== ownGroup) process.kill(-orphan.pgid, 'SIGKILL');
      else process.kill(orphan.pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  return orphans;
}
