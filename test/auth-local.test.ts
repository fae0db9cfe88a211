import { createHash, randomBytes } from 'node:crypto';
import { eq, inArray, sql } from 'drizzle-orm';
import { type JWTPayload, SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { createLocalAuth, type LocalAuth } from '../src/auth/local.js';
import { createAccount, REFRESH_TOKEN_REUSE_INTERVAL_SECONDS } from '../src/auth/local-store.js';
import { hashPassword } from '../src/auth/passwords.js';
import type { AuthProvider, AuthSession } from '../src/auth/provider.js';
import { hashRefreshToken } from '../src/auth/refresh-tokens.js';
import { authSessions, localCredentials, refreshTokens, serverSecrets, users } from '../src/db/schema.js';
import { AuthError, ValidationError } from '../src/errors.js';
import { createLogger } from '../src/observability/logger.js';
import { expectForgeriesRefused, PASSWORD, rejection, signInTests, signOutScopeTests, uniqueEmail } from './support/auth-contract.js';
import { createTestDatabase, type TestDatabase } from './support/db.js';
import { LogCapture } from './support/log-capture.js';

const SECRET = randomBytes(32).toString('base64url');

let database: TestDatabase;
/** Two instances started together on a fresh database: they must agree on the generated key. */
let auth: LocalAuth;
let twin: LocalAuth;
/** An instance with AUTH_JWT_SECRET set, so tests can sign tokens with the real key. */
let withSecret: AuthProvider;
const providers: AuthProvider[] = [];

async function provider(options: Partial<Parameters<typeof createLocalAuth>[0]> = {}): Promise<LocalAuth> {
  const created = await createLocalAuth({ db: database.db, accessTokenTtlSeconds: 3600, sessionMaxAgeSeconds: 2_592_000, ...options });
  providers.push(created);
  return created;
}

const userCount = () => database.db.$count(users);

/** Moves a spent refresh token's use back past the reuse interval: a replay now comes too late to be a retry. */
const spentBeforeReuseInterval = (refreshToken: string) =>
  database.db
    .update(refreshTokens)
    .set({ usedAt: sql`${refreshTokens.usedAt} - ${REFRESH_TOKEN_REUSE_INTERVAL_SECONDS + 1} * interval '1 second'` })
    .where(eq(refreshTokens.tokenHash, hashRefreshToken(refreshToken)));

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

  it('refuses passwords that are not well-formed (lone surrogates, which UTF-8 turns into U+FFFD) on sign-up and sign-in', async () => {
    const before = await userCount();
    const signUpError = await rejection(auth.signUp(uniqueEmail(), 'passw\uD800\uD801\uD802'));
    expect(signUpError).toBeInstanceOf(ValidationError);
    expect((signUpError as ValidationError).fieldErrors).toEqual([{ path: ['password'], message: expect.stringMatching(/invalid character/) }]);
    expect(await userCount()).toBe(before);

    // An account an older server let such a password make: its hash is that of 'passw\uFFFD\uFFFD\uFFFD'.
    const email = uniqueEmail();
    await createAccount(database.db, email, await hashPassword('passw\uD800\uD801\uD802'));
    for (const password of ['passw\uDC00\uDFFF\uFFFD', 'passw\uD800\uD801\uD802']) {
      const signInError = await rejection(auth.signIn(email, password));
      expect(signInError).toBeInstanceOf(ValidationError);
      expect((signInError as ValidationError).fieldErrors.map((f) => f.path[0])).toEqual(['password']);
    }
    // Well-formed passwords are counted and compared as before, U+FFFD included.
    await expect(auth.signIn(email, 'passw\uFFFD\uFFFD\uFFFD')).resolves.toMatchObject({ user: { email } });
    const astral = uniqueEmail();
    await auth.signUp(astral, 'password \u{1F600}');
    await expect(auth.signIn(astral, 'password \u{1F600}')).resolves.toMatchObject({ user: { email: astral } });
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

  it('revokes the whole session when a spent refresh token is used again after the reuse interval', async () => {
    const first = await auth.signUp(uniqueEmail(), PASSWORD);
    const second = await auth.refresh(first.refreshToken);
    const sessionId = (await auth.verify(second.accessToken)).session_id as string;

    await spentBeforeReuseInterval(first.refreshToken);
    expect(await rejection(auth.refresh(first.refreshToken))).toBeInstanceOf(AuthError);

    expect(await rejection(auth.refresh(second.refreshToken))).toBeInstanceOf(AuthError);
    expect(await rejection(auth.verify(second.accessToken))).toBeInstanceOf(AuthError);
    const [session] = await database.db.select().from(authSessions).where(eq(authSessions.id, sessionId));
    expect(session?.revokedReason).toBe('refresh_token_reuse');
  });

  it('gives both of two concurrent refreshes of a token (two instances) a successor in the same session, and keeps it live', async () => {
    const first = await auth.signUp(uniqueEmail(), PASSWORD);
    const sessionId = (await auth.verify(first.accessToken)).session_id as string;

    const [a, b] = await Promise.all([auth.refresh(first.refreshToken), twin.refresh(first.refreshToken)]);

    expect(new Set([first.refreshToken, a.refreshToken, b.refreshToken]).size).toBe(3);
    for (const session of [a, b]) await expect(twin.verify(session.accessToken)).resolves.toMatchObject({ sub: first.user.id, session_id: sessionId });
    const [session] = await database.db.select().from(authSessions).where(eq(authSessions.id, sessionId));
    expect(session?.revokedAt).toBeNull();
    // Either successor refreshes, later too (the second use spent no successor); going on with one spends the other.
    await spentBeforeReuseInterval(a.refreshToken);
    const next = await auth.refresh(a.refreshToken);
    await expect(auth.verify(next.accessToken)).resolves.toMatchObject({ session_id: sessionId });
    await spentBeforeReuseInterval(b.refreshToken);
    expect(await rejection(auth.refresh(b.refreshToken))).toBeInstanceOf(AuthError);
    expect(await rejection(auth.verify(next.accessToken))).toBeInstanceOf(AuthError);
  });

  it('within the reuse interval, gives a spent token another successor, but never for a revoked or ended session', async () => {
    const retried = await auth.signUp(uniqueEmail(), PASSWORD);
    const rotated = await auth.refresh(retried.refreshToken);
    const again = await auth.refresh(retried.refreshToken);
    expect(again.refreshToken).not.toBe(rotated.refreshToken);
    await expect(auth.verify(again.accessToken)).resolves.toMatchObject({ sub: retried.user.id });
    await expect(auth.verify(rotated.accessToken)).resolves.toMatchObject({ sub: retried.user.id });

    const signedOut = await auth.signUp(uniqueEmail(), PASSWORD);
    const signedOutRotated = await auth.refresh(signedOut.refreshToken);
    await auth.signOut(await auth.verify(signedOutRotated.accessToken), signedOutRotated.accessToken, 'LOCAL');
    expect(await rejection(auth.refresh(signedOut.refreshToken))).toBeInstanceOf(AuthError);

    const ended = await auth.signUp(uniqueEmail(), PASSWORD);
    const endedRotated = await auth.refresh(ended.refreshToken);
    const endedId = (await auth.verify(endedRotated.accessToken)).session_id as string;
    await database.db.update(authSessions).set({ createdAt: sql`now() - interval '31 days'` }).where(eq(authSessions.id, endedId));
    expect(await rejection(auth.refresh(ended.refreshToken))).toBeInstanceOf(AuthError);
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

describe('local auth: pruning ended sessions', () => {
  const sessionIdOf = async (session: AuthSession) => (await auth.verify(session.accessToken)).session_id as string;
  const sessionsLeft = (ids: string[]) => database.db.$count(authSessions, inArray(authSessions.id, ids));
  const tokensLeft = (ids: string[]) => database.db.$count(refreshTokens, inArray(refreshTokens.sessionId, ids));
  const startedAgo = (ids: string[], interval: string) =>
    database.db.update(authSessions).set({ createdAt: sql`now() - ${interval}::interval` }).where(inArray(authSessions.id, ids));
  const revokedAgo = (ids: string[], interval: string) =>
    database.db.update(authSessions).set({ revokedAt: sql`now() - ${interval}::interval` }).where(inArray(authSessions.id, ids));

  /** Sessions past SESSION_MAX_AGE_SECONDS (30 days), each with a refresh token, written straight into the tables. */
  async function expiredBacklog(userId: string, count: number): Promise<string[]> {
    const sessions = await database.db
      .insert(authSessions)
      .values(Array.from({ length: count }, () => ({ userId })))
      .returning({ id: authSessions.id });
    const ids = sessions.map((s) => s.id);
    await database.db.insert(refreshTokens).values(ids.map((sessionId) => ({ sessionId, tokenHash: randomBytes(32).toString('hex') })));
    await startedAgo(ids, '31 days');
    return ids;
  }

  it('deletes expired sessions and those revoked over a day ago with their refresh tokens; live ones keep refreshing and detecting reuse', async () => {
    const expired = await auth.signUp(uniqueEmail(), PASSWORD);
    const expiredLater = await auth.refresh(expired.refreshToken);
    const revokedLongAgo = await auth.signUp(uniqueEmail(), PASSWORD);
    const revokedToday = await auth.signUp(uniqueEmail(), PASSWORD);
    const live = await auth.signUp(uniqueEmail(), PASSWORD);
    const liveLater = await auth.refresh(live.refreshToken);
    const [expiredId, revokedLongAgoId, revokedTodayId, liveId] = await Promise.all([expiredLater, revokedLongAgo, revokedToday, liveLater].map(sessionIdOf));
    for (const session of [revokedLongAgo, revokedToday]) await auth.signOut(await auth.verify(session.accessToken), session.accessToken, 'LOCAL');
    await startedAgo([expiredId!], '31 days');
    await revokedAgo([revokedLongAgoId!], '25 hours');
    await revokedAgo([revokedTodayId!], '23 hours');
    // More than one delete statement's worth.
    const backlog = await expiredBacklog(expired.user.id, 1500);
    const ended = [expiredId!, revokedLongAgoId!, ...backlog];

    await auth.prune();

    expect(await sessionsLeft(ended)).toBe(0);
    expect(await tokensLeft(ended)).toBe(0);
    expect(await rejection(auth.refresh(expiredLater.refreshToken))).toBeInstanceOf(AuthError);
    // A revoked session is kept a day, its spent and unspent tokens with it.
    expect(await sessionsLeft([revokedTodayId!])).toBe(1);
    expect(await tokensLeft([revokedTodayId!])).toBe(1);
    // The live session keeps every token: the spent one still tells a replay from a stranger.
    expect(await tokensLeft([liveId!])).toBe(2);
    const refreshed = await auth.refresh(liveLater.refreshToken);
    await expect(auth.verify(refreshed.accessToken)).resolves.toMatchObject({ sub: live.user.id, session_id: liveId });
    await spentBeforeReuseInterval(live.refreshToken);
    expect(await rejection(auth.refresh(live.refreshToken))).toBeInstanceOf(AuthError);
    expect(await rejection(auth.verify(refreshed.accessToken))).toBeInstanceOf(AuthError);
    const [session] = await database.db.select().from(authSessions).where(eq(authSessions.id, liveId!));
    expect(session?.revokedReason).toBe('refresh_token_reuse');
  });

  it('is harmless when two instances prune at once', async () => {
    const owner = await auth.signUp(uniqueEmail(), PASSWORD);
    const backlog = await expiredBacklog(owner.user.id, 2500);

    const [first, second] = await Promise.all([auth.prune(), twin.prune()]);

    expect(first.sessions + second.sessions).toBeGreaterThanOrEqual(backlog.length);
    expect(await sessionsLeft(backlog)).toBe(0);
    expect(await tokensLeft(backlog)).toBe(0);
    await expect(auth.verify(owner.accessToken)).resolves.toMatchObject({ sub: owner.user.id });
  });

  it('prunes every hour on its own, logs how much went, and stops when closed', async () => {
    const logs = new LogCapture();
    vi.useFakeTimers({ toFake: ['setInterval', 'clearInterval'] });
    try {
      const timed = await provider({ logger: createLogger('info', logs) });
      const session = await timed.signUp(uniqueEmail(), PASSWORD);
      const sessionId = await sessionIdOf(session);
      await startedAgo([sessionId], '31 days');

      await vi.advanceTimersByTimeAsync(60 * 60 * 1000);
      const pruned = expect.objectContaining({ source: 'LocalAuth', msg: 'ended sessions pruned', sessions: 1, refreshTokens: 1 });
      await vi.waitFor(() => expect(logs.records()).toContainEqual(pruned), { timeout: 10_000 });
      expect(await sessionsLeft([sessionId])).toBe(0);
      await timed.close();
      expect(vi.getTimerCount(), 'a timer left after close').toBe(0);
    } finally {
      vi.useRealTimers();
    }
  });
});
