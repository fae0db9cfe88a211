import { type StructuredPatch, formatPatch, structuredPatch } from 'diff';
import type { Scope } from '../db/scope.js';
import { NotFoundError } from '../errors.js';
import { type GenerationRow, generationStore } from '../generations/store.js';

// Generation.diff: what changed between two versions of a project, per file, as
// unified patches (jsdiff) that turn the old file into the new one.

export type FileChange = 'ADDED' | 'MODIFIED' | 'DELETED';

export interface FileDiff {
  path: string;
  change: FileChange;
  additions: number;
  deletions: number;
  patch: string;
}

export interface GenerationDiff {
  /** What it is compared with: null when there is nothing before it (every file ADDED). */
  against: GenerationRow | null;
  additions: number;
  deletions: number;
  files: FileDiff[];
}

/**
 * Myers' diff takes up to (N+M)×D steps for N and M lines and D edits, on the event loop.
 * A file's search stops at this many edits, and one diff (every file of it) at this many
 * line steps in all, so a crafted pair of versions cannot hold the server for seconds;
 * past either, a file's patch replaces it whole (still a patch that applies).
 */
const MAX_EDIT_LENGTH = 10_000;
const MAX_DIFF_STEPS = 5_000_000;

/**
 * Each side is the version a generation stands for: its own files, or when it wrote none (still
 * queued or running, or ended before writing) those of the nearest earlier generation of its
 * lineage that did (a restore's: its parent's), so a generation that changed nothing shows no
 * changes. `againstId` null: the version the generation started from, its parent's. Another
 * generation must be of the same project and visible to the viewer.
 */
export async function diffGeneration(scope: Scope, generation: GenerationRow, againstId: string | null): Promise<GenerationDiff> {
  return scope.run(async (tx) => {
    const baseId = againstId ?? (generation.parentId && ((await generationStore.versionIdOfLineage(tx, generation.parentId)) ?? generation.parentId));
    const against = baseId ? await generationStore.find(tx, baseId) : undefined;
    if (baseId && (!against || against.projectId !== generation.projectId)) {
      throw new NotFoundError('The generation to compare with was not found in this project.');
    }
    const versionOf = async (side: GenerationRow) => {
      let version = await generationStore.versionIdOfLineage(tx, side.id);
      // A restore's lineage leads back through restored_from: one that wrote nothing (queued,
      // cancelled, failed before writing) would stand for files it never restored, not its parent's.
      if (side.restoredFrom && version !== side.id) {
        version = side.parentId ? await generationStore.versionIdOfLineage(tx, side.parentId) : undefined;
      }
      return version ? generationStore.filesOfMember(tx, version, true) : [];
    };
    const before = new Map((against ? await versionOf(against) : []).map((file) => [file.path, file]));
    const after = new Map((await versionOf(generation)).map((file) => [file.path, file]));
    const files = diffFiles(before, after);
    return {
      against: against ?? null,
      additions: files.reduce((sum, file) => sum + file.additions, 0),
      deletions: files.reduce((sum, file) => sum + file.deletions, 0),
      files,
    };
  });
}

type Version = ReadonlyMap<string, { sha256: string; content: string }>;

/** The changed files between two versions, by path, within one diff's budget of steps. */
export function diffFiles(before: Version, after: Version, maxSteps = MAX_DIFF_STEPS): FileDiff[] {
  let steps = maxSteps;
  const files: FileDiff[] = [];
  for (const path of [...new Set([...before.keys(), ...after.keys()])].sort()) {
    const old = before.get(path);
    const now = after.get(path);
    if (old && now && old.sha256 === now.sha256) continue;
    const oldText = old?.content ?? '';
    const newText = now?.content ?? '';
    // An added or deleted file is its whole-file patch: nothing to search, nothing spent.
    const lineCount = oldText && newText ? lines(oldText) + lines(newText) : 0;
    const maxEditLength = lineCount ? Math.min(MAX_EDIT_LENGTH, Math.floor(steps / lineCount)) : 0;
    const found = maxEditLength > 0 ? structuredPatch(path, path, oldText, newText, undefined, undefined, { context: 3, maxEditLength }) : undefined;
    const patch = found ?? wholeFilePatch(path, oldText, newText);
    const changed = patch.hunks.flatMap((hunk) => hunk.lines);
    const additions = changed.filter((line) => line.startsWith('+')).length;
    const deletions = changed.filter((line) => line.startsWith('-')).length;
    // What the search may have cost: up to its edits (or its limit, when it gave up) per line.
    steps -= lineCount * (found ? additions + deletions : maxEditLength);
    files.push({ path, change: old === undefined ? 'ADDED' : now === undefined ? 'DELETED' : 'MODIFIED', additions, deletions, patch: formatPatch(patch) });
  }
  return files;
}

const lines = (text: string) => text.split('\n').length;

/** One hunk that removes every old line and adds every new one. */
function wholeFilePatch(path: string, oldText: string, newText: string): StructuredPatch {
  const split = (text: string) => (text === '' ? [] : text.replace(/\n$/, '').split('\n'));
  const oldLines = split(oldText);
  const newLines = split(newText);
  const noNewline = '\\ No newline at end of file';
  return {
    oldFileName: path,
    newFileName: path,
    oldHeader: undefined,
    newHeader: undefined,
    hunks: [
      {
        // jsdiff's numbering: an empty side starts at 1 too (formatPatch prints it as 0,0).
        oldStart: 1,
        oldLines: oldLines.length,
        newStart: 1,
        newLines: newLines.length,
        lines: [
          ...oldLines.map((line) => `-${line}`),
          ...(oldText && !oldText.endsWith('\n') ? [noNewline] : []),
          ...newLines.map((line) => `+${line}`),
          ...(newText && !newText.endsWith('\n') ? [noNewline] : []),
        ],
      },
    ],
  };
}
