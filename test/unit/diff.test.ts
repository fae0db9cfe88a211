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

  it('replaces a file whole when every line differs, and the patch still applies', () => {
    const before = numbered(5_000, 'old');
    const after = numbered(5_000, 'new');
    const [file] = diffFiles(version({ 'data.txt': before }), version({ 'data.txt': after }));
    expect(file).toMatchObject({ additions: 5_000, deletions: 5_000 });
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
