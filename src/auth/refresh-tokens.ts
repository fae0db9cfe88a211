import { createHash, randomBytes } from 'node:crypto';

// Refresh tokens are opaque random strings; only their SHA-256 is stored, so a leaked
// database does not hand out sessions. (32 random bytes need no slow hash.)

export function newRefreshToken(): { token: string; tokenHash: string } {
  const token = randomBytes(32).toString('base64url');
  return { token, tokenHash: hashRefreshToken(token) };
}

export function hashRefreshToken(token: string): string {
  return createHash('sha256').update(token).digest('hex');
}
