import { mkdtemp, readdir, rm, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { sha256Of } from '../../src/artifacts/blob-store.js';
import { DownloadsBusyError, type Pruned, localBlobCache } from '../../src/artifacts/local-cache.js';

// The local copies of remote blobs an instance serves previews from take bounded disk: past
// the bound the least recently used go, and a prune takes copies unused for a while. Their
// downloads take turns by generation, so one bundle's many files hold up no other preview.

const dirs: string[] = [];
afterEach(async () => {
  for (const dir of dirs.splice(0)) await rm(dir, { recursive: true, force: true });
});

const hoursAgo = (hours: number) => new Date(Date.now() - hours * 60 * 60 * 1000);

async function cacheOf(options: { maxBytes?: number } = {}) {
  const dir = await mkdtemp(join(tmpdir(), 'kiln-local-cache-'));
  dirs.push(dir);
  const pruned: Pruned[] = [];
  const cache = localBlobCache(dir, { ...options, onPruned: (result) => pruned.push(result) });
  /** Downloads a blob of `size` bytes (unless its copy is there, which it touches) and resolves to its sha256. */
  const use = async (label: string, size = 300) => {
    const content = Buffer.alloc(size, label);
    const sha256 = sha256Of(content);
    await cache.path(sha256, async () =>
      (async function* () {
        yield content;
      })(),
    );
    return sha256;
  };
  const usedAt = (sha256: string, at: Date) => utimes(join(dir, sha256), at, at);
  const copies = async () => (await readdir(dir)).sort();
  return { dir, cache, pruned, use, usedAt, copies };
}

describe('the local copies of remote blobs', () => {
  it('let the least recently used go once a download takes them past their bound', async () => {
    const { cache, pruned, use, usedAt, copies } = await cacheOf({ maxBytes: 1000 });
    await cache.prune();
    const [a, b, c] = [await use('a'), await use('b'), await use('c')];
    await usedAt(a, hoursAgo(3));
    await usedAt(b, hoursAgo(2));
    await usedAt(c, hoursAgo(1));
    // Serving `a` again makes it the most recently used.
    await use('a');

    // 1,200 bytes: `b`, the least recently used, goes, and the rest fit a tenth below the bound.
    const d = await use('d');
    // After the prune that download started.
    await cache.prune();
    expect(await copies()).toEqual([a, c, d].sort());
    expect(pruned).toEqual([
      { removed: 0, bytes: 0 },
      { removed: 1, bytes: 900 },
      { removed: 0, bytes: 900 },
    ]);
  });

  it('prunes copies unused since a moment, and a download that never finished, keeping what was used since', async () => {
    const { dir, cache, use, usedAt, copies } = await cacheOf();
    const [old, recent] = [await use('old'), await use('recent')];
    await usedAt(old, hoursAgo(30));
    await usedAt(recent, hoursAgo(2));
    const abandoned = join(dir, '.tmp-abandoned');
    await writeFile(abandoned, 'half a blob');
    await utimes(abandoned, hoursAgo(30), hoursAgo(30));
    await writeFile(join(dir, '.tmp-under-way'), 'a blob being written');

    await cache.prune(hoursAgo(24));
    expect(await copies()).toEqual(['.tmp-under-way', recent].sort());
    expect(await cache.prune(hoursAgo(24))).toEqual({ removed: 0, bytes: 300 });
  });
});

describe('downloads of remote blobs', () => {
  it('take turns round the generations asking, with a few waiting for each at most', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'kiln-local-cache-'));
    dirs.push(dir);
    // Told when a request has joined a queue: requests are made one after the other, as they would
    // come, never all at once (each first looks for its copy on disk, which ends in any order).
    let joined: (() => void) | undefined;
    const cache = localBlobCache(dir, { remoteReads: 1, waitingPerGeneration: 3, onWaiting: () => joined?.() });
    // The downloads as they begin, each waiting until the test lets it go on.
    const begun: string[] = [];
    const waiters: ((label: string) => void)[] = [];
    const releases = new Map<string, () => void>();
    const nextBegun = () => new Promise<string>((resolve) => (begun.length > 0 ? resolve(begun.shift()!) : waiters.push(resolve)));
    /** Asks for the blob `label` as `generationId`'s preview. */
    const ask = (generationId: string, label: string) => {
      const content = Buffer.from(label);
      return cache.path(
        sha256Of(content),
        async () => {
          await new Promise<void>((resolve) => {
            releases.set(label, resolve);
            const waiter = waiters.shift();
            if (waiter) waiter(label);
            else begun.push(label);
          });
          return (async function* () {
            yield content;
          })();
        },
        generationId,
      );
    };

    /** Asks, and resolves once the request waits in its generation's queue. */
    const inLine = async (generationId: string, label: string) => {
      const waiting = new Promise<void>((resolve) => (joined = resolve));
      const request = ask(generationId, label);
      await waiting;
      return { request };
    };

    // One generation asks for five files: one downloads, three wait, the fifth is told to come back.
    const first = ask('a', 'a1');
    expect(await nextBegun()).toBe('a1');
    const waiting = [(await inLine('a', 'a2')).request, (await inLine('a', 'a3')).request, (await inLine('a', 'a4')).request];
    await expect(ask('a', 'a5')).rejects.toBeInstanceOf(DownloadsBusyError);
    // Another generation's first file comes next, not after the first one's.
    const { request: other } = await inLine('b', 'b1');
    const order: string[] = [];
    releases.get('a1')!();
    for (let turn = 0; turn < 4; turn++) {
      const label = await nextBegun();
      order.push(label);
      releases.get(label)!();
    }
    expect(order).toEqual(['b1', 'a2', 'a3', 'a4']);
    expect(await other).toBe(join(dir, sha256Of('b1')));
    expect(await Promise.all([first, ...waiting])).toEqual(['a1', 'a2', 'a3', 'a4'].map((label) => join(dir, sha256Of(label))));
  });
});
