import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';

/** What Kiln reads of a process's /proc/<pid>/stat (Linux). */
export interface ProcStat {
  /** R, S, D, Z (zombie), X (dead), … */
  state: string;
  ppid: number;
  pgrp: number;
  threads: number;
  /** Clock ticks after boot, as written: with the pid, it names one process. */
  startTime: string;
  rssPages: number;
}

/** The fields of a stat line: "pid (comm) state ppid pgrp …", where comm may hold spaces and parentheses; undefined for an empty read. */
function parseProcStat(line: string): ProcStat | undefined {
  const end = line.lastIndexOf(')');
  if (end < 0) return undefined;
  // From the state on: field 3 of proc(5) is fields[0] here.
  const fields = line.slice(end + 2).split(' ');
  return {
    state: fields[0]!,
    ppid: Number(fields[1]),
    pgrp: Number(fields[2]),
    threads: Number(fields[17]),
    startTime: fields[19]!,
    rssPages: Number(fields[21]),
  };
}

/** The process's stat; undefined once it is gone, or without /proc. */
export async function readProcStat(pid: number): Promise<ProcStat | undefined> {
  const line = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => undefined);
  return line === undefined ? undefined : parseProcStat(line);
}

/** readProcStat, for code that must not wait (taking a lock before the database opens). */
export function readProcStatSync(pid: number): ProcStat | undefined {
  try {
    return parseProcStat(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return undefined;
  }
}
