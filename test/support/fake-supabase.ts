import { randomBytes, randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { exportJWK, generateKeyPair, type JWTPayload, jwtVerify, SignJWT } from 'jose';

// A stand-in for Supabase Auth (GoTrue) at the network edge, close enough to its
// HTTP API that the real supabase-js talks to it: sessions, refresh-token rotation
// with reuse detection, /user session checks, /logout scopes, a JWKS with an ES256
// key, and errors in GoTrue's two body shapes (chosen by X-Supabase-Api-Version). Its gateway
// takes the legacy anon and service_role keys and a secret key (`sb_secret_…`), and records
// the end-user address each request names (Sb-Forwarded-For).

/** A request to GoTrue (JWKS aside), as the gateway received it. */
export interface FakeSupabaseRequest {
  /** `POST /auth/v1/token?grant_type=password`, `GET /auth/v1/user`, … */
  route: string;
  /** Which of the project's keys it came with. */
  key: 'anon' | 'service_role' | 'secret';
  /** Its Sb-Forwarded-For header, if any. */
  forwardedFor?: string;
}

export interface FakeSupabaseOptions {
  /** Sign-ups wait for confirmEmail() (GoTrue's default on hosted projects). */
  requireEmailConfirmation?: boolean;
  accessTokenTtlSeconds?: number;
  /** GoTrue's password.min_length (default 6). */
  minPasswordLength?: number;
  /** A legacy project: HS256 tokens signed with this secret, and an empty JWKS. */
  legacyJwtSecret?: string;
  /** Anonymous sign-ins enabled (off by default, as in GoTrue): a sign-up with no email nor phone makes a user without either. */
  anonymousSignIns?: boolean;
}

export interface FakeSupabase {
  readonly url: string;
  readonly anonKey: string;
  readonly serviceRoleKey: string;
  /** A secret API key of the project (`sb_secret_…`), with which Sb-Forwarded-For is honoured. */
  readonly secretKey: string;
  /** The requests received so far (JWKS aside), oldest first. */
  readonly requests: readonly FakeSupabaseRequest[];
  /** The settings that make Kiln use this fake as its auth provider. */
  readonly kilnEnv: { AUTH_PROVIDER: 'supabase'; SUPABASE_URL: string; SUPABASE_ANON_KEY: string; SUPABASE_SERVICE_ROLE_KEY: string };
  /** GET /auth/v1/user requests served so far (the provider's session checks). */
  readonly userRequests: number;
  confirmEmail(email: string): void;
  /** Deletes the user and their sessions, as the dashboard or the admin API does. */
  deleteUser(email: string): void;
  /**
   * Gives the user another email (a confirmed email change, or the admin API). Their sessions
   * stay live, and access tokens already issued keep the old email until they expire.
   */
  changeEmail(from: string, to: string): void;
  /** The next request (JWKS aside) fails with GoTrue's error of this status and code. */
  failNextRequest(status: number, code: string, message: string): void;
  /** The next request (JWKS aside) is taken and never answered, as by a GoTrue that hangs. */
  stallNextRequest(): void;
  /** A JWT signed with the server's real key; the claims given replace the defaults. */
  signToken(claims: JWTPayload): Promise<string>;
  close(): Promise<void>;
}

interface FakeUser {
  id: string;
  /** '' for an anonymous user, as GoTrue answers. */
  email: string;
  anonymous?: boolean;
  password: string;
  confirmedAt?: string;
  createdAt: string;
}

interface RefreshTokenRow {
  sessionId: string;
  revoked: boolean;
}

class GoTrueError extends Error {
  constructor(readonly status: number, readonly code: string, message: string, readonly extra: object = {}) {
    super(message);
  }
}

const API_VERSION = '2024-01-01';

export async function startFakeSupabase(options: FakeSupabaseOptions = {}): Promise<FakeSupabase> {
  const ttlSeconds = options.accessTokenTtlSeconds ?? 3600;
  const minPasswordLength = options.minPasswordLength ?? 6;
  const kid = randomUUID();
  const { privateKey, publicKey } = await generateKeyPair('ES256', { extractable: true });
  const signing = options.legacyJwtSecret
    ? { alg: 'HS256', sign: new TextEncoder().encode(options.legacyJwtSecret), verify: new TextEncoder().encode(options.legacyJwtSecret) }
    : { alg: 'ES256', sign: privateKey, verify: publicKey };
  const jwks = options.legacyJwtSecret ? { keys: [] } : { keys: [{ ...(await exportJWK(publicKey)), kid, alg: 'ES256', use: 'sig', key_ops: ['verify'] }] };

  const users = new Map<string, FakeUser>();
  const sessions = new Map<string, { userId: string }>();
  const refreshTokens = new Map<string, RefreshTokenRow>();
  let injectedFailure: GoTrueError | undefined;
  let stallNext = false;
  let userRequests = 0;
  const requests: FakeSupabaseRequest[] = [];

  const server = createServer((req, res) => {
    handle(req, res).catch((error: unknown) => {
      const failure = error instanceof GoTrueError ? error : new GoTrueError(500, 'unexpected_failure', String(error));
      sendError(req, res, failure);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

  const sign = (claims: JWTPayload) =>
    new SignJWT(claims).setProtectedHeader({ alg: signing.alg, typ: 'JWT', ...(options.legacyJwtSecret ? {} : { kid }) }).sign(signing.sign);
  const now = () => Math.floor(Date.now() / 1000);
  const anonKey = await sign({ iss: 'supabase', role: 'anon', iat: now(), exp: now() + 10 * 365 * 86400 });
  const serviceRoleKey = await sign({ iss: 'supabase', role: 'service_role', iat: now(), exp: now() + 10 * 365 * 86400 });
  const secretKey = `sb_secret_${randomBytes(24).toString('base64url')}`;
  const keys = new Map<unknown, FakeSupabaseRequest['key']>([
    [anonKey, 'anon'],
    [serviceRoleKey, 'service_role'],
    [secretKey, 'secret'],
  ]);

  async function handle(req: IncomingMessage, res: ServerResponse) {
    const { pathname, searchParams } = new URL(req.url ?? '/', url);
    if (req.method === 'GET' && pathname === '/auth/v1/.well-known/jwks.json') return sendJson(res, 200, jwks);
    // The API gateway in front of GoTrue turns away requests without a project key.
    const key = keys.get(req.headers.apikey);
    if (!key) return sendJson(res, 401, { message: 'Invalid API key' });
    const forwardedFor = req.headers['sb-forwarded-for'];
    requests.push({ route: `${req.method} ${req.url}`, key, ...(typeof forwardedFor === 'string' ? { forwardedFor } : {}) });
    if (stallNext) {
      stallNext = false;
      return; // the response stays open until close()
    }
    if (injectedFailure) {
      const failure = injectedFailure;
      injectedFailure = undefined;
      throw failure;
    }
    const route = `${req.method} ${pathname}`;
    if (route === 'POST /auth/v1/signup') return sendJson(res, 200, await signUp(await readJson(req)));
    if (route === 'POST /auth/v1/token' && searchParams.get('grant_type') === 'password') {
      return sendJson(res, 200, await passwordGrant(await readJson(req)));
    }
    if (route === 'POST /auth/v1/token' && searchParams.get('grant_type') === 'refresh_token') {
      return sendJson(res, 200, await refreshGrant(await readJson(req)));
    }
    if (route === 'GET /auth/v1/user') {
      userRequests += 1;
      const { user } = await authenticate(req);
      return sendJson(res, 200, userJson(user));
    }
    if (route === 'POST /auth/v1/logout') {
      logout(await authenticate(req), searchParams.get('scope') ?? 'global');
      res.writeHead(204).end();
      return;
    }
    throw new GoTrueError(404, 'not_found', 'Not found');
  }

  async function signUp(body: Record<string, unknown>) {
    // supabase-js signInAnonymously() posts to /signup with neither email nor phone.
    if (body.email === undefined && body.phone === undefined) return signInAnonymously();
    const email = String(body.email ?? '').trim().toLowerCase();
    const password = String(body.password ?? '');
    if (!/^[^@\s]+@[^@\s]+\.[^@\s]+$/.test(email)) {
      throw new GoTrueError(400, 'validation_failed', 'Unable to validate email address: invalid format');
    }
    if (password.length < minPasswordLength) {
      throw new GoTrueError(422, 'weak_password', `Password should be at least ${minPasswordLength} characters.`, {
        weak_password: { reasons: ['length'] },
      });
    }
    const existing = users.get(email);
    if (existing && !options.requireEmailConfirmation) throw new GoTrueError(422, 'user_already_exists', 'User already registered');
    // With confirmation on, GoTrue answers a taken email like a new one, so sign-up does not reveal accounts.
    if (existing) return { ...userJson({ ...existing, id: randomUUID() }), confirmation_sent_at: new Date().toISOString() };
    const createdAt = new Date().toISOString();
    const user: FakeUser = { id: randomUUID(), email, password, createdAt };
    users.set(email, user);
    if (options.requireEmailConfirmation) return { ...userJson(user), confirmation_sent_at: createdAt };
    user.confirmedAt = createdAt;
    return startSession(user);
  }

  async function signInAnonymously() {
    if (!options.anonymousSignIns) throw new GoTrueError(422, 'anonymous_provider_disabled', 'Anonymous sign-ins are disabled');
    const createdAt = new Date().toISOString();
    const user: FakeUser = { id: randomUUID(), email: '', password: '', anonymous: true, createdAt };
    users.set(`anonymous:${user.id}`, user);
    return startSession(user);
  }

  async function passwordGrant(body: Record<string, unknown>) {
    const user = users.get(String(body.email ?? '').trim().toLowerCase());
    if (!user || user.password !== body.password) throw new GoTrueError(400, 'invalid_credentials', 'Invalid login credentials');
    if (!user.confirmedAt) throw new GoTrueError(400, 'email_not_confirmed', 'Email not confirmed');
    return startSession(user);
  }

  async function refreshGrant(body: Record<string, unknown>) {
    const token = String(body.refresh_token ?? '');
    const row = refreshTokens.get(token);
    if (!row) throw new GoTrueError(400, 'refresh_token_not_found', 'Invalid Refresh Token: Refresh Token Not Found');
    if (row.revoked) {
      // Reuse: GoTrue revokes the whole token family (its session's tokens).
      for (const other of refreshTokens.values()) if (other.sessionId === row.sessionId) other.revoked = true;
      throw new GoTrueError(400, 'refresh_token_already_used', 'Invalid Refresh Token: Already Used');
    }
    row.revoked = true;
    const session = sessions.get(row.sessionId);
    const user = session && [...users.values()].find((u) => u.id === session.userId);
    if (!user) throw new GoTrueError(400, 'refresh_token_not_found', 'Invalid Refresh Token: Refresh Token Not Found');
    return sessionJson(user, row.sessionId);
  }

  async function authenticate(req: IncomingMessage) {
    const bearer = /^Bearer (.+)$/i.exec(req.headers.authorization ?? '')?.[1];
    if (!bearer) throw new GoTrueError(401, 'no_authorization', 'This endpoint requires a valid Bearer token');
    let claims: JWTPayload;
    try {
      ({ payload: claims } = await jwtVerify(bearer, signing.verify, { algorithms: [signing.alg] }));
    } catch (error) {
      throw new GoTrueError(403, 'bad_jwt', `invalid JWT: unable to parse or verify signature, ${(error as Error).message}`);
    }
    const sessionId = String(claims.session_id ?? '');
    if (!sessions.has(sessionId)) throw new GoTrueError(403, 'session_not_found', 'Session from session_id claim in JWT does not exist');
    const user = [...users.values()].find((u) => u.id === claims.sub);
    if (!user) throw new GoTrueError(403, 'user_not_found', 'User from sub claim in JWT does not exist');
    return { user, sessionId };
  }

  function logout({ user, sessionId }: { user: FakeUser; sessionId: string }, scope: string) {
    for (const [id, session] of sessions) {
      const ends = scope === 'local' ? id === sessionId : scope === 'others' ? id !== sessionId && session.userId === user.id : session.userId === user.id;
      if (!ends) continue;
      sessions.delete(id);
      // Refresh tokens go with their session (a foreign key with cascade in GoTrue).
      for (const [token, row] of refreshTokens) if (row.sessionId === id) refreshTokens.delete(token);
    }
  }

  function startSession(user: FakeUser) {
    const sessionId = randomUUID();
    sessions.set(sessionId, { userId: user.id });
    return sessionJson(user, sessionId);
  }

  async function sessionJson(user: FakeUser, sessionId: string) {
    const refreshToken = randomBytes(16).toString('base64url');
    refreshTokens.set(refreshToken, { sessionId, revoked: false });
    const iat = now();
    const accessToken = await sign({
      iss: `${url}/auth/v1`,
      sub: user.id,
      aud: 'authenticated',
      exp: iat + ttlSeconds,
      iat,
      email: user.email,
      phone: '',
      app_metadata: user.anonymous ? {} : { provider: 'email', providers: ['email'] },
      user_metadata: {},
      role: 'authenticated',
      aal: 'aal1',
      amr: [{ method: user.anonymous ? 'anonymous' : 'password', timestamp: iat }],
      session_id: sessionId,
      is_anonymous: user.anonymous ?? false,
    });
    return {
      access_token: accessToken,
      token_type: 'bearer',
      expires_in: ttlSeconds,
      expires_at: iat + ttlSeconds,
      refresh_token: refreshToken,
      user: userJson(user),
    };
  }

  return {
    url,
    anonKey,
    serviceRoleKey,
    secretKey,
    requests,
    kilnEnv: { AUTH_PROVIDER: 'supabase', SUPABASE_URL: url, SUPABASE_ANON_KEY: anonKey, SUPABASE_SERVICE_ROLE_KEY: serviceRoleKey },
    get userRequests() {
      return userRequests;
    },
    confirmEmail(email) {
      const user = users.get(email.toLowerCase());
      if (!user) throw new Error(`fake Supabase has no user ${email}`);
      user.confirmedAt = new Date().toISOString();
    },
    deleteUser(email) {
      const user = users.get(email.toLowerCase());
      if (!user) throw new Error(`fake Supabase has no user ${email}`);
      users.delete(email.toLowerCase());
      for (const [id, session] of sessions) {
        if (session.userId !== user.id) continue;
        sessions.delete(id);
        for (const [token, row] of refreshTokens) if (row.sessionId === id) refreshTokens.delete(token);
      }
    },
    changeEmail(from, to) {
      const user = users.get(from.toLowerCase());
      if (!user) throw new Error(`fake Supabase has no user ${from}`);
      if (users.has(to.toLowerCase())) throw new Error(`fake Supabase already has a user ${to}`);
      users.delete(from.toLowerCase());
      user.email = to.toLowerCase();
      users.set(user.email, user);
    },
    failNextRequest(status, code, message) {
      injectedFailure = new GoTrueError(status, code, message);
    },
    stallNextRequest() {
      stallNext = true;
    },
    signToken: (claims) => sign({ iss: `${url}/auth/v1`, aud: 'authenticated', role: 'authenticated', iat: now(), exp: now() + ttlSeconds, ...claims }),
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve, reject) => server.close((error) => (error ? reject(error) : resolve())));
    },
  };
}

function userJson(user: FakeUser) {
  return {
    id: user.id,
    aud: 'authenticated',
    role: 'authenticated',
    email: user.email,
    email_confirmed_at: user.confirmedAt,
    confirmed_at: user.confirmedAt,
    phone: '',
    app_metadata: user.anonymous ? {} : { provider: 'email', providers: ['email'] },
    user_metadata: {},
    identities: [],
    created_at: user.createdAt,
    updated_at: user.createdAt,
    is_anonymous: user.anonymous ?? false,
  };
}

async function readJson(req: IncomingMessage): Promise<Record<string, unknown>> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  try {
    const body: unknown = JSON.parse(Buffer.concat(chunks).toString('utf8') || '{}');
    if (body && typeof body === 'object') return body as Record<string, unknown>;
  } catch {
    // Answered below like GoTrue does.
  }
  throw new GoTrueError(400, 'bad_json', 'Could not parse request body as JSON');
}

function sendJson(res: ServerResponse, status: number, body: unknown) {
  res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
}

/** GoTrue's error shapes: `{ code, message }` for API version 2024-01-01 and later (echoed), else `{ code, error_code, msg }`. */
function sendError(req: IncomingMessage, res: ServerResponse, error: GoTrueError) {
  const requested = String(req.headers['x-supabase-api-version'] ?? '');
  if (/^\d{4}-\d{2}-\d{2}$/.test(requested) && requested >= API_VERSION) {
    res.setHeader('x-supabase-api-version', API_VERSION);
    return sendJson(res, error.status, { code: error.code, message: error.message, ...error.extra });
  }
  res.setHeader('x-sb-error-code', error.code);
  sendJson(res, error.status, { code: error.status, error_code: error.code, msg: error.message, ...error.extra });
}
