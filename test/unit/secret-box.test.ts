import { mkdtemp, readdir, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { loadEncryptionKey } from '../../src/projects/secret-box.js';

// DATA_DIR on a filesystem without hard links (some network or FUSE mounts): link() fails
// with EPERM there, as it does here for every call.
vi.mock('node:fs/promises', async (original) => ({
  ...(await original<typeof import('node:fs/promises')>()),
  link: () => Promise.reject(Object.assign(new Error('EPERM: operation not permitted, link'), { code: 'EPERM' })),
}));

const dirs: string[] = [];
afterEach(async () => {
  for (const dir of dirs.splice(0)) await rm(dir, { recursive: true, force: true });
});

describe('the embedded encryption key file, where hard links are not allowed', () => {
  it('is still generated once and private, and read back at the next start', async () => {
    const dataDir = await mkdtemp(path.join(tmpdir(), 'kiln-key-nolink-'));
    dirs.push(dataDir);
    const key = await loadEncryptionKey({ dataDir, embedded: true });
    const file = path.join(dataDir, 'encryption.key');
    expect(Buffer.from(await readFile(file, 'utf8'), 'base64').equals(key!)).toBe(true);
    expect((await stat(file)).mode & 0o777).toBe(0o600);
    expect(await readdir(dataDir)).toEqual(['encryption.key']);
    expect((await loadEncryptionKey({ dataDir, embedded: true }))!.equals(key!)).toBe(true);
  });
});
