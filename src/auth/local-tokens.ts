import { jwtVerify, SignJWT } from 'jose';
import { z } from 'zod';
import type { Claims } from '../db/scope.js';
import { AuthError } from '../errors.js';

// Access tokens of the local provider: HS256 JWTs in Supabase's claim shape, so RLS
// policies and clients read them the same way whichever provider issued them.

export const LOCAL_ISSUER = 'kiln-local';
const AUDIENCE = 'authenticated';

export interface AccessTokenSubject {
  userId: string;
  email: string;
  sessionId: string;
}

/** Claims of a token that belongs to a session. */
export type SessionClaims = Claims & { session_id: string; email: string; exp: number };

const claimsSchema = z.looseObject({
  sub: z.uuid(),
  role: z.literal('authenticated'),
  email: z.string(),
  session_id: z.uuid(),
  exp: z.number(),
});

export async function signAccessToken(
  key: Uint8Array,
  subject: AccessTokenSubject,
  issuedAtSeconds: number,
  ttlSeconds: number,
): Promise<{ token: string; expiresAt: Date }> {
  const exp = issuedAtSeconds + ttlSeconds;
  const token = await new SignJWT({ role: 'authenticated', email: subject.email, session_id: subject.sessionId })
    .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
    .setSubject(subject.userId)
    .setAudience(AUDIENCE)
    .setIssuer(LOCAL_ISSUER)
    .setIssuedAt(issuedAtSeconds)
    .setExpirationTime(exp)
    .sign(key);
  return { token, expiresAt: new Date(exp * 1000) };
}

/** Signature, algorithm (HS256 only: `none` and others are refused), issuer, audience, expiry and shape. */
export async function verifyAccessToken(key: Uint8Array, token: string, now: Date): Promise<SessionClaims> {
  let payload: unknown;
  try {
    ({ payload } = await jwtVerify(token, key, {
      algorithms: ['HS256'],
      issuer: LOCAL_ISSUER,
      audience: AUDIENCE,
      currentDate: now,
    }));
  } catch {
    // Whatever is wrong with an untrusted token, the caller learns only that it is refused.
    throw new AuthError();
  }
  const parsed = claimsSchema.safeParse(payload);
  if (!parsed.success) throw new AuthError();
  return parsed.data;
}
