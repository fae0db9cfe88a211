import { createHash, randomBytes } from 'node:crypto';
import { eq } from 'drizzle-orm';
import { type JWTPayload, SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLocalAuth } from '../src/auth/local.js';
import type { AuthProvider } from '../src/auth/provider.js';
import { authSessions, localCredentials, refreshTokens, serverSecrets, users } from '../src/db/schema.js';
import { AuthError, ValidationError } from '../src/errors.js';
import { expectForgeriesRefused, PASSWORD, rejection, signInTests, signOutScopeTests, uniqueEmail } from './support/auth-contract.js';
import { createTestDatabase, type TestDatabase } from './support/db.js';

const SECRET = randomBytes(32).toString('base64url');

let database: TestDatabase;
/** Two instances started together on a fresh database: they must agree on the generated key. */
let auth: AuthProvider;
let twin: AuthProvider;
/** An instance with AUTH_JWT_SECRET set, so tests can sign tokens with the real key. */
let withSecret: AuthProvider;
const providers: AuthProvider[] = [];

async function provider(options: Partial<Parameters<typeof createLocalAuth>[0]> = {}): Promise<AuthProvider> {
  const created = await createLocalAuth({ db: database.db, accessTokenTtlSeconds: 3600, sessionMaxAgeSeconds: 2_592_000, ...options });
  providers.push(created);
  return created;
}

const userCount = () => database.db.$count(users);

beforeAll(async () => {
  database = await createTestDatabase();
  [auth, twin] = await Promise.all([provider(), provider()]);
  withSecret = await provider({ jwtSecret: SECRET });
});

afterAll(async () => {
  await Promise.all(providers.map((p) => p.close()));
  await database?.close();
});

describe('local auth: sign-up, sign-in, verify', () => {
  it('signs up and returns an access token that verifies to Supabase-shaped claims', async () => {
    const email = uniqueEmail();
    const session = await auth.signUp(`  ${email.toUpperCase()} `, PASSWORD);

    expect(session.user.email).toBe(email);
    const claims = await auth.verify(session.accessToken);
    expect(claims).toMatchObject({
      sub: session.user.id,
      role: 'authenticated',
      aud: 'authenticated',
      email,
      iss: 'kiln-local',
      session_id: expect.stringMatching(/^[0-9a-f-]{36}$/),
    });
    expect((claims.exp as number) - (claims.iat as number)).toBe(3600);
    expect(session.expiresAt.getTime()).toBe((claims.exp as number) * 1000);
    const [row] = await database.db.select().from(users).where(eq(users.id, session.user.id));
    expect(row?.email).toBe(email);
  });

  signInTests(() => auth);

  it('gives a wrong password and an unknown email the same AuthError', async () => {
    const email = uniqueEmail();
    await auth.signUp(email, PASSWORD);

    const wrongPassword = await rejection(auth.signIn(email, 'not the password at all'));
    const unknownEmail = await rejection(auth.signIn(uniqueEmail(), PASSWORD));
    for (const error of [wrongPassword, unknownEmail]) {
      expect(error).toBeInstanceOf(AuthError);
      expect((error as AuthError).message).toBe('Invalid email or password.');
    }
  });

  it('refuses a second account for an email, also when two sign-ups race', async () => {
    const email = uniqueEmail();
    const results = await Promise.allSettled([auth.signUp(email, PASSWORD), twin.signUp(email, PASSWORD)]);
    expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1);

    const errors = [
      ...results.flatMap((r) => (r.status === 'rejected' ? [r.reason as unknown] : [])),
      await rejection(auth.signUp(email.toUpperCase(), PASSWORD)),
    ];
    for (const error of errors) {
      expect(error).toBeInstanceOf(ValidationError);
      expect((error as ValidationError).fieldErrors).toEqual([{ path: ['email'], message: 'An account with this email already exists' }]);
    }
  });

  it('refuses bad input with field errors and creates no user', async () => {
    const before = await userCount();
    const cases: Array<[email: string, password: string, fields: string[]]> = [
      [uniqueEmail(), 'short', ['password']],
      [uniqueEmail(), 'x'.repeat(257), ['password']],
      ['not-an-email', PASSWORD, ['email']],
      [`${'a'.repeat(250)}@example.com`, PASSWORD, ['email']],
      ['', '', ['email', 'password']],
    ];
    for (const [email, password, fields] of cases) {
      const error = await rejection(auth.signUp(email, password));
      expect(error).toBeInstanceOf(ValidationError);
      expect((error as ValidationError).fieldErrors.map((f) => f.path[0])).toEqual(fields);
    }
    expect(await userCount()).toBe(before);
  });

  it('stores only a scrypt hash of the password and the SHA-256 of refresh tokens', async () => {
    const session = await auth.signUp(uniqueEmail(), PASSWORD);

    const [credentials] = await database.db.select().from(localCredentials).where(eq(localCredentials.userId, session.user.id));
    expect(credentials?.passwordHash).toMatch(/^scrypt\$32768\$8\$1\$[\w-]+\$[\w-]+$/);
    expect(credentials?.passwordHash).not.toContain(PASSWORD);
    const sessionId = (await auth.verify(session.accessToken)).session_id as string;
    const stored = await database.db.select().from(refreshTokens).where(eq(refreshTokens.sessionId, sessionId));
    expect(stored.map((t) => t.tokenHash)).toEqual([createHash('sha256').update(session.refreshToken).digest('hex')]);
  });
});

describe('local auth: refresh tokens', () => {
  it('rotates: each refresh gives new tokens in the same session', async () => {
    const first = await auth.signUp(uniqueEmail(), PASSWORD);
    const second = await auth.refresh(first.refreshToken);
    const third = await auth.refresh(second.refreshToken);

    expect(new Set([first.refreshToken, second.refreshToken, third.refreshToken]).size).toBe(3);
    const sessions = await Promise.all([first, second, third].map((s) => auth.verify(s.accessToken).then((c) => c.session_id)));
    expect(new Set(sessions).size).toBe(1);
  });

  it('revokes the whole session when a spent refresh token is used again', async () => {
    const first = await auth.signUp(uniqueEmail(), PASSWORD);
    const second = await auth.refresh(first.refreshToken);
    const sessionId = (await auth.verify(second.accessToken)).session_id as string;

    expect(await rejection(auth.refresh(first.refreshToken))).toBeInstanceOf(AuthError);

    expect(await rejection(auth.refresh(second.refreshToken))).toBeInstanceOf(AuthError);
    expect(await rejection(auth.verify(second.accessToken))).toBeInstanceOf(AuthError);
    const [session] = await database.db.select().from(authSessions).where(eq(authSessions.id, sessionId));
    expect(session?.revokedReason).toBe('refresh_token_reuse');
  });

  it('refuses unknown refresh tokens', async () => {
    for (const token of ['', 'garbage', randomBytes(32).toString('base64url')]) {
      expect(await rejection(auth.refresh(token))).toBeInstanceOf(AuthError);
    }
  });
});

describe('local auth: sign-out', () => {
  signOutScopeTests(() => ({ auth, another: () => twin }));
});

describe('local auth: tokens', () => {
  it('expires access tokens after their ttl (clock under test control)', async () => {
    let clock = Date.now();
    const shortLived = await provider({ accessTokenTtlSeconds: 1, now: () => clock });
    const session = await shortLived.signUp(uniqueEmail(), PASSWORD);
    await expect(shortLived.verify(session.accessToken)).resolves.toMatchObject({ sub: session.user.id });

    clock += 2000;
    expect(await rejection(shortLived.verify(session.accessToken))).toBeInstanceOf(AuthError);
    // A refresh still works and gives a token valid at the new time.
    const refreshed = await shortLived.refresh(session.refreshToken);
    await expect(shortLived.verify(refreshed.accessToken)).resolves.toMatchObject({ sub: session.user.id });
  });

  it('refuses forged, tampered, expired and malformed tokens', async () => {
    const secret = new TextEncoder().encode(SECRET);
    const sign = (payload: JWTPayload, alg = 'HS256', key: Uint8Array = secret) =>
      new SignJWT(payload).setProtectedHeader({ alg, typ: 'JWT' }).sign(key);
    await expectForgeriesRefused(withSecret, (claims) => sign(claims), async (_token, claims) => ({
      'wrong key': await sign(claims, 'HS256', randomBytes(32)),
      'HS512 with the real secret': await sign(claims, 'HS512'),
      'wrong issuer': await sign({ ...claims, iss: 'someone-else' }),
      'another role': await sign({ ...claims, role: 'service_role' }),
    }));
  });

  it('keeps the generated signing key in the database: other instances and restarts accept the tokens', async () => {
    const first = await provider();
    const session = await first.signUp(uniqueEmail(), PASSWORD);
    await first.close();

    await expect(twin.verify(session.accessToken)).resolves.toMatchObject({ sub: session.user.id });
    const restarted = await provider();
    await expect(restarted.verify(session.accessToken)).resolves.toMatchObject({ sub: session.user.id });
    await expect(restarted.refresh(session.refreshToken)).resolves.toMatchObject({ user: session.user });
    // A configured AUTH_JWT_SECRET is a different key: its instances refuse these tokens.
    expect(await rejection(withSecret.verify(session.accessToken))).toBeInstanceOf(AuthError);
    expect(await database.db.$count(serverSecrets)).toBe(1);
  });
});
