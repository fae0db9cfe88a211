import { randomUUID } from 'node:crypto';
import { decodeJwt, type JWTPayload } from 'jose';
import { expect, it } from 'vitest';
import type { AuthProvider } from '../../src/auth/provider.js';
import { AuthError } from '../../src/errors.js';

// What every AuthProvider promises, whichever authority stands behind it (local or
// Supabase): the suites of both run these against their own provider.

export const PASSWORD = 'correct horse battery staple';
export const uniqueEmail = () => `user-${randomUUID()}@example.com`;

/** The error a promise rejects with; the test fails if it resolves. */
export async function rejection(promise: Promise<unknown>): Promise<unknown> {
  return promise.then(
    () => expect.fail('expected a rejection'),
    (error: unknown) => error,
  );
}

/**
 * Refuses with AuthError what can be forged from a real session's token for any provider
 * (no algorithm, a tampered payload, expired, another audience, no session or one that
 * never existed, garbage) and the provider's own `forged` tokens. `sign` signs claims as
 * the provider's authority does; `forged` gets the real token and its claims.
 */
export async function expectForgeriesRefused(
  auth: AuthProvider,
  sign: (claims: JWTPayload) => Promise<string>,
  forged: (token: string, claims: JWTPayload) => Promise<Record<string, string>>,
) {
  const session = await auth.signUp(uniqueEmail(), PASSWORD);
  const victim = await auth.signUp(uniqueEmail(), PASSWORD);
  const claims = decodeJwt(session.accessToken);
  const base64url = (value: object) => Buffer.from(JSON.stringify(value)).toString('base64url');
  const [header, , signature] = session.accessToken.split('.');
  const now = Math.floor(Date.now() / 1000);

  // The crafting is right: the same claims, signed as the authority does, verify.
  await expect(auth.verify(await sign(claims))).resolves.toMatchObject({ sub: session.user.id });

  const tokens = {
    ...(await forged(session.accessToken, claims)),
    'alg none': `${base64url({ alg: 'none', typ: 'JWT' })}.${base64url(claims)}.`,
    'tampered payload': `${header}.${base64url({ ...claims, sub: victim.user.id })}.${signature}`,
    expired: await sign({ ...claims, iat: now - 7200, exp: now - 3600 }),
    'wrong audience': await sign({ ...claims, aud: 'anon' }),
    'no session': await sign({ ...claims, session_id: undefined }),
    'a session that never existed': await sign({ ...claims, session_id: randomUUID() }),
    empty: '',
    garbage: 'garbage',
    'three garbage parts': 'a.b.c',
  };
  for (const [name, token] of Object.entries(tokens)) {
    expect(await rejection(auth.verify(token)), name).toBeInstanceOf(AuthError);
  }
}

/** Sign-in as every provider does it; `provider` is read when the tests run. */
export function signInTests(provider: () => AuthProvider) {
  it('signs in with any case of the email, in a new session', async () => {
    const auth = provider();
    const email = uniqueEmail();
    const first = await auth.signUp(email, PASSWORD);
    const second = await auth.signIn(email.toUpperCase(), PASSWORD);

    const [a, b] = await Promise.all([auth.verify(first.accessToken), auth.verify(second.accessToken)]);
    expect(b.sub).toBe(a.sub);
    expect(b.session_id).not.toBe(a.session_id);
  });
}

/**
 * The three sign-out scopes, on two sessions of one user. `auth` is the provider under
 * test and `another` a second instance on the same authority (another server), which
 * must see a LOCAL sign-out too. Both are read when the tests run.
 */
export function signOutScopeTests(providers: () => { auth: AuthProvider; another: () => AuthProvider | Promise<AuthProvider> }) {
  async function twoSessions() {
    const { auth } = providers();
    const email = uniqueEmail();
    const current = await auth.signUp(email, PASSWORD);
    const other = await auth.signIn(email, PASSWORD);
    // Both sessions are checked (and remembered as live where a provider caches) before the sign-out.
    const [claims] = await Promise.all([auth.verify(current.accessToken), auth.verify(other.accessToken)]);
    return { auth, current, other, claims };
  }

  it('LOCAL ends this session at once, refresh token included, on this instance and another, and leaves the others', async () => {
    const { auth, current, other, claims } = await twoSessions();
    await auth.signOut(claims, current.accessToken, 'LOCAL');

    expect(await rejection(auth.verify(current.accessToken))).toBeInstanceOf(AuthError);
    expect(await rejection((await providers().another()).verify(current.accessToken))).toBeInstanceOf(AuthError);
    expect(await rejection(auth.refresh(current.refreshToken))).toBeInstanceOf(AuthError);
    await expect(auth.verify(other.accessToken)).resolves.toMatchObject({ sub: claims.sub });
  });

  it('GLOBAL ends every session of the user', async () => {
    const { auth, current, other, claims } = await twoSessions();
    await auth.signOut(claims, current.accessToken, 'GLOBAL');

    for (const session of [current, other]) {
      expect(await rejection(auth.verify(session.accessToken))).toBeInstanceOf(AuthError);
      expect(await rejection(auth.refresh(session.refreshToken))).toBeInstanceOf(AuthError);
    }
  });

  it('OTHERS ends every other session and keeps this one, refresh token included', async () => {
    const { auth, current, other, claims } = await twoSessions();
    await auth.signOut(claims, current.accessToken, 'OTHERS');

    await expect(auth.verify(current.accessToken)).resolves.toMatchObject({ session_id: claims.session_id });
    expect(await rejection(auth.verify(other.accessToken))).toBeInstanceOf(AuthError);
    await expect(auth.refresh(current.refreshToken)).resolves.toMatchObject({ user: { id: claims.sub } });
  });
}
