import { applyPatch } from 'diff';
import { describe, expect, it } from 'vitest';
import { diffFiles } from '../../src/artifacts/diff.js';
import { fileDigest } from '../../src/workspace/workspace.js';

// Generation.diff runs Myers' diff on the event loop: versions crafted to be expensive get
// whole-file patches (that still apply) instead of holding the server for seconds.

const version = (files: Record<string, string>) => new Map(Object.entries(files).map(([path, content]) => [path, { content, ...fileDigest(content) }]));
const numbered = (count: number, label: string) => Array.from({ length: count }, (_, i) => `${label} ${i}`).join('\n') + '\n';

describe('diffFiles', () => {
  it('gives a small change in a large file as a small patch', () => {
    const before = numbered(3_000, 'line');
    const after = before.replace('line 1500\n', 'line fifteen hundred\n');
    const [file] = diffFiles(version({ 'a.txt': before }), version({ 'a.txt': after }));
    expect(file).toMatchObject({ path: 'a.txt', change: 'MODIFIED', additions: 1, deletions: 1 });
    expect(applyPatch(before, file!.patch)).toBe(after);
  });

  it('spends none of the budget on added and deleted files: a small change after them keeps its small patch', () => {
    const large = numbered(3_000, 'line');
    const before = version({ 'a-gone.txt': numbered(5_000, 'old'), 'b.txt': large });
    const after = version({ 'a-new.txt': numbered(5_000, 'new'), 'b.txt': large.replace('line 1500\n', 'L\n') });
    const files = diffFiles(before, after);
    expect(files.map((file) => [file.path, file.change, file.additions, file.deletions])).toEqual([
      ['a-gone.txt', 'DELETED', 0, 5_000],
      ['a-new.txt', 'ADDED', 5_000, 0],
      ['b.txt', 'MODIFIED', 1, 1],
    ]);
    expect(applyPatch(numbered(5_000, 'old'), files[0]!.patch)).toBe('');
    expect(applyPatch('', files[1]!.patch)).toBe(numbered(5_000, 'new'));
  });

  it('replaces a changed file whole once the budget cannot search it, and that patch applies too', () => {
    const before = numbered(100, 'old');
    const after = before.replace('old 50\n', 'new\n');
    const [file] = diffFiles(version({ 'a.txt': before }), version({ 'a.txt': after }), 100);
    expect(file).toMatchObject({ change: 'MODIFIED', additions: 100, deletions: 100 });
    expect(applyPatch(before, file!.patch)).toBe(after);
  });

  it('shares one budget between the files of a diff: once spent, the rest are whole-file patches', () => {
    const before = version({ 'a.txt': numbered(100, 'a'), 'b.txt': numbered(100, 'b') });
    const after = version({ 'a.txt': numbered(100, 'a').replace('a 50\n', 'A\n'), 'b.txt': numbered(100, 'b').replace('b 50\n', 'B\n') });
    const unbounded = diffFiles(before, after);
    expect(unbounded.map((file) => file.additions)).toEqual([1, 1]);
    // Enough for the first file's two edits over ~200 lines, not for the second's.
    const bounded = diffFiles(before, after, 500);
    expect(bounded.map((file) => [file.path, file.additions, file.deletions])).toEqual([
      ['a.txt', 1, 1],
      ['b.txt', 100, 100],
    ]);
    expect(applyPatch(numbered(100, 'b'), bounded[1]!.patch)).toBe(numbered(100, 'b').replace('b 50\n', 'B\n'));
  });
});
