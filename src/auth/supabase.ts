import { createClient, isAuthApiError, isAuthSessionMissingError, type Session } from '@supabase/supabase-js';
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
  serviceRoleKey?: string;
  /** The project's legacy HS256 secret; without it only JWKS (asymmetric) keys are trusted. */
  jwtSecret?: string;
  /** How long a "session is live" answer from GoTrue is trusted (default 5000). */
  sessionCheckTtlMs?: number;
  /** Milliseconds since the epoch; tests pass a clock they control. */
  now?: () => number;
}

const MAX_KNOWN_USERS = 10_000;

/** Supabase Auth through supabase-js; profiles mirrored into the users table. */
export function createSupabaseAuth(options: SupabaseAuthOptions): AuthProvider {
  const { db, url, anonKey, now = Date.now } = options;
  const verifyToken = createSupabaseTokenVerifier(url, options.jwtSecret);
  const clientOptions = { auth: { persistSession: false, autoRefreshToken: false, detectSessionInUrl: false } };
  // A client keeps the last session and shares one in-flight refresh, so each user
  // operation gets its own; the server's calls (sign-out, session checks) carry the
  // user's JWT and share one. GoTrue authorises /logout by that JWT; the key passes the gateway.
  const userAuth = () => createClient(url, anonKey, clientOptions).auth;
  const serverAuth = createClient(url, options.serviceRoleKey ?? anonKey, clientOptions).auth;
  // Users whose profile row this process has written; a restart only writes them again.
  const knownUsers = new Set<string>();

  const liveness = createSessionLiveness({
    ttlMs: options.sessionCheckTtlMs ?? 5000,
    now,
    async ask(accessToken) {
      const { data, error } = await serverAuth.getUser(accessToken);
      if (data.user) return true;
      if (isAuthSessionMissingError(error) || (isAuthApiError(error) && error.code === 'user_not_found')) return false;
      // Refused for another reason (e.g. GoTrue rejects the JWT): refuse the token, remember nothing.
      if (isAuthApiError(error) && (error.status === 401 || error.status === 403)) throw new AuthError();
      throw new Error('Supabase Auth could not confirm the session', { cause: error });
    },
  });

  async function rememberProfile(user: AuthUser): Promise<void> {
    await upsertProfile(db, user);
    if (knownUsers.size >= MAX_KNOWN_USERS) knownUsers.clear();
    knownUsers.add(user.id);
  }

  async function verify(accessToken: string): Promise<Claims> {
    const claims = await verifyToken(accessToken, new Date(now()));
    const live = await liveness.isLive({
      sessionId: claims.session_id,
      userId: claims.sub,
      expiresAtMs: claims.exp * 1000,
      accessToken,
    });
    if (!live) throw new AuthError();
    // Users who signed up elsewhere (another app on the project) get a profile on first sight.
    if (!knownUsers.has(claims.sub)) await rememberProfile({ id: claims.sub, email: claims.email });
    return claims;
  }

  async function toAuthSession(session: Session): Promise<AuthSession> {
    // Kiln's users sign in by email: an anonymous or phone user's session (a refresh token
    // from another client of the project) is refused as verify refuses its access token.
    if (!session.user.email || session.user.is_anonymous) throw new AuthError();
    const user = { id: session.user.id, email: normaliseEmail(session.user.email) };
    await rememberProfile(user);
    const expiresAt = new Date((session.expires_at ?? Math.floor(now() / 1000) + session.expires_in) * 1000);
    return { accessToken: session.access_token, refreshToken: session.refresh_token, expiresAt, user };
  }

  return {
    async signUp(email, password) {
      const { data, error } = await userAuth().signUp({ email: validateSignUp(email, password), password });
      if (error) throw fromGoTrueError(error);
      // With email confirmation on, GoTrue answers without a session (also for a taken email, to not reveal it).
      if (!data.session) throw new AuthError(CONFIRM_EMAIL);
      return toAuthSession(data.session);
    },

    async signIn(email, password) {
      validateSignInPassword(password);
      const { data, error } = await userAuth().signInWithPassword({ email: normaliseEmail(email), password });
      if (error) throw fromGoTrueError(error);
      return toAuthSession(data.session);
    },

    async refresh(refreshToken) {
      const { data, error } = await userAuth().refreshSession({ refresh_token: refreshToken });
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
      knownUsers.clear();
    },
  };
}
