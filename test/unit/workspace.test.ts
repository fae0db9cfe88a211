import { spawnSync } from 'node:child_process';
import { constants, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { mkdir, mkdtemp, open, readdir, readFile, rm, symlink, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { MAX_VERSION_BYTES, MAX_VERSION_FILES, OutputProtocolError } from '../../src/generations/output-parser.js';
import { UnsafeOutputError } from '../../src/generations/safe-path.js';
import { directoryInside, writeFileInside } from '../../src/workspace/write-inside.js';
import {
  createWorkspace,
  fileDigest,
  pruneWorkspaces,
  type PruneGuard,
  removeWorkspace,
  type CreateWorkspaceInput,
  VersionTooLargeError,
  withoutRefusedPaths,
} from '../../src/workspace/workspace.js';

let root: string;

beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), 'kiln-workspace-'));
});

afterEach(async () => {
  // coreutils rm: a test may leave a tree nested deeper than Node's rm can follow.
  spawnSync('rm', ['-rf', '--', root]);
  await rm(root, { recursive: true, force: true });
});

function input(overrides: Partial<CreateWorkspaceInput> = {}): CreateWorkspaceInput {
  return {
    root,
    projectId: 'p1',
    generationId: 'g1',
    template: { 'pubspec.yaml': 'name: app\n', 'lib/main.dart': 'template main\n', 'README.md': '# App\n' },
    // The parent's version: the model changed lib/main.dart, added lib/old.dart and deleted README.md.
    parentFiles: [
      { path: 'lib/main.dart', content: 'parent main\n' },
      { path: 'lib/old.dart', content: 'old\n' },
      { path: 'pubspec.yaml', content: 'name: app\n' },
    ],
    changes: [],
    changesAre: 'this answer',
    ...overrides,
  };
}

/** Every regular file under `dir`, as relative path → content. */
async function readTree(dir: string): Promise<Record<string, string>> {
  const tree: Record<string, string> = {};
  for (const entry of await readdir(dir, { recursive: true, withFileTypes: true })) {
    if (!entry.isFile()) continue;
    const path = join(entry.parentPath, entry.name);
    tree[path.slice(dir.length + 1)] = await readFile(path, 'utf8');
  }
  return tree;
}

describe('createWorkspace', () => {
  it("layers the changes on the parent's files alone, and lists the result sorted", async () => {
    const { dir, files } = await createWorkspace(
      input({
        changes: [
          { type: 'file', path: 'lib/main.dart', content: 'generated main\n' },
          { type: 'file', path: 'lib/src/counter.dart', content: 'class Counter {}\n' },
          { type: 'delete', path: 'lib/old.dart' },
          { type: 'delete', path: 'never/existed.txt' },
        ],
      }),
    );

    expect(dir).toBe(join(root, 'p1', 'g1'));
    // README.md, which the parent's answer deleted from the template, stays deleted.
    const expected = {
      'lib/main.dart': 'generated main\n',
      'lib/src/counter.dart': 'class Counter {}\n',
      'pubspec.yaml': 'name: app\n',
    };
    expect(await readTree(dir)).toEqual(expected);
    expect(files.map(({ path, content }) => [path, content])).toEqual(Object.entries(expected));
    // Beside it, and not in it: when Kiln made it.
    expect((await readdir(join(root, 'p1'))).sort()).toEqual(['.created-g1', 'g1']);
  });

  it('starts from the template when there is no parent version', async () => {
    const { files } = await createWorkspace(input({ parentFiles: [], changes: [{ type: 'file', path: 'lib/main.dart', content: 'generated main\n' }] }));
    expect(files.map(({ path, content }) => [path, content])).toEqual([
      ['README.md', '# App\n'],
      ['lib/main.dart', 'generated main\n'],
      ['pubspec.yaml', 'name: app\n'],
    ]);
  });

  it('refuses a version of more files or bytes than Kiln keeps, and leaves nothing behind', async () => {
    // The parent holds all but one of the files a version may; the answer adds two.
    const parentFiles = Array.from({ length: MAX_VERSION_FILES - 1 }, (_, i) => ({ path: `lib/f${i}.dart`, content: '' }));
    const tooMany = createWorkspace(
      input({
        parentFiles,
        changes: [
          { type: 'file', path: 'lib/new1.dart', content: '' },
          { type: 'file', path: 'lib/new2.dart', content: '' },
        ],
      }),
    );
    await expect(tooMany).rejects.toThrow(
      new VersionTooLargeError('The project would hold 1,001 files after this answer; Kiln keeps at most 1,000 files in a version.'),
    );
    await expect(tooMany).rejects.toMatchObject({ code: 'UNSAFE_OUTPUT' });
    // Exactly at the limit, and a delete making room: accepted.
    const atLimit = await createWorkspace(
      input({
        generationId: 'g2',
        parentFiles,
        changes: [
          { type: 'file', path: 'lib/new1.dart', content: '' },
          { type: 'file', path: 'lib/new2.dart', content: '' },
          { type: 'delete', path: 'lib/f0.dart' },
        ],
      }),
    );
    expect(atLimit.files).toHaveLength(MAX_VERSION_FILES);

    const half = 'x'.repeat(MAX_VERSION_BYTES / 2);
    const tooBig = createWorkspace(
      input({ generationId: 'g3', parentFiles: [{ path: 'a.txt', content: half }], changes: [{ type: 'file', path: 'b.txt', content: `${half}é` }] }),
    );
    await expect(tooBig).rejects.toThrow(
      new VersionTooLargeError("The project's files would take 10.01 MiB after this answer; Kiln keeps at most 10 MiB in a version."),
    );
    expect((await readdir(join(root, 'p1'))).sort()).toEqual(['.created-g2', 'g2']);
  });

  it('keeps apart stored files whose paths Kiln now refuses', () => {
    const files = [
      { path: 'package.json', content: '{}' },
      { path: 'package-lock.json', content: '{}' },
      { path: 'web/.npmrc', content: '' },
    ];
    expect(withoutRefusedPaths(files)).toEqual({ kept: [files[0]], refused: ['package-lock.json', 'web/.npmrc'] });
  });

  it('reports the exact UTF-8 size and SHA-256 of each file', async () => {
    const content = 'héllo 🍵\n';
    const { files } = await createWorkspace(
      input({ template: {}, parentFiles: [], changes: [{ type: 'file', path: 'a.txt', content }] }),
    );
    const digest = { size: 12, sha256: '06aa5328ca49c05628b15a6443c5ab8bda38fbe98e406345068c4fae1d662c9c' };
    expect(files).toEqual([{ path: 'a.txt', content, ...digest }]);
    expect(fileDigest(content)).toEqual(digest);
    expect(fileDigest('').sha256).toBe('e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855');
  });

  it('leaves nothing behind when a path is unsafe', async () => {
    const badChange = createWorkspace(input({ changes: [{ type: 'file', path: '../escape.txt', content: 'x' }] }));
    await expect(badChange).rejects.toBeInstanceOf(UnsafeOutputError);
    expect(await readdir(root)).toEqual([]);

    const badTemplate = createWorkspace(input({ template: { 'a.txt': 'a', '/etc/evil': 'x' }, parentFiles: [] }));
    await expect(badTemplate).rejects.toThrow(/"\/etc\/evil" is an absolute path/);
    expect(await readdir(join(root, 'p1'))).toEqual([]);
  });

  it('refuses a file that differs only in case from another of the version, and leaves alone twins the version already had', async () => {
    const twin = createWorkspace(input({ changes: [{ type: 'file', path: 'lib/Main.dart', content: 'x' }] }));
    await expect(twin).rejects.toThrow('The model\'s output is unsafe: "lib/Main.dart" differs only in case from "lib/main.dart": unpacked on macOS or Windows, one would overwrite the other');
    expect(await readdir(root)).toEqual([]);

    // A rename in one answer (the old name deleted) is no twin; nor is a pair the parent's version
    // had, rewritten or not, nor a restore of a version that held one.
    const parentFiles = [...input().parentFiles, { path: 'LIB/old.dart', content: 'older\n' }];
    const { files } = await createWorkspace(
      input({
        parentFiles,
        changes: [
          { type: 'delete', path: 'lib/main.dart' },
          { type: 'file', path: 'lib/Main.dart', content: 'x' },
          { type: 'file', path: 'LIB/old.dart', content: 'fixed\n' },
        ],
      }),
    );
    expect(files.map((file) => file.path)).toEqual(['LIB/old.dart', 'lib/Main.dart', 'lib/old.dart', 'pubspec.yaml']);
    const restored = await createWorkspace(
      input({ generationId: 'g2', parentFiles: [], changes: parentFiles.map((file) => ({ type: 'file' as const, ...file })), changesAre: 'this restore' }),
    );
    expect(restored.files.map((file) => file.path)).toEqual(['LIB/old.dart', 'README.md', 'lib/main.dart', 'lib/old.dart', 'pubspec.yaml']);
  });

  it('removes the temporary directory when the files cannot all be written', async () => {
    // `lib/main.dart` is a file, and `lib/main.dart/x` would need it to be a directory.
    const attempt = createWorkspace(input({ changes: [{ type: 'file', path: 'lib/main.dart/x', content: 'x' }] }));
    await expect(attempt).rejects.toBeInstanceOf(OutputProtocolError);
    expect(await readdir(join(root, 'p1'))).toEqual([]);
  });

  it('refuses to replace an existing workspace, even an empty one', async () => {
    await mkdir(join(root, 'p1', 'g1'), { recursive: true });
    await expect(createWorkspace(input())).rejects.toThrow(/already exists/);
    expect(await readdir(join(root, 'p1'))).toEqual(['g1']);
    expect(await readdir(join(root, 'p1', 'g1'))).toEqual([]);
  });

  it('refuses ids that are not one plain path segment', async () => {
    await expect(createWorkspace(input({ projectId: '..' }))).rejects.toThrow(/Invalid workspace id/);
    await expect(createWorkspace(input({ generationId: 'a/b' }))).rejects.toThrow(/Invalid workspace id/);
    expect(await readdir(root)).toEqual([]);
  });
});

describe('writeFileInside', () => {
  it('refuses to write through a symlinked directory that points outside', async () => {
    const workspace = join(root, 'ws');
    const outside = join(root, 'outside');
    await mkdir(workspace);
    await mkdir(outside);
    await symlink(outside, join(workspace, 'lib'));

    await expect(writeFileInside(workspace, 'lib/main.dart', 'x')).rejects.toBeInstanceOf(UnsafeOutputError);
    await expect(writeFileInside(workspace, 'lib/src/main.dart', 'x')).rejects.toThrow(/symbolic link/);
    expect(await readdir(outside)).toEqual([]);
  });

  it('refuses to write over a symlink that points outside', async () => {
    const workspace = join(root, 'ws');
    const target = join(root, 'secret.txt');
    await mkdir(workspace);
    await writeFile(target, 'secret');
    await symlink(target, join(workspace, 'main.dart'));

    await expect(writeFileInside(workspace, 'main.dart', 'x')).rejects.toBeInstanceOf(UnsafeOutputError);
    expect(await readFile(target, 'utf8')).toBe('secret');
  });

  it('refuses a named pipe in place of the file at once, written or not, instead of waiting for a reader', async () => {
    const workspace = join(root, 'ws');
    await mkdir(workspace);
    expect(spawnSync('mkfifo', [join(workspace, 'main.dart')]).status).toBe(0);
    await expect(writeFileInside(workspace, 'main.dart', 'x')).rejects.toThrow(/not a regular file/);

    // With a reader holding it open, the open succeeds: refused all the same, nothing written.
    const reader = await open(join(workspace, 'main.dart'), constants.O_RDONLY | constants.O_NONBLOCK);
    try {
      await expect(writeFileInside(workspace, 'main.dart', 'x')).rejects.toThrow(/not a regular file/);
      expect((await reader.read(Buffer.alloc(8), 0, 8, null)).bytesRead).toBe(0);
    } finally {
      await reader.close();
    }
  });
});

describe('directoryInside', () => {
  it("gives a build's output folder only when no part of the way to it is a link", async () => {
    const workspace = join(root, 'ws');
    const outside = join(root, 'outside');
    await mkdir(join(outside, 'web'), { recursive: true });
    await writeFile(join(outside, 'web', 'secret.txt'), 'secret');
    await mkdir(join(workspace, 'dist'), { recursive: true });
    await symlink(outside, join(workspace, 'build'));

    expect(await directoryInside(workspace, 'build/web')).toBeUndefined();
    expect(await directoryInside(workspace, 'dist')).toBe(join(workspace, 'dist'));
    expect(await directoryInside(workspace, 'missing/web')).toBeUndefined();
  });
});

describe('pruning', () => {
  const hour = 60 * 60;

  /** Every generation finished; the folders that could not be removed, as their owner is told. */
  function allFinished(): PruneGuard & { failures: string[] } {
    const failures: string[] = [];
    return {
      failures,
      finishedAmong: async (ids) => new Set(ids),
      onFailure: (dir) => void failures.push(dir),
    };
  }

  /** Workspaces of p1, each made `age` seconds ago. */
  async function workspacesAged(ages: Record<string, number>): Promise<void> {
    for (const [generationId, seconds] of Object.entries(ages)) {
      await createWorkspace(input({ generationId }));
      await age(generationId, seconds);
    }
  }

  /** Sets when a workspace was made (its marker beside it) and its folder's mtime `seconds` back, after the test wrote into it. */
  async function age(generationId: string, seconds: number): Promise<void> {
    const when = Date.now() / 1000 - seconds;
    await utimes(join(root, 'p1', `.created-${generationId}`), when, when);
    await utimes(join(root, 'p1', generationId), when, when);
  }

  it('keeps the newest workspaces and clears stale temporary directories', async () => {
    const now = Date.now() / 1000;
    await workspacesAged({ g1: 4 * hour, g2: 3 * hour, g3: 2 * hour, g4: 60 });
    await mkdir(join(root, 'p1', '.tmp-stale'));
    await utimes(join(root, 'p1', '.tmp-stale'), now - 2 * hour, now - 2 * hour);
    await mkdir(join(root, 'p1', '.tmp-writing'));

    const guard = allFinished();
    expect((await pruneWorkspaces(root, 'p1', 2, guard)).sort()).toEqual(['g1', 'g2']);
    expect((await readdir(join(root, 'p1'))).sort()).toEqual(['.created-g3', '.created-g4', '.tmp-writing', 'g3', 'g4']);
    expect(guard.failures).toEqual([]);
  });

  it('does nothing for a project without workspaces', async () => {
    expect(await pruneWorkspaces(root, 'nope', 1, allFinished())).toEqual([]);
  });

  it('keeps the workspace of a generation still queued or running, however old, and removes the finished ones', async () => {
    // g1: a long build whose folder stopped changing hours ago, older than every finished run.
    await workspacesAged({ g1: 5 * hour, g2: 4 * hour, g3: 3 * hour, g4: 60 });
    const asked: string[][] = [];
    const guard: PruneGuard = {
      finishedAmong: async (ids) => {
        asked.push([...ids].sort());
        return new Set(ids.filter((id) => id !== 'g1'));
      },
      onFailure: (dir, error) => {
        throw error;
      },
    };

    expect((await pruneWorkspaces(root, 'p1', 1, guard)).sort()).toEqual(['g2', 'g3']);
    expect((await readdir(join(root, 'p1'))).sort()).toEqual(['.created-g1', '.created-g4', 'g1', 'g4']);
    expect(await readTree(join(root, 'p1', 'g1'))).toHaveProperty(['lib/main.dart'], 'parent main\n');
    // Only the workspaces past the newest `keep` are asked about.
    expect(asked).toEqual([['g1', 'g2', 'g3']]);
  });

  it('removes a workspace nested deeper than a path may be long, and every older one with it', async () => {
    await workspacesAged({ g1: 4 * hour, g2: 3 * hour, g3: 2 * hour, g4: 60 });
    // What a build can make: 3,000 nested folders, a path of 9,000 characters (Node's rm: ENAMETOOLONG),
    // made 1,000 at a time since no one path may be that long.
    const nest = 'p=$(printf "ab/%.0s" $(seq 1000)); for i in 1 2 3; do mkdir -p "$p" && cd -P "$p" || exit 1; done';
    const made = spawnSync('sh', ['-c', nest], { cwd: join(root, 'p1', 'g3') });
    expect(made.status, made.stderr.toString()).toBe(0);
    await age('g3', 2 * hour);

    const guard = allFinished();
    expect((await pruneWorkspaces(root, 'p1', 1, guard)).sort()).toEqual(['g1', 'g2', 'g3']);
    expect((await readdir(join(root, 'p1'))).sort()).toEqual(['.created-g4', 'g4']);
    expect(guard.failures).toEqual([]);
  });

  // As root, only an immutable file (chattr +i) resists removal; without the attribute there is nothing to test.
  const immutable = canMakeImmutable();
  it.skipIf(!immutable)('goes on with the older workspaces when one cannot be removed, and names the one it kept', async () => {
    await workspacesAged({ g1: 4 * hour, g2: 3 * hour, g3: 2 * hour, g4: 60 });
    const stuck = join(root, 'p1', 'g3', 'lib', 'main.dart');
    expect(spawnSync('chattr', ['+i', stuck]).status).toBe(0);
    try {
      await age('g3', 2 * hour);
      const guard = allFinished();
      expect((await pruneWorkspaces(root, 'p1', 1, guard)).sort()).toEqual(['g1', 'g2']);
      expect((await readdir(join(root, 'p1'))).sort()).toEqual(['.created-g3', '.created-g4', 'g3', 'g4']);
      expect(guard.failures).toEqual([join(root, 'p1', 'g3')]);
    } finally {
      spawnSync('chattr', ['-i', stuck]);
    }
  });

  it('removes one workspace', async () => {
    await createWorkspace(input({ generationId: 'g1' }));
    await createWorkspace(input({ generationId: 'g2' }));
    await removeWorkspace(root, 'p1', 'g1');
    expect((await readdir(join(root, 'p1'))).sort()).toEqual(['.created-g2', 'g2']);
  });

  it('goes by when Kiln made each workspace, which no build can change, not by the folder\'s mtime', async () => {
    await workspacesAged({ g1: 4 * hour, g2: 3 * hour, g3: 2 * hour });
    // What a build in g1 can do to its own folder: `touch -d 2100-01-01 .`.
    const future = Date.parse('2100-01-01T00:00:00Z') / 1000;
    await utimes(join(root, 'p1', 'g1'), future, future);

    const guard = allFinished();
    expect(await pruneWorkspaces(root, 'p1', 2, guard)).toEqual(['g1']);
    expect((await readdir(join(root, 'p1'))).sort()).toEqual(['.created-g2', '.created-g3', 'g2', 'g3']);
  });

  it('orders a workspace made without a marker (before Kiln wrote them) by the older of its mtime and ctime', async () => {
    // g0, made before the markers, its mtime set to 2100 by its build; its ctime, which only the kernel sets, is now.
    await createWorkspace(input({ generationId: 'g0' }));
    await rm(join(root, 'p1', '.created-g0'));
    const future = Date.parse('2100-01-01T00:00:00Z') / 1000;
    await utimes(join(root, 'p1', 'g0'), future, future);
    // Two made after that (an hour on, as this test has no hour to wait).
    await workspacesAged({ g1: -hour, g2: -2 * hour });

    expect(await pruneWorkspaces(root, 'p1', 2, allFinished())).toEqual(['g0']);
    expect((await readdir(join(root, 'p1'))).sort()).toEqual(['.created-g1', '.created-g2', 'g1', 'g2']);
  });
});

/** Whether this machine lets the test mark a file immutable (root, a filesystem with the attribute). */
function canMakeImmutable(): boolean {
  const dir = mkdtempSync(join(tmpdir(), 'kiln-chattr-'));
  const file = join(dir, 'probe');
  try {
    writeFileSync(file, '');
    if (spawnSync('chattr', ['+i', file]).status !== 0) return false;
    spawnSync('chattr', ['-i', file]);
    return true;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
