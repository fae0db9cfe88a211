import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { type ArchiveEntry, type ArchiveFormat, writeArchive } from '../../src/artifacts/archive.js';

// A download whose file cannot be read (a store that failed, a file a fix round replaced
// meanwhile) fails that download: the response is cut, and the server goes on.

const file = (path: string, text: string): ArchiveEntry => ({ path, size: Buffer.byteLength(text), content: async () => Buffer.from(text) });

async function written(format: ArchiveFormat, entries: ArchiveEntry[]) {
  const out = new PassThrough();
  out.resume();
  return writeArchive(format, entries, new Date(), out);
}

describe('writeArchive', () => {
  it.each(['ZIP', 'TAR_GZ'] as const)('%s: fails the download when a file cannot be read', async (format) => {
    const missing: ArchiveEntry = { path: 'lib/missing.dart', size: 3, content: () => Promise.reject(new Error('the blob is gone')) };
    await expect(written(format, [file('README.md', 'hi'), missing])).rejects.toThrow('the blob is gone');
  });

  it('ZIP: fails the download when a file is no longer the size it had when the download began', async () => {
    const changed: ArchiveEntry = { path: 'lib/main.dart', size: 5, content: async () => Buffer.from('void main() {}\n') };
    await expect(written('ZIP', [changed])).rejects.toThrow(/unexpected number of bytes/);
  });
});
