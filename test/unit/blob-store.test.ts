import { execFile } from 'node:child_process';
import { chmod, mkdir, mkdtemp, rm, symlink, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { type BlobBytes, type BlobStore, putOneByOne, sha256Of } from '../../src/artifacts/blob-store.js';
import { BundleRefusedError, storeOutputs } from '../../src/artifacts/write-outputs.js';

// How a store that puts one blob at a time (files, Supabase Storage) serves putMany:
// equal blobs once, a few at a time, and a failure that leaves nothing running behind it.

const blob = (text: string): BlobBytes => ({ sha256: sha256Of(text), content: Buffer.from(text) });

describe('putting many blobs one at a time', () => {
  it('puts equal blobs once, and says only the first of them was new', async () => {
    const put: string[] = [];
    const present = blob('already there');
    const blobs = [blob('a'), present, blob('b'), blob('a'), present, blob('a')];
    const isNew = await putOneByOne(async ({ sha256 }) => {
      put.push(sha256);
      return sha256 !== present.sha256;
    })(blobs);
    expect(isNew).toEqual([true, false, true, false, false, false]);
    expect(put.sort()).toEqual([blob('a').sha256, present.sha256, blob('b').sha256].sort());
  });

  it('refuses a blob whose key is not a sha256, before putting any', async () => {
    let puts = 0;
    const bad = { sha256: '../../etc/passwd', content: Buffer.from('x') };
    await expect(putOneByOne(async () => ++puts > 0)([blob('a'), bad])).rejects.toThrow(/Not a sha256/);
    expect(puts).toBe(0);
  });

  it('keeps at most four under way, starts none after a failure, and rejects once those under way have ended', async () => {
    const blobs = Array.from({ length: 12 }, (_, i) => blob(`blob ${i}`));
    const started: number[] = [];
    const ended: number[] = [];
    let underWay = 0;
    let most = 0;
    const waiting = new Map<number, () => void>();
    const putting = putOneByOne(async ({ sha256 }) => {
      const i = blobs.findIndex((b) => b.sha256 === sha256);
      started.push(i);
      most = Math.max(most, ++underWay);
      await new Promise<void>((resolve) => waiting.set(i, resolve));
      underWay--;
      ended.push(i);
      if (i === 1) throw new Error('the store is full');
      return true;
    })(blobs);
    const outcome = putting.then(
      () => 'resolved',
      (error: Error) => error.message,
    );
    await until(() => waiting.size === 4);
    // Blob 1 fails while 0, 2 and 3 are still under way.
    waiting.get(1)!();
    await until(() => ended.includes(1));
    waiting.get(0)!();
    waiting.get(2)!();
    await until(() => ended.length === 3);
    expect(await Promise.race([outcome, Promise.resolve('still waiting')])).toBe('still waiting');
    waiting.get(3)!();
    expect(await outcome).toBe('the store is full');
    expect(started.sort((a, b) => a - b)).toEqual([0, 1, 2, 3]);
    expect(most).toBe(4);
  });
});

/** A store that only records the batches put into it. */
function recordingStore() {
  const batches: BlobBytes[][] = [];
  const store = {
    putMany: async (blobs: readonly BlobBytes[]) => {
      batches.push([...blobs]);
      return blobs.map(() => true);
    },
  } as Pick<BlobStore, 'putMany'> as BlobStore;
  return { store, batches };
}

const mb = 1024 * 1024;

describe("a generation's outputs", () => {
  it('go to the store in batches of at most 100 files, or a little over 4 MB', async () => {
    const { store, batches: put } = recordingStore();
    const batches = () => put.map((blobs) => ({ files: blobs.length, bytes: blobs.reduce((sum, blob) => sum + blob.content.length, 0) }));
    const sources = [
      ...Array.from({ length: 250 }, (_, i) => ({ path: `small/${i}`, content: `${i}` })),
      ...Array.from({ length: 5 }, (_, i) => ({ path: `large/${i}`, content: String(i).repeat(1.5 * mb) })),
    ];
    const stored = await storeOutputs(store, 'generation', '/nonexistent', sources);
    expect(batches().map((batch) => batch.files)).toEqual([100, 100, 53, 2]);
    expect(batches()[2]!.bytes).toBeGreaterThanOrEqual(4 * mb);
    expect(batches()[2]!.bytes - 1.5 * mb).toBeLessThan(4 * mb);
    expect(stored.rows.map((row) => row.path)).toEqual(sources.map((file) => file.path));
  });
});

// A preview keeps its bundle's paths in memory and reads a file whole: the build's untrusted
// output is refused, as BUILD_FAILED and with nothing stored, past what that can bear.
describe("a generation's outputs for a run that was stopped", () => {
  it('go to the store no more once the run is aborted', async () => {
    const { store, batches } = recordingStore();
    const sources = Array.from({ length: 250 }, (_, i) => ({ path: `lib/f${i}.dart`, content: `// ${i}\n` }));
    const run = new AbortController();
    const stored = storeOutputs(
      { ...store, putMany: async (blobs) => (run.abort('cancelled'), store.putMany(blobs)) },
      'generation',
      '/nonexistent',
      sources,
      run.signal,
    );
    await expect(stored).rejects.toBe('cancelled');
    // The batch under way when the run was stopped, and none after it.
    expect(batches).toHaveLength(1);
  });
});

describe('a web bundle past the limits', () => {
  let bundle: string;
  beforeEach(async () => {
    bundle = await mkdtemp(join(tmpdir(), 'kiln-bundle-'));
    await writeFile(join(bundle, 'index.html'), '<!doctype html><title>app</title>');
  });
  afterEach(async () => {
    await rm(bundle, { recursive: true, force: true });
  });

  const sources = [{ path: 'lib/main.dart', content: 'void main() {}\n' }];
  /** Folders of 250-byte names (a name's own limit is 255) under the bundle, `length` bytes of path in all. */
  const deepFolder = async (length: number) => {
    const names = Array.from({ length: Math.floor(length / 251) }, (_, i) => `${i}`.padEnd(250, 'd'));
    const last = length - names.length * 251;
    const path = last > 0 ? [...names, ''.padEnd(last, 'e')].join('/') : names.join('/');
    await mkdir(join(bundle, path), { recursive: true });
    return path;
  };
  const refused = async (reason: RegExp) => {
    const { store, batches } = recordingStore();
    const stored = storeOutputs(store, 'generation', bundle, sources);
    await expect(stored).rejects.toThrow(BundleRefusedError);
    await expect(stored).rejects.toMatchObject({ code: 'BUILD_FAILED', message: expect.stringMatching(reason) });
    expect(batches).toEqual([]);
  };

  it('refuses a path over 1,024 bytes, and keeps one of exactly that', async () => {
    const folder = await deepFolder(1024 - 'x.js'.length - 1);
    await writeFile(join(bundle, folder, 'x.js'), 'ok');
    const { store, batches } = recordingStore();
    const stored = await storeOutputs(store, 'generation', bundle, sources);
    expect(stored.rows.map((row) => Buffer.byteLength(row.path))).toContain(1024);
    expect(batches.flat()).toHaveLength(3);

    await writeFile(join(bundle, folder, 'xy.js'), 'one byte too long');
    await refused(/^The web bundle is too large to keep: the path "0d{99}\.\.\." is over 1024 bytes\.$/);
  });

  it('refuses paths of over 2 MB in all, even of empty files', async () => {
    const folder = await deepFolder(760);
    // 2,200 files of about 1,000 bytes of path each: 2.1 MB, far from the count and size limits.
    await Promise.all(Array.from({ length: 2200 }, (_, i) => writeFile(join(bundle, folder, `${i}`.padEnd(235, 'f')), '')));
    await refused(/^The web bundle is too large to keep: its paths are over 2 MB in all\.$/);
  });

  it('refuses over 10,000 entries, empty folders and links counted, and keeps exactly that many', async () => {
    // index.html and 9,999 empty folders: the limit, the walk's own work bounded by it.
    await Promise.all(Array.from({ length: 9_999 }, (_, i) => mkdir(join(bundle, `d${i}`))));
    const { store } = recordingStore();
    expect((await storeOutputs(store, 'generation', bundle, sources)).rows.map((row) => row.path)).toEqual(['lib/main.dart', 'index.html']);
    // A link is left behind, but its entry was listed all the same.
    await symlink('index.html', join(bundle, 'one-more'));
    await refused(/^The web bundle is too large to keep: over 10000 entries \(files, folders and links\)\.$/);
  });

  it('refuses a file or folder whose name is not UTF-8, which no path of the manifest could name', async () => {
    // Bytes the build's own code may write: node reads them back as U+FFFD, another name.
    const latin1 = Buffer.from('caf\xe9', 'latin1');
    await mkdir(join(bundle, 'assets'));
    await writeFile(Buffer.concat([Buffer.from(`${bundle}/assets/`), latin1, Buffer.from('.js')]), 'x');
    await refused(/^The web bundle holds a file name that is not UTF-8: "assets\/caf\\u\{fffd\}\.js"\.$/);
    await rm(join(bundle, 'assets'), { recursive: true });
    await mkdir(Buffer.concat([Buffer.from(`${bundle}/`), latin1]));
    await refused(/^The web bundle holds a file name that is not UTF-8: "caf\\u\{fffd\}"\.$/);
  });

  it('keeps a name that starts with a byte-order mark as the name it is, beside the one without', async () => {
    await writeFile(join(bundle, '\uFEFFindex.html'), 'marked');
    await mkdir(join(bundle, '\uFEFFassets'));
    await writeFile(join(bundle, '\uFEFFassets', 'a.js'), 'a');
    const { store, batches } = recordingStore();
    const stored = await storeOutputs(store, 'generation', bundle, []);
    expect(stored.rows.map((row) => row.path).sort()).toEqual(['index.html', '\uFEFFassets/a.js', '\uFEFFindex.html']);
    const blob = (path: string) => {
      const sha256 = stored.rows.find((row) => row.path === path)?.sha256;
      return batches.flat().find((put) => put.sha256 === sha256)?.content.toString();
    };
    expect([blob('\uFEFFindex.html'), blob('index.html')]).toEqual(['marked', '<!doctype html><title>app</title>']);
  });

  it('refuses a single file over 64 MB before reading it', async () => {
    // Sparse: its size, not its blocks.
    await writeFile(join(bundle, 'huge.wasm'), '');
    await truncate(join(bundle, 'huge.wasm'), 64 * mb + 1);
    await refused(/^The web bundle is too large to keep: "huge\.wasm" is over 64 MB\.$/);
  });
});

// A build's own code can take the permissions of what it leaves (a server that is not root
// runs its steps as its own user): the run then fails as the build's, not as Kiln's.
describe('a web bundle the build made unreadable', () => {
  let workspace: string;
  beforeEach(async () => {
    workspace = await mkdtemp(join(tmpdir(), 'kiln-bundle-'));
    await mkdir(join(workspace, 'build', 'web', 'assets'), { recursive: true });
    await writeFile(join(workspace, 'build', 'web', 'index.html'), '<!doctype html><title>app</title>');
    await writeFile(join(workspace, 'build', 'web', 'assets', 'main.js'), 'main()');
  });
  afterEach(async () => {
    await chmod(join(workspace, 'build'), 0o755);
    await chmod(join(workspace, 'build', 'web', 'assets'), 0o755);
    await rm(workspace, { recursive: true, force: true });
  });

  /** What storing build/web comes to for a user whom permissions bind: nobody when these tests run as root. */
  const storedAsUser = async () => {
    const asNobody = process.getuid?.() === 0 ? { uid: 65534, gid: 65534 } : {};
    if (asNobody.uid !== undefined) await chmod(workspace, 0o755);
    const script = fileURLToPath(new URL('../fixtures/store-bundle.ts', import.meta.url));
    const { stdout } = await promisify(execFile)(process.execPath, ['--import', 'tsx', script, workspace, 'build/web'], { ...asNobody, cwd: fileURLToPath(new URL('../..', import.meta.url)) });
    return JSON.parse(stdout) as { kept?: string[]; name?: string; code?: string; message?: string };
  };

  it('is kept whole while it is readable', async () => {
    expect(await storedAsUser()).toEqual({ kept: ['assets/main.js', 'index.html'] });
  });

  it('refuses it as BUILD_FAILED, naming what could not be read: a folder, a file, or a folder on the way to it', async () => {
    const refusal = (path: string) => ({ name: 'BundleRefusedError', code: 'BUILD_FAILED', message: `The web bundle could not be read: "${path}" (EACCES).` });
    await chmod(join(workspace, 'build', 'web', 'assets'), 0o000);
    expect(await storedAsUser()).toEqual(refusal('assets'));
    await chmod(join(workspace, 'build', 'web', 'assets'), 0o755);
    await chmod(join(workspace, 'build', 'web', 'assets', 'main.js'), 0o000);
    expect(await storedAsUser()).toEqual(refusal('assets/main.js'));
    await chmod(join(workspace, 'build'), 0o000);
    expect(await storedAsUser()).toEqual(refusal('build/web'));
  });
});

/** Lets the puts under way move on until `done` holds. */
async function until(done: () => boolean) {
  for (let turn = 0; turn < 100 && !done(); turn++) await new Promise((resolve) => setImmediate(resolve));
  expect(done()).toBe(true);
}
