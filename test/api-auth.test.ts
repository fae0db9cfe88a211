import { randomBytes, randomUUID } from 'node:crypto';
import { eq, sql } from 'drizzle-orm';
import { print } from 'graphql';
import { decodeJwt, type JWTPayload, SignJWT, UnsecuredJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { REFRESH_TOKEN_REUSE_INTERVAL_SECONDS } from '../src/auth/local-store.js';
import { hashRefreshToken } from '../src/auth/refresh-tokens.js';
import { type Config, parseConfig } from '../src/config.js';
import { type Database, openDatabase } from '../src/db/client.js';
import { refreshTokens, serverSecrets, users } from '../src/db/schema.js';
import { type Kiln, startKiln } from '../src/main.js';
import {
  CreateProjectDocument,
  ProjectsDocument,
  RefreshSessionDocument,
  SignInDocument,
  SignOutDocument,
  SignUpDocument,
  ViewerDocument,
} from './gql/graphql.js';
import { createTestDatabase, type TestDatabase } from './support/db.js';
import {
  type ClientFactory,
  createProject,
  expectTypename,
  graphqlClient,
  PASSWORD,
  signIn,
  SignUpWithFieldErrorsDocument,
  signUp,
  type TestUser,
  uniqueEmail,
} from './support/fixtures.js';
import { tempDir } from './support/generation-helpers.js';
import { useTestServer } from './support/server.js';

const server = useTestServer();

// ------------------------------------------------------------------ helpers

/** `viewer` for this access token (no token: anonymous); the request itself must succeed. */
async function viewerWith(token?: string, on: ClientFactory = server) {
  return (await on.client(token).expectNoErrors(ViewerDocument)).viewer;
}

/** A mutation that needs a signed-in user, sent with this token: its result's typename. */
async function createProjectWith(token?: string, on: ClientFactory = server): Promise<string> {
  const { createProject } = await on.client(token).expectNoErrors(CreateProjectDocument, {
    input: { name: 'Needs a session', target: 'WEB' },
  });
  return createProject.__typename;
}

async function refresh(refreshToken: string, on: ClientFactory = server) {
  return (await on.client().expectNoErrors(RefreshSessionDocument, { refreshToken })).refreshSession;
}

async function signOut(token: string | undefined, scope?: 'LOCAL' | 'GLOBAL' | 'OTHERS') {
  return (await server.client(token).expectNoErrors(SignOutDocument, scope ? { scope } : {})).signOut;
}

/** The user can no longer act with this session: viewer null, mutations AuthError, refresh refused. */
async function expectSessionEnded(session: Pick<TestUser, 'accessToken' | 'refreshToken'>) {
  expect(await viewerWith(session.accessToken)).toBeNull();
  expect(await createProjectWith(session.accessToken)).toBe('AuthError');
  expect((await refresh(session.refreshToken)).__typename).toBe('AuthError');
}

/** Moves a spent refresh token's use back past the reuse interval: a replay now comes too late to be a retry. */
async function spentBeforeReuseInterval(refreshToken: string) {
  await server.database.db
    .update(refreshTokens)
    .set({ usedAt: sql`${refreshTokens.usedAt} - ${REFRESH_TOKEN_REUSE_INTERVAL_SECONDS + 1} * interval '1 second'` })
    .where(eq(refreshTokens.tokenHash, hashRefreshToken(refreshToken)));
}

async function expectSessionLive(session: TestUser) {
  expect(await viewerWith(session.accessToken)).toEqual({ id: session.id, email: session.email });
  expect(await createProjectWith(session.accessToken)).toBe('Project');
}

/** The signing key of local tokens, as the server generated and stored it. */
async function signingKey(database: TestDatabase = server.database): Promise<Uint8Array> {
  const [row] = await database.db
    .select({ value: serverSecrets.value })
    .from(serverSecrets)
    .where(eq(serverSecrets.name, 'local_jwt_secret'));
  if (!row) throw new Error('the server has not stored a signing key');
  return new TextEncoder().encode(row.value);
}

function sign(payload: JWTPayload, key: Uint8Array, alg = 'HS256') {
  return new SignJWT(payload).setProtectedHeader({ alg, typ: 'JWT' }).sign(key);
}

const nowSeconds = () => Math.floor(Date.now() / 1000);

// ------------------------------------------------------------------ tests

describe('sign-up and sign-in', () => {
  it('signs up, and the access token makes the new user the viewer', async () => {
    const email = uniqueEmail();
    const { signUp: session } = await server.client().expectNoErrors(SignUpDocument, { email, password: PASSWORD });

    const created = expectTypename(session, 'AuthSession');
    expect(created.user.email).toBe(email);
    expect(created.accessToken).not.toBe('');
    expect(created.refreshToken).not.toBe('');
    expect(await viewerWith(created.accessToken)).toEqual({ id: created.user.id, email });
    expect(await viewerWith()).toBeNull();
  });

  it('reports when the access token expires: expiresAt is the token exp, ACCESS_TOKEN_TTL_SECONDS (3600) after issue', async () => {
    const user = await signUp(server);
    const { iat, exp } = decodeJwt(user.accessToken);

    expect(Date.parse(user.expiresAt)).toBe(exp! * 1000);
    expect(exp! - iat!).toBe(3600);
  });

  it('signs in with the password (any case of the email) in a new session of the same user', async () => {
    const email = uniqueEmail();
    const first = await signUp(server, email);

    const second = await signIn(server, email.toUpperCase());

    expect(second.id).toBe(first.id);
    expect(second.email).toBe(email);
    expect(second.accessToken).not.toBe(first.accessToken);
    expect(second.refreshToken).not.toBe(first.refreshToken);
    expect(await viewerWith(second.accessToken)).toEqual({ id: first.id, email });
    expect(await viewerWith(first.accessToken)).toEqual({ id: first.id, email });
  });

  it('refuses a wrong password and an unknown email alike, with an AuthError', async () => {
    const email = uniqueEmail();
    await signUp(server, email);

    const wrongPassword = (await server.client().expectNoErrors(SignInDocument, { email, password: 'not the password' })).signIn;
    const unknownEmail = (await server.client().expectNoErrors(SignInDocument, { email: uniqueEmail(), password: PASSWORD })).signIn;

    expectTypename(wrongPassword, 'AuthError');
    expectTypename(unknownEmail, 'AuthError');
    expect(wrongPassword).toEqual(unknownEmail);
  });

  it('refuses a second account for an email (in any case) with a ValidationError on email', async () => {
    const email = uniqueEmail();
    await signUp(server, email);

    const { signUp: again } = await server
      .client()
      .expectNoErrors(SignUpWithFieldErrorsDocument, { email: email.toUpperCase(), password: PASSWORD });

    expect(again.__typename).toBe('ValidationError');
    expect(again.fieldErrors?.map((e) => e.path)).toEqual([['email']]);
  });

  // What signing in with the same then answers: past the bounds both share, a ValidationError too.
  const invalidSignUps: Array<[what: string, email: () => string, password: string, fields: string[][], signIn: 'AuthError' | 'ValidationError']> = [
    ['a short password', () => uniqueEmail(), 'short', [['password']], 'AuthError'],
    ['an oversized password', () => uniqueEmail(), 'p'.repeat(10_000), [['password']], 'ValidationError'],
    // JSON "\ud800": UTF-8 turns every lone surrogate into U+FFFD, so such passwords would all hash alike.
    ['a password with lone surrogates', () => uniqueEmail(), 'passw\uD800\uD801\uD802', [['password']], 'ValidationError'],
    ['a malformed email', () => `not-an-email-${randomUUID()}`, PASSWORD, [['email']], 'AuthError'],
    ['an email without a domain', () => `${randomUUID()}@`, PASSWORD, [['email']], 'AuthError'],
    ['an oversized email', () => `${'a'.repeat(300)}-${randomUUID()}@example.com`, PASSWORD, [['email']], 'ValidationError'],
    ['a huge email', () => `${'a'.repeat(10_000)}@example.com`, PASSWORD, [['email']], 'ValidationError'],
    ['an empty email and password', () => '', '', [['email'], ['password']], 'AuthError'],
  ];

  it.each(invalidSignUps)('refuses %s with a ValidationError naming the field, and creates no user', async (_what, makeEmail, password, fields, signIn) => {
    const email = makeEmail();
    const usersBefore = await server.database.db.$count(users);

    const { signUp: result } = await server.client().expectNoErrors(SignUpWithFieldErrorsDocument, { email, password });

    expect(result.__typename).toBe('ValidationError');
    expect(result.fieldErrors?.map((e) => e.path)).toEqual(fields);
    for (const fieldError of result.fieldErrors ?? []) expect(fieldError.message).not.toBe('');
    // Nobody can sign in with it, and no row was written.
    const { signIn: attempt } = await server.client().expectNoErrors(SignInDocument, { email, password });
    expect(attempt.__typename).toBe(signIn);
    expect(await server.database.db.$count(users)).toBe(usersBefore);
  });

  it('never lets a password with lone surrogates into the account of one that UTF-8 encodes alike', async () => {
    const email = uniqueEmail();
    const { signUp: created } = await server.client().expectNoErrors(SignUpDocument, { email, password: 'passw\uFFFD\uFFFD\uFFFD' });
    expectTypename(created, 'AuthSession');

    const { signIn: refused } = await server.client().expectNoErrors(SignInDocument, { email, password: 'passw\uDC00\uDFFF\uFFFD' });
    expect(expectTypename(refused, 'ValidationError').message).not.toBe('');
    expect((await signIn(server, email, 'passw\uFFFD\uFFFD\uFFFD')).email).toBe(email);
  });

  it('leaves the email free after a refused sign-up', async () => {
    const email = uniqueEmail();
    const { signUp: refused } = await server.client().expectNoErrors(SignUpWithFieldErrorsDocument, { email, password: 'short' });
    expect(refused.__typename).toBe('ValidationError');

    const user = await signUp(server, email);
    expect(await viewerWith(user.accessToken)).toEqual({ id: user.id, email });
  });
});

describe('refresh-token rotation', () => {
  it('trades a refresh token for new tokens of the same user and session, again and again', async () => {
    const user = await signUp(server);

    const second = expectTypename(await refresh(user.refreshToken), 'AuthSession');
    const third = expectTypename(await refresh(second.refreshToken), 'AuthSession');

    expect(new Set([user.refreshToken, second.refreshToken, third.refreshToken]).size).toBe(3);
    for (const session of [second, third]) {
      expect(session.user).toEqual({ id: user.id, email: user.email });
      expect(await viewerWith(session.accessToken)).toEqual({ id: user.id, email: user.email });
    }
    expect(decodeJwt(third.accessToken).session_id).toBe(decodeJwt(user.accessToken).session_id);
  });

  it('treats reuse of a spent refresh token after the reuse interval as theft: AuthError, and the whole session ends', async () => {
    const user = await signUp(server);
    const rotated = expectTypename(await refresh(user.refreshToken), 'AuthSession');
    expect(await viewerWith(rotated.accessToken)).not.toBeNull();

    await spentBeforeReuseInterval(user.refreshToken);
    expectTypename(await refresh(user.refreshToken), 'AuthError');

    // The successor is refused too, and every access token of the session stops working.
    expectTypename(await refresh(rotated.refreshToken), 'AuthError');
    for (const token of [rotated.accessToken, user.accessToken]) {
      expect(await viewerWith(token)).toBeNull();
      expect(await createProjectWith(token)).toBe('AuthError');
    }
  });

  it('gives two concurrent refreshes of one token (a double click, a retry, two tabs) each a working session, and the session goes on', async () => {
    const user = await signUp(server);

    const both = await Promise.all([refresh(user.refreshToken), refresh(user.refreshToken)]);

    const [first, second] = both.map((result) => expectTypename(result, 'AuthSession'));
    expect(first!.refreshToken).not.toBe(second!.refreshToken);
    for (const session of [first!, second!]) {
      expect(await viewerWith(session.accessToken)).toEqual({ id: user.id, email: user.email });
      expect(decodeJwt(session.accessToken).session_id).toBe(decodeJwt(user.accessToken).session_id);
    }
    // The client keeps either answer and goes on refreshing with it.
    const next = expectTypename(await refresh(second!.refreshToken), 'AuthSession');
    expect(await createProjectWith(next.accessToken)).toBe('Project');
    expectTypename(await refresh(next.refreshToken), 'AuthSession');
  });

  it('still ends the session when a refresh token a double click left unused is replayed after the interval', async () => {
    const user = await signUp(server);
    const [kept, unused] = (await Promise.all([refresh(user.refreshToken), refresh(user.refreshToken)])).map((r) => expectTypename(r, 'AuthSession'));
    const next = expectTypename(await refresh(kept!.refreshToken), 'AuthSession');

    // Going on with one successor spent the other: the session has one live refresh token again.
    await spentBeforeReuseInterval(unused!.refreshToken);
    expectTypename(await refresh(unused!.refreshToken), 'AuthError');

    await expectSessionEnded(next);
  });

  it('refuses a just-spent refresh token once its session is signed out', async () => {
    const user = await signUp(server);
    const rotated = expectTypename(await refresh(user.refreshToken), 'AuthSession');

    expect(await signOut(rotated.accessToken)).toBe(true);

    expectTypename(await refresh(user.refreshToken), 'AuthError');
  });

  it('leaves the user’s other sessions alone when one session is revoked for reuse', async () => {
    const user = await signUp(server);
    const other = await signIn(server, user.email);
    await refresh(user.refreshToken);
    await spentBeforeReuseInterval(user.refreshToken);
    expectTypename(await refresh(user.refreshToken), 'AuthError');

    await expectSessionLive(other);
  });

  it('refuses unknown refresh tokens with an AuthError', async () => {
    for (const token of ['', 'garbage', randomBytes(32).toString('base64url')]) {
      expectTypename(await refresh(token), 'AuthError');
    }
  });
});

describe('sign-out', () => {
  /** Three sessions of one new user. */
  async function threeSessions(): Promise<[TestUser, TestUser, TestUser]> {
    const first = await signUp(server);
    return [first, await signIn(server, first.email), await signIn(server, first.email)];
  }

  it.each([['without a scope', undefined], ['LOCAL', 'LOCAL']] as const)(
    'signOut %s ends this session at once and leaves the others',
    async (_what, scope) => {
      const [current, other] = await threeSessions();

      expect(await signOut(current.accessToken, scope)).toBe(true);

      await expectSessionEnded(current);
      await expectSessionLive(other);
      // Signing out again with the ended session does nothing.
      expect(await signOut(current.accessToken, scope)).toBe(false);
    },
  );

  it('signOut GLOBAL ends every session of the user, and only theirs', async () => {
    const sessions = await threeSessions();
    const someoneElse = await signUp(server);

    expect(await signOut(sessions[1].accessToken, 'GLOBAL')).toBe(true);

    for (const session of sessions) await expectSessionEnded(session);
    await expectSessionLive(someoneElse);
    // The user can still sign in again.
    await expectSessionLive(await signIn(server, sessions[0].email));
  });

  it('signOut OTHERS ends every other session and keeps this one', async () => {
    const [current, ...others] = await threeSessions();

    expect(await signOut(current.accessToken, 'OTHERS')).toBe(true);

    await expectSessionLive(current);
    expect((await refresh(current.refreshToken)).__typename).toBe('AuthSession');
    for (const session of others) await expectSessionEnded(session);
  });

  it('signOut without a session is false', async () => {
    expect(await signOut(undefined)).toBe(false);
    expect(await signOut('not-a-token')).toBe(false);
  });
});

describe('expired, malformed and forged access tokens', () => {
  it('refuses an expired token (signed with the server’s own key, of a live session)', async () => {
    const user = await signUp(server);
    const claims = decodeJwt(user.accessToken);
    const key = await signingKey();

    const expired = await sign({ ...claims, iat: nowSeconds() - 3700, exp: nowSeconds() - 100 }, key);
    // The same token with a future expiry is accepted: the key and session are right, only the time is wrong.
    const fresh = await sign({ ...claims, iat: nowSeconds(), exp: nowSeconds() + 600 }, key);

    expect(await viewerWith(fresh)).toEqual({ id: user.id, email: user.email });
    expect(await viewerWith(expired)).toBeNull();
    expect(await createProjectWith(expired)).toBe('AuthError');
    expect(await signOut(expired)).toBe(false);
    // The user's real token still works: an expired copy changes nothing.
    await expectSessionLive(user);
  });

  /** Tokens a client might send that must never sign anyone in. */
  const forgeries: Array<[what: string, forge: (user: TestUser, key: Uint8Array) => Promise<string> | string]> = [
    ['garbage', () => 'garbage'],
    ['three dots of garbage', () => 'a.b.c'],
    ['a JWT with its signature cut off', (user) => user.accessToken.split('.').slice(0, 2).join('.') + '.'],
    [
      'a JWT whose payload names another user, signature kept',
      (user) => {
        const [header, payload, signature] = user.accessToken.split('.');
        const claims = JSON.parse(Buffer.from(payload!, 'base64url').toString()) as JWTPayload;
        const tampered = Buffer.from(JSON.stringify({ ...claims, sub: randomUUID() })).toString('base64url');
        return `${header}.${tampered}.${signature}`;
      },
    ],
    ['a JWT signed with another key', (user) => sign(decodeJwt(user.accessToken), randomBytes(48))],
    ['an unsigned JWT (alg: none)', (user) => new UnsecuredJWT(decodeJwt(user.accessToken)).encode()],
    ['a JWT with the right key but HS512', (user, key) => sign(decodeJwt(user.accessToken), key, 'HS512')],
    ['a JWT with the right key claiming role service_role', (user, key) => sign({ ...decodeJwt(user.accessToken), role: 'service_role' }, key)],
    ['a JWT with the right key and a made-up session', (user, key) => sign({ ...decodeJwt(user.accessToken), session_id: randomUUID() }, key)],
    [
      'a JWT with the right key and no session',
      (user, key) => {
        const { session_id: _dropped, ...claims } = decodeJwt(user.accessToken);
        return sign(claims, key);
      },
    ],
    ['a JWT with the right key and no expiry', (user, key) => sign({ ...decodeJwt(user.accessToken), exp: undefined }, key)],
  ];

  it.each(forgeries)('treats %s as no session: viewer null, mutations AuthError, never a 500', async (_what, forge) => {
    const user = await signUp(server);
    const token = await forge(user, await signingKey());
    expect(token).not.toBe(user.accessToken);

    const response = await server.client(token).post({ query: print(ViewerDocument) });
    expect(response.status).toBe(200);
    expect(await response.json()).toEqual({ data: { viewer: null } });
    expect(await createProjectWith(token)).toBe('AuthError');
    expect(await signOut(token)).toBe(false);
    // Nothing happened to the real session.
    await expectSessionLive(user);
  });

  it('treats an Authorization header that is not a bearer token as anonymous', async () => {
    const user = await signUp(server);
    for (const authorization of [`Basic ${user.accessToken}`, 'Bearer', `Bearer ${user.accessToken} extra`, user.accessToken]) {
      const response = await server.client().post({ query: print(ViewerDocument) }, { authorization });
      expect(response.status).toBe(200);
      expect(await response.json()).toEqual({ data: { viewer: null } });
    }
  });
});

describe('sessions across instances and restarts', () => {
  let database: TestDatabase;
  /** A second connection to the same database for a second instance, as another process would have (postgres only). */
  let secondConnection: Database | undefined;
  const running: Kiln[] = [];
  /** One data directory for every instance of this suite, as processes sharing a volume would have. */
  let dataDir: Awaited<ReturnType<typeof tempDir>>;
  let config: Config;

  async function start(on: Database = database): Promise<ClientFactory & { kiln: Kiln }> {
    const kiln = await startKiln(config, { database: on, port: 0 });
    running.push(kiln);
    return { kiln, client: (token?: string) => graphqlClient(kiln.url, token) };
  }

  async function stop(kiln: Kiln) {
    running.splice(running.indexOf(kiln), 1);
    await kiln.stop();
  }

  beforeAll(async () => {
    database = await createTestDatabase();
    secondConnection = database.url ? await openDatabase({ url: database.url }) : undefined;
    dataDir = await tempDir('auth');
    config = parseConfig({ DATA_DIR: dataDir.path, LOG_LEVEL: 'silent', OFFLINE_CHUNK_DELAY_MS: '0', ACCESS_TOKEN_TTL_SECONDS: '120' });
  });

  afterAll(async () => {
    for (const kiln of running.splice(0)) await kiln.stop();
    await secondConnection?.close();
    await database?.close();
    await dataDir?.remove();
  });

  it('honours ACCESS_TOKEN_TTL_SECONDS in the tokens it issues', async () => {
    const app = await start();
    try {
      const user = await signUp(app);
      const { iat, exp } = decodeJwt(user.accessToken);
      expect(exp! - iat!).toBe(120);
      expect(Date.parse(user.expiresAt)).toBe(exp! * 1000);
    } finally {
      await stop(app.kiln);
    }
  });

  it('keeps access tokens, refresh tokens and data across a restart on the same database', async () => {
    const before = await start();
    const user = await signUp(before);
    const project = await createProject(user.client);
    await stop(before.kiln);

    // On PostgreSQL the restarted instance has connections of its own, as a new process would.
    const after = await start(secondConnection ?? database);
    expect(await viewerWith(user.accessToken, after)).toEqual({ id: user.id, email: user.email });
    const { projects } = await after.client(user.accessToken).expectNoErrors(ProjectsDocument, {});
    expect(projects.edges.map((e) => e.node.id)).toEqual([project.id]);
    expectTypename(await refresh(user.refreshToken, after), 'AuthSession');
    expect((await after.client().expectNoErrors(SignInDocument, { email: user.email, password: PASSWORD })).signIn.__typename).toBe(
      'AuthSession',
    );
    await stop(after.kiln);
  });

  it('accepts a token on every instance of one database, and a sign-out on one is seen by the other at once', async () => {
    const first = await start();
    const second = await start(secondConnection ?? database);
    try {
      const user = await signUp(first);
      expect(await viewerWith(user.accessToken, second)).toEqual({ id: user.id, email: user.email });

      const { signOut: done } = await second.client(user.accessToken).expectNoErrors(SignOutDocument, {});
      expect(done).toBe(true);

      expect(await viewerWith(user.accessToken, first)).toBeNull();
      expect(await createProjectWith(user.accessToken, first)).toBe('AuthError');
    } finally {
      await stop(first.kiln);
      await stop(second.kiln);
    }
  });
});
