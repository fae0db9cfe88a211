import { randomBytes } from 'node:crypto';
import type { TypedDocumentNode } from '@graphql-typed-document-node/core';
import { createClient } from '@supabase/supabase-js';
import { eq } from 'drizzle-orm';
import { print } from 'graphql';
import { decodeJwt, decodeProtectedHeader, generateKeyPair, SignJWT } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AuthProvider } from '../src/auth/provider.js';
import { createSupabaseAuth, type SupabaseAuthOptions } from '../src/auth/supabase.js';
import { users } from '../src/db/schema.js';
import { AppError, AuthError, RateLimitedError, ValidationError } from '../src/errors.js';
import { expectForgeriesRefused, PASSWORD, rejection, signInTests, signOutScopeTests, uniqueEmail } from './support/auth-contract.js';
import { createTestDatabase, type TestDatabase } from './support/db.js';
import { type FakeSupabase, type FakeSupabaseOptions, startFakeSupabase } from './support/fake-supabase.js';
import { RefreshSessionDocument, SignInDocument, SignOutDocument, SignUpDocument, ViewerDocument } from './gql/graphql.js';
import { startTestServer, type TestServer } from './support/server.js';

const GOTRUE_MIN_PASSWORD_LENGTH = 10;

let database: TestDatabase;
let supabase: FakeSupabase;
let auth: AuthProvider;
const closers: Array<() => Promise<void>> = [];

async function fake(options: FakeSupabaseOptions = {}): Promise<FakeSupabase> {
  const started = await startFakeSupabase({ minPasswordLength: GOTRUE_MIN_PASSWORD_LENGTH, ...options });
  closers.push(() => started.close());
  return started;
}

function provider(server: FakeSupabase, options: Partial<SupabaseAuthOptions> = {}): AuthProvider {
  const created = createSupabaseAuth({
    db: database.db,
    url: server.url,
    anonKey: server.anonKey,
    serviceRoleKey: server.serviceRoleKey,
    ...options,
  });
  closers.push(() => created.close());
  return created;
}

async function profile(id: string) {
  const [row] = await database.db.select().from(users).where(eq(users.id, id));
  return row;
}

beforeAll(async () => {
  database = await createTestDatabase();
  supabase = await fake();
  auth = provider(supabase);
});

afterAll(async () => {
  for (const close of closers.reverse()) await close();
  await database?.close();
});

describe('supabase auth: sign-up, sign-in, verify', () => {
  it('signs up through supabase-js and verifies the ES256 token through the JWKS', async () => {
    const email = uniqueEmail();
    const session = await auth.signUp(` ${email.toUpperCase()}`, PASSWORD);

    expect(decodeProtectedHeader(session.accessToken).alg).toBe('ES256');
    const claims = await auth.verify(session.accessToken);
    expect(claims).toMatchObject({
      sub: session.user.id,
      role: 'authenticated',
      aud: 'authenticated',
      email,
      iss: `${supabase.url}/auth/v1`,
      session_id: expect.any(String),
    });
    expect(session.expiresAt.getTime()).toBe((claims.exp as number) * 1000);
    expect(await profile(session.user.id)).toMatchObject({ email });
  });

  signInTests(() => auth);

  it('gives a wrong password and an unknown email the same AuthError', async () => {
    const email = uniqueEmail();
    await auth.signUp(email, PASSWORD);

    const errors = [await rejection(auth.signIn(email, 'not the password at all')), await rejection(auth.signIn(uniqueEmail(), PASSWORD))];
    for (const error of errors) {
      expect(error).toBeInstanceOf(AuthError);
      expect((error as AuthError).message).toBe('Invalid email or password.');
    }
  });

  it('gives a profile to a user who signed up elsewhere, on the first verify', async () => {
    const email = uniqueEmail();
    const direct = createClient(supabase.url, supabase.anonKey, { auth: { persistSession: false, autoRefreshToken: false } });
    const { data, error } = await direct.auth.signUp({ email: email.toUpperCase(), password: PASSWORD });
    expect(error).toBeNull();
    const userId = data.user!.id;
    expect(await profile(userId)).toBeUndefined();

    await auth.verify(data.session!.access_token);
    expect(await profile(userId)).toMatchObject({ email });
  });

  it('asks for email confirmation when the project requires it', async () => {
    const confirming = await fake({ requireEmailConfirmation: true });
    const confirmingAuth = provider(confirming);
    const email = uniqueEmail();

    // The second sign-up of the email gets the same answer: sign-up does not reveal accounts.
    for (let attempt = 0; attempt < 2; attempt++) {
      const error = await rejection(confirmingAuth.signUp(email, PASSWORD));
      expect(error).toBeInstanceOf(AuthError);
      expect((error as AuthError).message).toMatch(/confirm your email/);
    }
    expect((await rejection(confirmingAuth.signIn(email, PASSWORD))) as AuthError).toMatchObject({ kind: 'AuthError', message: expect.stringMatching(/confirm/) });
    expect(await database.db.$count(users, eq(users.email, email))).toBe(0);

    confirming.confirmEmail(email);
    const session = await confirmingAuth.signIn(email, PASSWORD);
    expect(await profile(session.user.id)).toMatchObject({ email });
  });
});

describe('supabase auth: passwords that are not well-formed', () => {
  // GoTrue decodes JSON into UTF-8 as Node does: every lone surrogate becomes U+FFFD, so they
  // would all compare equal (the fake compares JS strings, so this shows the refusal, not the collision).
  it('refuses them on sign-up and sign-in with a field error, before GoTrue is asked', async () => {
    const email = uniqueEmail();
    const signUpError = await rejection(auth.signUp(email, 'password-\uD800\uD801\uD802'));
    expect(signUpError).toBeInstanceOf(ValidationError);
    expect((signUpError as ValidationError).fieldErrors).toEqual([{ path: ['password'], message: expect.stringMatching(/invalid character/) }]);
    expect(await rejection(auth.signIn(email, PASSWORD))).toMatchObject({ message: 'Invalid email or password.' });

    await auth.signUp(email, 'password-\uFFFD\uFFFD\uFFFD');
    const signInError = await rejection(auth.signIn(email, 'password-\uDC00\uDFFF\uFFFD'));
    expect(signInError).toBeInstanceOf(ValidationError);
    expect((signInError as ValidationError).fieldErrors.map((f) => f.path[0])).toEqual(['password']);
    await expect(auth.signIn(email, 'password-\uFFFD\uFFFD\uFFFD')).resolves.toMatchObject({ user: { email } });
  });
});

describe('supabase auth: GoTrue errors', () => {
  it('maps a taken email and GoTrue password and email rules to field errors', async () => {
    const email = uniqueEmail();
    await auth.signUp(email, PASSWORD);
    const cases: Array<[email: string, password: string, fields: string[], message: RegExp]> = [
      [email, PASSWORD, ['email'], /An account with this email already exists/],
      // Long enough for Kiln's rule, too short for this project's GoTrue setting.
      [uniqueEmail(), 'x'.repeat(GOTRUE_MIN_PASSWORD_LENGTH - 1), ['password'], /at least 10 characters/],
      // Kiln's own checks answer before GoTrue is asked.
      ['not-an-email', 'short', ['email', 'password'], /valid email/],
    ];
    for (const [candidate, password, fields, message] of cases) {
      const error = await rejection(auth.signUp(candidate, password));
      expect(error).toBeInstanceOf(ValidationError);
      expect((error as ValidationError).fieldErrors.map((f) => f.path[0])).toEqual(fields);
      expect((error as ValidationError).fieldErrors[0]?.message).toMatch(message);
    }

    supabase.failNextRequest(400, 'email_address_invalid', 'Email address "x@example.com" is invalid');
    const invalid = await rejection(auth.signUp(uniqueEmail(), PASSWORD));
    expect((invalid as ValidationError).fieldErrors).toEqual([{ path: ['email'], message: 'Email address "x@example.com" is invalid' }]);
  });

  it('maps 429 to RateLimitedError', async () => {
    supabase.failNextRequest(429, 'over_request_rate_limit', 'Request rate limit reached');
    const error = await rejection(auth.signIn(uniqueEmail(), PASSWORD));
    expect(error).toBeInstanceOf(RateLimitedError);
    expect((error as RateLimitedError).retryAfterSeconds).toBeGreaterThan(0);
  });

  it('treats GoTrue being down during a session check as unexpected, not as a sign-out', async () => {
    const session = await auth.signUp(uniqueEmail(), PASSWORD);
    const coldCache = provider(supabase);

    supabase.failNextRequest(503, 'unexpected_failure', 'upstream unavailable');
    const error = await rejection(coldCache.verify(session.accessToken));
    expect(error).toBeInstanceOf(Error);
    expect(error).not.toBeInstanceOf(AppError);
    // Nothing was remembered: the next check succeeds.
    await expect(coldCache.verify(session.accessToken)).resolves.toMatchObject({ sub: session.user.id });
  });

  it('gives up on a GoTrue that takes a request and never answers, as on one that is down, for a session check and a sign-in alike', async () => {
    const email = uniqueEmail();
    const session = await auth.signUp(email, PASSWORD);
    // Each request that is answered must be answered within the bound too: far more than a loaded machine needs.
    const impatient = provider(supabase, { requestTimeoutMs: 2_000 });

    supabase.stallNextRequest();
    const check = await rejection(impatient.verify(session.accessToken));
    expect(check).not.toBeInstanceOf(AppError);
    await expect(impatient.verify(session.accessToken)).resolves.toMatchObject({ sub: session.user.id });

    supabase.stallNextRequest();
    expect(await rejection(impatient.signIn(email, PASSWORD))).not.toBeInstanceOf(AppError);
    await expect(impatient.signIn(email, PASSWORD)).resolves.toMatchObject({ user: { id: session.user.id } });
  });
});

describe('supabase auth: refresh tokens', () => {
  it('rotates, and a reused refresh token revokes its successors too', async () => {
    const first = await auth.signUp(uniqueEmail(), PASSWORD);
    const second = await auth.refresh(first.refreshToken);
    expect(second.refreshToken).not.toBe(first.refreshToken);
    const [a, b] = await Promise.all([auth.verify(first.accessToken), auth.verify(second.accessToken)]);
    expect(b.session_id).toBe(a.session_id);

    expect(await rejection(auth.refresh(first.refreshToken))).toBeInstanceOf(AuthError);
    expect(await rejection(auth.refresh(second.refreshToken))).toBeInstanceOf(AuthError);
  });

  it('refuses unknown refresh tokens', async () => {
    expect(await rejection(auth.refresh('garbage'))).toBeInstanceOf(AuthError);
  });
});

describe('supabase auth: the end user’s address, for GoTrue’s per-address limits', () => {
  /** Kiln behind one trusted proxy, on a project of its own, with this server key. */
  async function kiln(serverKey: (project: FakeSupabase) => string) {
    const project = await fake();
    const server = await startTestServer({ ...project.kilnEnv, SUPABASE_SERVICE_ROLE_KEY: serverKey(project), TRUST_PROXY: 'true' }, { database });
    closers.push(() => server.stop());
    return { project, server };
  }

  /** An operation sent by the client at `address` (the proxy's X-Forwarded-For). */
  async function from<T, V>(server: TestServer, address: string, document: TypedDocumentNode<T, V>, variables: V): Promise<T> {
    const response = await server.client().post({ query: print(document), variables }, { 'x-forwarded-for': address });
    return ((await response.json()) as { data: T }).data;
  }

  /** What GoTrue was asked on behalf of users: sign-ups, sign-ins and refreshes. */
  const userOperations = (project: FakeSupabase) => project.requests.filter((request) => /^POST \/auth\/v1\/(signup|token)\b/.test(request.route));

  async function signUpSignInRefresh(server: TestServer) {
    const email = uniqueEmail();
    const { signUp } = await from(server, '198.51.100.7', SignUpDocument, { email, password: PASSWORD });
    expect(signUp.__typename).toBe('AuthSession');
    const { signIn } = await from(server, '203.0.113.9', SignInDocument, { email, password: PASSWORD });
    if (signIn.__typename !== 'AuthSession') throw new Error(`signIn: ${signIn.__typename}`);
    const { refreshSession } = await from(server, '2001:db8:7:1::5', RefreshSessionDocument, { refreshToken: signIn.refreshToken });
    if (refreshSession.__typename !== 'AuthSession') throw new Error(`refreshSession: ${refreshSession.__typename}`);
    return refreshSession;
  }

  it('with a secret key, names each client’s own address (Sb-Forwarded-For) on sign-up, sign-in and refresh', async () => {
    const { project, server } = await kiln((p) => p.secretKey);
    const session = await signUpSignInRefresh(server);
    expect(userOperations(project)).toEqual([
      { route: expect.stringMatching(/^POST \/auth\/v1\/signup/), key: 'secret', forwardedFor: '198.51.100.7' },
      { route: 'POST /auth/v1/token?grant_type=password', key: 'secret', forwardedFor: '203.0.113.9' },
      { route: 'POST /auth/v1/token?grant_type=refresh_token', key: 'secret', forwardedFor: '2001:db8:7:1::5' },
    ]);
    // The server's own calls go on with the secret key: the session check, and sign-out.
    const signedIn = server.client(session.accessToken);
    expect((await signedIn.expectNoErrors(ViewerDocument)).viewer?.email).toBe(session.user.email);
    expect(await signedIn.expectNoErrors(SignOutDocument, {})).toEqual({ signOut: true });
    expect((await signedIn.expectNoErrors(ViewerDocument)).viewer).toBeNull();
  });

  it('with a legacy service_role key, sends no address: GoTrue refuses one with such keys', async () => {
    const { project, server } = await kiln((p) => p.serviceRoleKey);
    await signUpSignInRefresh(server);
    const operations = userOperations(project);
    expect(operations.map((request) => request.key)).toEqual(['anon', 'anon', 'anon']);
    expect(operations.filter((request) => 'forwardedFor' in request)).toEqual([]);
  });
});

describe('supabase auth: sign-out through the admin API', () => {
  signOutScopeTests(() => ({ auth, another: () => provider(supabase) }));

  it('remembers a live session for sessionCheckTtlMs; a sign-out elsewhere shows once that passes', async () => {
    let clock = Date.now();
    const cached = provider(supabase, { sessionCheckTtlMs: 5000, now: () => clock });
    const session = await auth.signUp(uniqueEmail(), PASSWORD);
    const claims = await auth.verify(session.accessToken);

    const before = supabase.userRequests;
    for (let i = 0; i < 3; i++) await cached.verify(session.accessToken);
    expect(supabase.userRequests - before).toBe(1);

    await auth.signOut(claims, session.accessToken, 'LOCAL');
    await expect(cached.verify(session.accessToken)).resolves.toMatchObject({ sub: claims.sub });

    clock += 5001;
    expect(await rejection(cached.verify(session.accessToken))).toBeInstanceOf(AuthError);
    // An ended session is final: no more questions for it.
    expect(await rejection(cached.verify(session.accessToken))).toBeInstanceOf(AuthError);
    expect(supabase.userRequests - before).toBe(2);
  });
});

describe('supabase auth: emails changed at Supabase', () => {
  it('takes the email from GoTrue’s answers, never from a token’s claims: on first sight, and at the next session check', async () => {
    let clock = Date.now();
    const watching = provider(supabase, { sessionCheckTtlMs: 5000, now: () => clock });
    const email = uniqueEmail();
    const session = await watching.signUp(email, PASSWORD);
    await watching.verify(session.accessToken);

    // Changed with supabase-js alone (Kiln never refreshes): the token still carries the old email.
    const moved = uniqueEmail();
    supabase.changeEmail(email, moved);
    const before = supabase.userRequests;
    await expect(watching.verify(session.accessToken)).resolves.toMatchObject({ email });
    // A remembered answer: no question, nothing written.
    expect(supabase.userRequests).toBe(before);
    expect(await profile(session.user.id)).toMatchObject({ email });

    clock += 5001;
    await expect(watching.verify(session.accessToken)).resolves.toMatchObject({ email });
    expect(supabase.userRequests).toBe(before + 1);
    expect(await profile(session.user.id)).toMatchObject({ email: moved });

    // Another user takes the old email; the old token on an instance that has not seen its user.
    const taker = await auth.signUp(email, PASSWORD);
    await expect(provider(supabase).verify(session.accessToken)).resolves.toMatchObject({ sub: session.user.id, email });
    expect(await profile(session.user.id)).toMatchObject({ email: moved });
    expect(await profile(taker.user.id)).toMatchObject({ email });
  });
});

describe('supabase auth: users without an email', () => {
  it('refuses anonymous and phone users’ tokens and refresh tokens with AuthError, and writes them no profile', async () => {
    const project = await fake({ anonymousSignIns: true });
    const anonymousAuth = provider(project);
    const direct = createClient(project.url, project.anonKey, { auth: { persistSession: false, autoRefreshToken: false } });
    const { data, error } = await direct.auth.signInAnonymously();
    expect(error).toBeNull();
    const session = data.session!;
    const claims = decodeJwt(session.access_token);
    expect(claims).toMatchObject({ sub: session.user.id, role: 'authenticated', email: '', is_anonymous: true, session_id: expect.any(String) });

    // The same live GoTrue session each time: only the email and is_anonymous claims differ.
    const tokens = {
      'an anonymous sign-in': session.access_token,
      'a phone sign-in (empty email)': await project.signToken({ ...claims, phone: '15550100', is_anonymous: false }),
      'a phone sign-in (no email claim)': await project.signToken({ ...claims, email: undefined, phone: '15550100', is_anonymous: false }),
      'an anonymous user with an email claim': await project.signToken({ ...claims, email: uniqueEmail() }),
    };
    const before = project.userRequests;
    for (const [name, token] of Object.entries(tokens)) {
      expect(await rejection(anonymousAuth.verify(token)), name).toBeInstanceOf(AuthError);
    }
    expect(await rejection(anonymousAuth.refresh(session.refresh_token))).toBeInstanceOf(AuthError);
    // Their claims refuse them: GoTrue was not asked.
    expect(project.userRequests).toBe(before);

    // The crafting is right: with an email and not anonymous, the same session passes the claims
    // check, and GoTrue's answer (the user has no email) refuses it: the token's email is not taken.
    const email = uniqueEmail();
    expect(await rejection(anonymousAuth.verify(await project.signToken({ ...claims, email, is_anonymous: false })))).toBeInstanceOf(AuthError);
    expect(project.userRequests).toBe(before + 1);
    expect(await profile(session.user.id)).toBeUndefined();
    expect(await database.db.$count(users, eq(users.email, email))).toBe(0);
  });
});

describe('supabase auth: tokens', () => {
  it('refuses forged, tampered, expired and malformed tokens', async () => {
    const otherKey = await generateKeyPair('ES256');
    await expectForgeriesRefused(auth, (claims) => supabase.signToken(claims), async (token, claims) => ({
      'another ES256 key under the same kid': await new SignJWT(claims)
        .setProtectedHeader({ alg: 'ES256', kid: decodeProtectedHeader(token).kid })
        .sign(otherKey.privateKey),
      'HS256 keyed with the anon key': await new SignJWT(claims)
        .setProtectedHeader({ alg: 'HS256', typ: 'JWT' })
        .sign(new TextEncoder().encode(supabase.anonKey)),
      'the anon key': supabase.anonKey,
      'the service-role key': supabase.serviceRoleKey,
    }));
  });

  it('refuses a token once it expires (clock under test control)', async () => {
    let clock = Date.now();
    const later = provider(supabase, { now: () => clock });
    const session = await auth.signUp(uniqueEmail(), PASSWORD);
    await expect(later.verify(session.accessToken)).resolves.toMatchObject({ sub: session.user.id });

    clock = session.expiresAt.getTime() + 1000;
    expect(await rejection(later.verify(session.accessToken))).toBeInstanceOf(AuthError);
  });

  it('verifies a legacy project with its HS256 secret, and only with it', async () => {
    const secret = randomBytes(32).toString('base64url');
    const legacy = await fake({ legacyJwtSecret: secret });
    const session = await provider(legacy, { jwtSecret: secret }).signUp(uniqueEmail(), PASSWORD);

    await expect(provider(legacy, { jwtSecret: secret }).verify(session.accessToken)).resolves.toMatchObject({ sub: session.user.id });
    expect(await rejection(provider(legacy).verify(session.accessToken))).toBeInstanceOf(AuthError);
  });
});
