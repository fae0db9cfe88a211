import { describe, expect, it } from 'vitest';
import { manifestCache } from '../../src/artifacts/manifest-cache.js';
import type { ArtifactEntry } from '../../src/artifacts/manifest-store.js';

// The manifests a preview server keeps in memory: a bundle may hold 10,000 files with long
// paths, so a cap on how many are kept alone would let a few bundles take gigabytes.

const sha256 = 'a'.repeat(64);
/** A manifest of `files` entries whose paths are `pathLength` characters long. */
const entries = (files: number, pathLength: number): ArtifactEntry[] =>
  Array.from({ length: files }, (_, i) => ({ path: `${i}/`.padEnd(pathLength, 'p'), sha256, size: 0 }));

describe('the manifest cache', () => {
  it('keeps manifests within its byte budget as well as its count, dropping the oldest first', () => {
    const cache = manifestCache({ ttlMs: 60_000, entries: 200, bytes: 1024 * 1024 });
    // About 220 KB each: four fit in a megabyte, five do not.
    for (const id of ['a', 'b', 'c', 'd', 'e']) cache.set(id, entries(100, 1000));
    expect(['a', 'b', 'c', 'd', 'e'].map((id) => cache.get(id) !== undefined)).toEqual([false, true, true, true, true]);
    expect(cache.get('e')?.get(`0/`.padEnd(1000, 'p'))).toEqual({ path: `0/`.padEnd(1000, 'p'), sha256, size: 0 });

    // Small ones up to the count.
    for (let i = 0; i < 200; i++) cache.set(`small ${i}`, entries(2, 20));
    expect(cache.get('e')).toBeUndefined();
    expect(cache.get('small 0')).toBeDefined();
  });

  it('serves, but does not keep, a manifest over the whole budget, and keeps the others', () => {
    const cache = manifestCache({ ttlMs: 60_000, entries: 200, bytes: 1024 * 1024 });
    cache.set('kept', entries(10, 100));
    const huge = cache.set('huge', entries(1000, 1000));
    expect(huge.size).toBe(1000);
    expect(cache.get('huge')).toBeUndefined();
    expect(cache.get('kept')).toBeDefined();
  });
});
