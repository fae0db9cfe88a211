import { describe, expect, it } from 'vitest';
import { createPageCache } from '../../src/generations/page-cache.js';

// The history pages streams share. A full page is final and serves every stream; the
// short page at the end of what is written grows, so it serves only a stream that asks
// for what a read begun since a given moment saw: anything written later reaches that
// stream live (rows are written before they are published).

const rows = (from: number, count: number) => Array.from({ length: count }, (_, i) => ({ seq: from + i }));

describe('page cache', () => {
  it('serves a full page to anyone, and a short one only to a stream that asks for a read begun since a moment before it', () => {
    let clock = 0;
    const pages = createPageCache<{ seq: number }>(3, () => clock);
    pages.put('g', -1, rows(0, 3), 10);
    expect(pages.get('g', -1)).toEqual(rows(0, 3));
    expect(pages.get('g', -1, 50)).toEqual(rows(0, 3));

    pages.put('g', 2, rows(3, 2), 20);
    expect(pages.get('g', 2)).toBeUndefined(); // a stream with no moment to go by reads for itself
    expect(pages.get('g', 2, 20)).toEqual(rows(3, 2));
    expect(pages.get('g', 2, 21)).toBeUndefined(); // begun before this stream had reason to read

    // A later read of the short page replaces it; an earlier one, finishing late, does not.
    pages.put('g', 2, rows(3, 2).slice(0, 1), 15);
    expect(pages.get('g', 2, 20)).toEqual(rows(3, 2));
    pages.put('g', 2, rows(3, 3), 30);
    expect(pages.get('g', 2)).toEqual(rows(3, 3)); // now full: final
    pages.put('g', 2, rows(3, 2), 40);
    expect(pages.get('g', 2)).toEqual(rows(3, 3));

    // A full page is kept for 30 s after the read, a short one for 2 s.
    pages.put('g', 5, rows(6, 1), 50);
    clock = 2000;
    expect(pages.get('g', 5, 50)).toBeUndefined();
    expect(pages.get('g', -1)).toEqual(rows(0, 3));
    clock = 30_000;
    expect(pages.get('g', -1)).toBeUndefined();
    expect(pages.get('g', 2)).toBeUndefined();
    expect(pages.get('other', -1)).toBeUndefined();
  });

  it('never keeps an empty page: the member reads give one to a viewer who has lost access', () => {
    const pages = createPageCache<{ seq: number }>(3, () => 0);
    pages.put('g', 2, rows(3, 1), 10);
    pages.put('g', 2, [], 20);
    expect(pages.get('g', 2, 10)).toEqual(rows(3, 1));
    expect(pages.get('g', 2, 20)).toBeUndefined();
    pages.put('g', 7, [], 30);
    expect(pages.get('g', 7, 0)).toBeUndefined();
  });
});
