import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { OutputProtocolError } from '../../src/generations/output-parser.js';
import { applyChanges } from '../../src/workspace/apply-changes.js';

// A fix round's answer lands in a workspace the build has already been through: what the
// build left there (dist/, read-only folders) must fail the run with a message naming the
// path, never an internal error.

const fs = vi.hoisted(() => ({ refuseOpen: undefined as string | undefined }));

vi.mock('node:fs/promises', async (importOriginal) => {
  const actual = await importOriginal<typeof import('node:fs/promises')>();
  return {
    ...actual,
    // Tests run as root here, which no file mode stops: a read-only folder's refusal is simulated.
    open: (path: string, ...rest: Parameters<typeof actual.open> extends [unknown, ...infer R] ? R : never) =>
      fs.refuseOpen && path.endsWith(fs.refuseOpen)
        ? Promise.reject(Object.assign(new Error(`EACCES: permission denied, open '${path}'`), { code: 'EACCES' }))
        : actual.open(path, ...rest),
  };
});

let dir: string;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'kiln-apply-'));
  await mkdir(join(dir, 'dist/assets'), { recursive: true });
  await writeFile(join(dir, 'dist/assets/index.js'), 'built');
  await writeFile(join(dir, 'README.md'), '# App\n');
});

afterEach(async () => {
  fs.refuseOpen = undefined;
  await rm(dir, { recursive: true, force: true });
});

describe('applyChanges', () => {
  it('refuses a file where the build left a folder, naming it, and leaves the folder as it was', async () => {
    const failure = applyChanges(dir, [{ type: 'file', path: 'dist', content: 'hello' }]);

    await expect(failure).rejects.toBeInstanceOf(OutputProtocolError);
    await expect(failure).rejects.toThrow(`The model's output writes "dist" but "dist" is a folder`);
    expect(await readFile(join(dir, 'dist/assets/index.js'), 'utf8')).toBe('built');
  });

  it('refuses a file in a folder it may not change, naming the file', async () => {
    fs.refuseOpen = 'dist/assets/index.js';
    const failure = applyChanges(dir, [{ type: 'file', path: 'dist/assets/index.js', content: 'patched' }]);

    await expect(failure).rejects.toBeInstanceOf(OutputProtocolError);
    await expect(failure).rejects.toThrow(/writes "dist\/assets\/index.js" but .*permission denied/);
  });

  it('leaves a folder named by <delete> as it is and does not report it deleted, as the first answer does', async () => {
    const { deleted } = await applyChanges(dir, [{ type: 'delete', path: 'dist' }]);

    expect(deleted).toEqual([]);
    expect(await readdir(join(dir, 'dist/assets'))).toEqual(['index.js']);
  });

  it('deletes a file, and takes a path through a file for one that is not there', async () => {
    const { deleted } = await applyChanges(dir, [
      { type: 'delete', path: 'dist/assets/index.js' },
      { type: 'delete', path: 'README.md/old.md' },
    ]);

    expect(deleted).toEqual(['dist/assets/index.js', 'README.md/old.md']);
    expect(await readdir(join(dir, 'dist/assets'))).toEqual([]);
    expect(await readFile(join(dir, 'README.md'), 'utf8')).toBe('# App\n');
  });
});
