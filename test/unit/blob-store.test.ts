import { describe, expect, it } from 'vitest';
import { type BlobBytes, type BlobStore, putOneByOne, sha256Of } from '../../src/artifacts/blob-store.js';
import { storeOutputs } from '../../src/artifacts/write-outputs.js';

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

describe("a generation's outputs", () => {
  it('go to the store in batches of at most 100 files, or a little over 4 MB', async () => {
    const batches: { files: number; bytes: number }[] = [];
    const store = {
      putMany: async (blobs: readonly BlobBytes[]) => {
        batches.push({ files: blobs.length, bytes: blobs.reduce((sum, blob) => sum + blob.content.length, 0) });
        return blobs.map(() => true);
      },
    } as Pick<BlobStore, 'putMany'> as BlobStore;
    const mb = 1024 * 1024;
    const sources = [
      ...Array.from({ length: 250 }, (_, i) => ({ path: `small/${i}`, content: `${i}` })),
      ...Array.from({ length: 5 }, (_, i) => ({ path: `large/${i}`, content: String(i).repeat(1.5 * mb) })),
    ];
    const stored = await storeOutputs(store, 'generation', '/nonexistent', sources);
    expect(batches.map((batch) => batch.files)).toEqual([100, 100, 53, 2]);
    expect(batches[2]!.bytes).toBeGreaterThanOrEqual(4 * mb);
    expect(batches[2]!.bytes - 1.5 * mb).toBeLessThan(4 * mb);
    expect(stored.rows.map((row) => row.path)).toEqual(sources.map((file) => file.path));
  });
});

/** Lets the puts under way move on until `done` holds. */
async function until(done: () => boolean) {
  for (let turn = 0; turn < 100 && !done(); turn++) await new Promise((resolve) => setImmediate(resolve));
  expect(done()).toBe(true);
}
