import { createRemoteJWKSet, errors, type JWTVerifyGetKey, jwtVerify } from 'jose';
import { z } from 'zod';
import { AuthError } from '../errors.js';
import type { Claims } from '../db/scope.js';

export type SupabaseClaims = Claims & { email: string; session_id: string; exp: number };

// Kiln's users sign in by email. Anonymous and phone sign-ins on the same project (open to
// anyone with the public anon key) carry no email (GoTrue sends ""): refused like a bad token,
// since such a user has no profile row for their writes to refer to.
const claimsSchema = z.looseObject({
  sub: z.string().min(1),
  role: z.literal('authenticated'),
  email: z.string().min(1),
  is_anonymous: z.literal(false).optional(),
  session_id: z.string().min(1),
  exp: z.number(),
});

/**
 * Verifies Supabase access tokens: asymmetric keys from the project's JWKS (fetched
 * and cached by jose), or the legacy HS256 secret when one is configured. Anon and
 * service-role keys are JWTs too; the audience and role checks refuse them, as the
 * claims check refuses anonymous users and users without an email.
 */
export function createSupabaseTokenVerifier(supabaseUrl: string, jwtSecret?: string) {
  const jwks = createRemoteJWKSet(supabaseAuthUrl(supabaseUrl, '.well-known/jwks.json'));
  const secret = jwtSecret ? new TextEncoder().encode(jwtSecret) : undefined;
  // HS256 only with a configured secret: otherwise a token signed with a public key as HMAC secret could pass.
  const algorithms = secret ? ['ES256', 'RS256', 'HS256'] : ['ES256', 'RS256'];
  const keyFor: JWTVerifyGetKey = (header, token) => (header.alg === 'HS256' && secret ? secret : jwks(header, token));

  return async function verify(token: string, now: Date): Promise<SupabaseClaims> {
    let payload: unknown;
    try {
      ({ payload } = await jwtVerify(token, keyFor, { algorithms, audience: 'authenticated', currentDate: now }));
    } catch (error) {
      if (isKeySetOutage(error)) throw error;
      throw new AuthError();
    }
    const parsed = claimsSchema.safeParse(payload);
    if (!parsed.success) throw new AuthError();
    return parsed.data;
  };
}

/** The key set could not be fetched: our outage, not a bad token (unexpected, so masked, not a sign-out). */
function isKeySetOutage(error: unknown): boolean {
  if (!(error instanceof errors.JOSEError)) return true;
  // A bare JOSEError is jose's "not 200 OK" from the JWKS endpoint.
  return error instanceof errors.JWKSTimeout || error instanceof errors.JWKSInvalid || error.code === 'ERR_JOSE_GENERIC';
}

/** `<project>/auth/v1/<path>`, keeping any path prefix of the project URL (as supabase-js does). */
export function supabaseAuthUrl(supabaseUrl: string, path: string): URL {
  const base = supabaseUrl.endsWith('/') ? supabaseUrl : `${supabaseUrl}/`;
  return new URL(`auth/v1/${path}`, base);
}
