import { randomBytes, scrypt, scryptSync } from 'node:crypto';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { hashPassword, UNKNOWN_USER_HASH, verifyPassword } from '../../src/auth/passwords.js';

// scrypt is spied on, so a test can tell whether a stored hash was ever handed to the KDF;
// the real one runs unless a test sets `fake.key`, which every call then answers at once.
const fake = vi.hoisted(() => ({ key: undefined as Buffer | undefined }));
vi.mock('node:crypto', async (original) => {
  const actual = await original<typeof import('node:crypto')>();
  const spy = (...args: Parameters<typeof actual.scrypt>) => {
    const callback = args.at(-1) as (error: Error | null, key: Buffer) => void;
    if (fake.key) callback(null, fake.key);
    else (actual.scrypt as (...a: unknown[]) => void)(...args);
  };
  return { ...actual, scrypt: vi.fn(spy) };
});
const scryptSpy = vi.mocked(scrypt);

afterEach(() => {
  fake.key = undefined;
  scryptSpy.mockClear();
});

const PASSWORD = 'correct horse battery staple';

function stored(N: number, r: number, p: number, hash: Buffer, salt = randomBytes(16)): string {
  return ['scrypt', N, r, p, salt.toString('base64url'), hash.toString('base64url')].join('$');
}

describe('password hashes', () => {
  it('hashes with today’s parameters (N=2^15, r=8, p=1) and verifies only the right password', async () => {
    const hash = await hashPassword(PASSWORD);
    expect(hash).toMatch(/^scrypt\$32768\$8\$1\$[\w-]{22}\$[\w-]{43}$/);
    expect(await verifyPassword(PASSWORD, hash)).toBe(true);
    expect(await verifyPassword('not the password', hash)).toBe(false);
    expect(await verifyPassword(PASSWORD, UNKNOWN_USER_HASH)).toBe(false);
    expect(scryptSpy).toHaveBeenCalledTimes(4);
  });

  it('verifies hashes stored with other parameters within the bounds, with the real KDF', async () => {
    for (const [N, r, p] of [
      [16, 1, 4],
      [1024, 8, 1],
      [2 ** 14, 8, 2],
    ] as const) {
      const salt = randomBytes(16);
      const hash = stored(N, r, p, scryptSync(PASSWORD, salt, 32, { N, r, p, maxmem: 64 * 1024 * 1024 }), salt);
      expect(await verifyPassword(PASSWORD, hash), hash).toBe(true);
      expect(await verifyPassword('not the password', hash), hash).toBe(false);
    }
  });

  it('hands a hash at the bounds (128·N·r = 64 MiB, p = 4, N just under 2^(16·r)) to scrypt', async () => {
    for (const [N, r, p] of [
      [2 ** 15, 1, 4],
      [2 ** 16, 8, 1],
      [2 ** 13, 64, 1],
    ] as const) {
      fake.key = randomBytes(32);
      expect(await verifyPassword(PASSWORD, stored(N, r, p, fake.key))).toBe(true);
      expect(scryptSpy).toHaveBeenLastCalledWith(PASSWORD, expect.any(Buffer), 32, expect.objectContaining({ N, r, p }), expect.any(Function));
    }
    expect(scryptSpy).toHaveBeenCalledTimes(3);
  });

  it('treats a hash whose parameters would cost gigabytes or minutes as no match, without running scrypt', async () => {
    const cases: Array<[what: string, N: number, r: number, p: number]> = [
      ['8 GiB (N=2^20, r=64)', 2 ** 20, 64, 1],
      ['128 MiB (N=2^20, r=1)', 2 ** 20, 1, 1],
      ['128 MiB (N=2^19, r=2)', 2 ** 19, 2, 1],
      ['p = 5', 16, 1, 5],
      ['p = 64', 2 ** 15, 8, 64],
      ['r = 65', 16, 65, 1],
      ['N not a power of two', 3 * 2 ** 10, 8, 1],
      ['N = 2^32 (a power of two beyond 32-bit arithmetic)', 2 ** 32, 1, 1],
      ['N = 2^16 with r = 1 (OpenSSL refuses N ≥ 2^(16·r): the sign-in would fail)', 2 ** 16, 1, 1],
      ['N = 2^19 with r = 1, within 64 MiB', 2 ** 19, 1, 1],
    ];
    for (const [what, N, r, p] of cases) {
      // Had scrypt been asked, it would have "matched" (and allocated nothing): only the bounds can make this false.
      fake.key = randomBytes(32);
      expect(await verifyPassword(PASSWORD, stored(N, r, p, fake.key)), what).toBe(false);
    }
    expect(scryptSpy).not.toHaveBeenCalled();
  });
});
