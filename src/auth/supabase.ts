import { isIP } from 'node:net';
import { createClient, isAuthApiError, isAuthSessionMissingError, type Session, type User } from '@supabase/supabase-js';
import type { Db } from '../db/client.js';
import type { Claims } from '../db/scope.js';
import { AuthError } from '../errors.js';
import { normaliseEmail, validateSignInPassword, validateSignUp } from './credentials.js';
import { upsertProfile } from './profiles.js';
import type { AuthProvider, AuthSession, AuthUser } from './provider.js';
import { createSessionLiveness } from './session-liveness.js';
import { CONFIRM_EMAIL, fromGoTrueError, fromRefreshError } from './supabase-errors.js';
import { createSupabaseTokenVerifier } from './supabase-tokens.js';

export interface SupabaseAuthOptions {
  db: Db;
  url: string;
  anonKey: string;
  /**
   * SUPABASE_SERVICE_ROLE_KEY: the legacy service_role key or a secret key (`sb_secret_…`), for
   * sign-out through the admin API; a secret key also carries sign-ups, sign-ins and refreshes,
   * with the end user's address.
   */
  serviceRoleKey?: string;
  /** The project's legacy HS256 secret; without it only JWKS (asymmetric) keys are trusted. */
  jwtSecret?: string;
  /** How long a "session is live" answer from GoTrue is trusted (default 5000). */
  sessionCheckTtlMs?: number;
  /** How long one call to GoTrue may take (SUPABASE_AUTH_TIMEOUT_MS, default 10000). */
  requestTimeoutMs?: number;
  /** Milliseconds since the epoch; tests pass a clock they control. */
  now?: () => number;
}

const MAX_KNOWN_USERS = 10_000;
/** Supabase's secret API keys: the only keys whose requests may name the end user's address (Sb-Forwarded-For). */
const SECRET_KEY_PREFIX = 'sb_secret_';

/**
 * The profile of a user as GoTrue answers it. Kiln's users sign in by email: an anonymous or
 * phone user (a session from another client of the project) is refused as no session.
 */
function profileOf(user: User): AuthUser {
  if (!user.email || user.is_anonymous) throw new AuthError();
  return { id: user.id, email: normaliseEmail(user.email) };
}

/** Supabase Auth through supabase-js; profiles mirrored into the users table. */
export function createSupabaseAuth(options: SupabaseAuthOptions): AuthProvider {
  const { db, url, anonKey, now = Date.now } = options;
  const verifyToken = createSupabaseTokenVerifier(url, options.jwtSecret);
  const clientOptions = {
    auth: { persistSession: false, autoRefreshToken: false, detectSessionInUrl: false },
    global: { fetch: fetchWithin(options.requestTimeoutMs ?? 10_000) },
  };
  // A client keeps the last session and shares one in-flight refresh, so each user
  // operation gets its own; the server's calls (sign-out, session checks) carry the
  // user's JWT and share one. GoTrue authorises /logout by that JWT; the key passes the gateway.
  // GoTrue limits sign-ins and refreshes per address, and from here sees only this server's: with
  // a secret key (and "IP address forwarding" on in the project) the user operations say whose
  // they are in Sb-Forwarded-For. Legacy anon and service_role keys and publishable keys cannot.
  const secretKey = options.serviceRoleKey?.startsWith(SECRET_KEY_PREFIX) ? options.serviceRoleKey : undefined;
  const userAuth = (clientIp: string | undefined) => {
    if (!secretKey) return createClient(url, anonKey, clientOptions).auth;
    const headers: Record<string, string> = clientIp && isIP(clientIp) ? { 'Sb-Forwarded-For': clientIp } : {};
    return createClient(url, secretKey, { ...clientOptions, global: { ...clientOptions.global, headers } }).auth;
  };
  const serverAuth = createClient(url, options.serviceRoleKey ?? anonKey, clientOptions).auth;
  // The email this process last wrote to each user's profile row, least recently written first;
  // a restart only writes them again.
  const knownEmails = new Map<string, string>();

  const liveness = createSessionLiveness({
    ttlMs: options.sessionCheckTtlMs ?? 5000,
    now,
    async ask(accessToken) {
      const { data, error } = await serverAuth.getUser(accessToken);
      if (data.user) {
        // GoTrue's user as it is now: the directory takes emails from such answers, never from a
        // token's claims (a token keeps the email it was issued with until it expires, also after
        // the user changed it and someone else took the old one). Only a change is written.
        const user = profileOf(data.user);
        if (knownEmails.get(user.id) !== user.email) await rememberProfile(user);
        return true;
      }
      if (isAuthSessionMissingError(error) || (isAuthApiError(error) && error.code === 'user_not_found')) return false;
      // Refused for another reason (e.g. GoTrue rejects the JWT): refuse the token, remember nothing.
      if (isAuthApiError(error) && (error.status === 401 || error.status === 403)) throw new AuthError();
      throw new Error('Supabase Auth could not confirm the session', { cause: error });
    },
  });

  async function rememberProfile(user: AuthUser): Promise<void> {
    await upsertProfile(db, user);
    knownEmails.delete(user.id);
    knownEmails.set(user.id, user.email);
    // Forgetting a user costs one GoTrue question on their next request (see verify).
    for (const id of knownEmails.keys()) {
      if (knownEmails.size <= MAX_KNOWN_USERS) break;
      knownEmails.delete(id);
    }
  }

  async function verify(accessToken: string): Promise<Claims> {
    const claims = await verifyToken(accessToken, new Date(now()));
    // Users who signed up elsewhere (another app on the project) get a profile on first sight,
    // from GoTrue's answer to the session check (see ask): so for a user this process has not
    // written, a remembered answer (which carries no user) will not do.
    const live = await liveness.isLive(
      { sessionId: claims.session_id, userId: claims.sub, expiresAtMs: claims.exp * 1000, accessToken },
      { askAgain: !knownEmails.has(claims.sub) },
    );
    if (!live) throw new AuthError();
    return claims;
  }

  async function toAuthSession(session: Session): Promise<AuthSession> {
    // Kiln's users sign in by email: an anonymous or phone user's session (a refresh token
    // from another client of the project) is refused as verify refuses its access token.
    const user = profileOf(session.user);
    await rememberProfile(user);
    const expiresAt = new Date((session.expires_at ?? Math.floor(now() / 1000) + session.expires_in) * 1000);
    return { accessToken: session.access_token, refreshToken: session.refresh_token, expiresAt, user };
  }

  return {
    async signUp(email, password, clientIp) {
      const { data, error } = await userAuth(clientIp).signUp({ email: validateSignUp(email, password), password });
      if (error) throw fromGoTrueError(error);
      // With email confirmation on, GoTrue answers without a session (also for a taken email, to not reveal it).
      if (!data.session) throw new AuthError(CONFIRM_EMAIL);
      return toAuthSession(data.session);
    },

    async signIn(email, password, clientIp) {
      validateSignInPassword(password);
      const { data, error } = await userAuth(clientIp).signInWithPassword({ email: normaliseEmail(email), password });
      if (error) throw fromGoTrueError(error);
      return toAuthSession(data.session);
    },

    async refresh(refreshToken, clientIp) {
      const { data, error } = await userAuth(clientIp).refreshSession({ refresh_token: refreshToken });
      if (error) throw fromRefreshError(error);
      if (!data.session) throw new AuthError();
      return toAuthSession(data.session);
    },

    async signOut(claims, accessToken, scope) {
      const { error } = await serverAuth.admin.signOut(accessToken, scope.toLowerCase() as 'local' | 'global' | 'others');
      // An already ended session is signed out: that is what was asked.
      if (error && !isAuthSessionMissingError(error)) throw fromGoTrueError(error);
      if (scope === 'LOCAL' && claims.session_id) {
        liveness.ended(claims.session_id, claims.sub, (claims.exp ?? now() / 1000) * 1000);
      } else {
        liveness.forgetUser(claims.sub, scope === 'OTHERS' ? claims.session_id : undefined);
      }
    },

    verify,

    async stillValid(accessTokens) {
      // One question per token, from the liveness cache when it has the answer; a few at a time.
      const valid = new Set<string>();
      const queue = [...accessTokens];
      const worker = async () => {
        for (let token = queue.shift(); token !== undefined; token = queue.shift()) {
          try {
            await verify(token);
            valid.add(token);
          } catch (error) {
            if (!(error instanceof AuthError)) valid.add(token); // GoTrue could not tell: ask again next time
          }
        }
      };
      await Promise.all(Array.from({ length: Math.min(8, queue.length) }, worker));
      return valid;
    },

    async close() {
      knownEmails.clear();
    },
  };
}

/**
 * fetch, given up after `ms`: a GoTrue that takes a request and never answers would hold the
 * sign-in waiting on it, and every request of a session whose check joined it, for as long as
 * undici waits (five minutes). Given up, it answers as a gateway does for an upstream that did
 * not in time, which supabase-js reads as GoTrue being down (a failed fetch it would also print).
 */
function fetchWithin(ms: number): typeof fetch {
  return async (input, init) => {
    const timeout = AbortSignal.timeout(ms);
    try {
      return await fetch(input, { ...init, signal: init?.signal ? AbortSignal.any([init.signal, timeout]) : timeout });
    } catch (error) {
      if (!timeout.aborted) throw error;
      return Response.json({ code: 'request_timeout', message: `Supabase Auth did not answer within ${ms} ms.` }, { status: 504 });
    }
  };
}
