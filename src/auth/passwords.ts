import { randomBytes, scrypt, type ScryptOptions, timingSafeEqual } from 'node:crypto';
import { createKdfLimiter } from './kdf-limiter.js';

// scrypt is memory-hard; the stored string names its parameters
// (`scrypt$N$r$p$salt$hash`), so they can be raised later without breaking old hashes.

interface ScryptParams {
  N: number;
  r: number;
  p: number;
}

const CURRENT: ScryptParams = { N: 2 ** 15, r: 8, p: 1 };
const SALT_BYTES = 16;
const KEY_BYTES = 32;
// Stored hashes are ours, but a corrupted row must not make us allocate gigabytes or spin
// for minutes: scrypt needs about 128·N·r bytes and its work grows with N·r·p, so both are
// bounded (twice today's memory; p as today's hashes need, or 4). Outside: no match.
const MAX_MEMORY_BYTES = 64 * 1024 * 1024;
const MAX_P = Math.max(4, CURRENT.p);
const MAX_R = 64;
// Every hash of the process goes through one limiter (sign-ups, sign-ins, unknown users alike,
// so a refusal or a wait says nothing about which emails exist): the threadpool is the
// process's. 2 of its 4 threads, so file reads keep moving; 32 waiting is about a second.
const kdfLimiter = createKdfLimiter({ concurrency: 2, maxWaiting: 32 });

/** A well-formed hash that matches no password: checked when a user does not exist, so that costs the same time. */
export const UNKNOWN_USER_HASH = formatHash(CURRENT, Buffer.alloc(SALT_BYTES), Buffer.alloc(KEY_BYTES));

export async function hashPassword(password: string): Promise<string> {
  const salt = randomBytes(SALT_BYTES);
  return formatHash(CURRENT, salt, await derive(password, salt, CURRENT, KEY_BYTES));
}

export async function verifyPassword(password: string, stored: string): Promise<boolean> {
  const parsed = parseHash(stored);
  if (!parsed) return false;
  const derived = await derive(password, parsed.salt, parsed.params, parsed.hash.length);
  return timingSafeEqual(derived, parsed.hash);
}

function derive(password: string, salt: Buffer, { N, r, p }: ScryptParams, keyLength: number): Promise<Buffer> {
  // Node refuses above maxmem (default 32 MiB): this is what OpenSSL asks for (V and B), within the bounds of parseHash.
  const options: ScryptOptions = { N, r, p, maxmem: 128 * r * (N + 2 + p) };
  return kdfLimiter.run(
    () =>
      new Promise<Buffer>((resolve, reject) => {
        // NFKC, so the same password typed on different keyboards hashes the same (NIST SP 800-63B).
        scrypt(password.normalize('NFKC'), salt, keyLength, options, (error, key) => (error ? reject(error) : resolve(key)));
      }),
  );
}

function formatHash({ N, r, p }: ScryptParams, salt: Buffer, hash: Buffer): string {
  return ['scrypt', N, r, p, salt.toString('base64url'), hash.toString('base64url')].join('$');
}

function parseHash(stored: string): { params: ScryptParams; salt: Buffer; hash: Buffer } | undefined {
  const [scheme, n, r, p, salt, hash, ...rest] = stored.split('$');
  if (scheme !== 'scrypt' || rest.length > 0 || !salt || !hash) return undefined;
  const params = { N: Number(n), r: Number(r), p: Number(p) };
  if (!withinBounds(params)) return undefined;
  return { params, salt: Buffer.from(salt, 'base64url'), hash: Buffer.from(hash, 'base64url') };
}

function withinBounds({ N, r, p }: ScryptParams): boolean {
  const powerOfTwo = Number.isInteger(N) && N > 1 && (N & (N - 1)) === 0;
  // N below 2^(16·r): OpenSSL refuses the rest, which would fail the sign-in rather than not match.
  return powerOfTwo && N < 2 ** (16 * r) && isPositiveUpTo(r, MAX_R) && isPositiveUpTo(p, MAX_P) && 128 * N * r <= MAX_MEMORY_BYTES;
}

function isPositiveUpTo(value: number, max: number): boolean {
  return Number.isInteger(value) && value >= 1 && value <= max;
}
