import type { Db } from '../db/client.js';
import { isConnectionError, retryThroughOutage } from '../db/outage.js';
import { AuthError } from '../errors.js';
import type { Logger } from '../observability/logger.js';
import { emailTakenError, invalidCredentialsError, normaliseEmail, validateSignInPassword, validateSignUp } from './credentials.js';
import {
  createAccount,
  createSession,
  deleteEndedSessions,
  deleteTokensOfEndedSessions,
  findCredentials,
  isEmailTaken,
  isSessionLive,
  liveSessions,
  revokeSessions,
  rotateRefreshToken,
  type StoredSession,
} from './local-store.js';
import { type SessionClaims, signAccessToken, verifyAccessToken } from './local-tokens.js';
import { hashPassword, UNKNOWN_USER_HASH, verifyPassword } from './passwords.js';
import type { AuthProvider, AuthSession } from './provider.js';
import { hashRefreshToken } from './refresh-tokens.js';
import { loadSigningKey } from './signing-key.js';

const PRUNE_EVERY_MS = 60 * 60 * 1000;
/** Rows per delete statement, so a backlog is cleared in short statements that hold few locks. */
const PRUNE_BATCH = 1000;

export interface LocalAuthOptions {
  db: Db;
  accessTokenTtlSeconds: number;
  /** A session's absolute lifetime (SESSION_MAX_AGE_SECONDS): no refresh carries it further. */
  sessionMaxAgeSeconds: number;
  /** AUTH_JWT_SECRET; without it a key generated once and kept in the database. */
  jwtSecret?: string;
  /** Milliseconds since the epoch; tests pass a clock they control. */
  now?: () => number;
  /** Where pruning reports what it deleted (and its failures). */
  logger?: Logger;
}

export interface LocalAuth extends AuthProvider {
  /** Deletes ended sessions and their refresh tokens, as the hourly timer does. */
  prune(): Promise<{ sessions: number; refreshTokens: number }>;
}

/** The embedded provider: users, sessions and refresh tokens in Kiln's own database. */
export async function createLocalAuth(options: LocalAuthOptions): Promise<LocalAuth> {
  const { db, accessTokenTtlSeconds, sessionMaxAgeSeconds, now = Date.now } = options;
  const log = options.logger?.child({ source: 'LocalAuth' });
  const key = await loadSigningKey(db, options.jwtSecret);

  async function issue(session: StoredSession): Promise<AuthSession> {
    const subject = { userId: session.user.id, email: session.user.email, sessionId: session.sessionId };
    const issuedAt = Math.floor(now() / 1000);
    // An access token never outlives its session.
    const sessionEnds = Math.floor(session.startedAt.getTime() / 1000) + sessionMaxAgeSeconds;
    const ttl = Math.min(accessTokenTtlSeconds, sessionEnds - issuedAt);
    if (ttl <= 0) throw new AuthError();
    const { token, expiresAt } = await signAccessToken(key, subject, issuedAt, ttl);
    return { accessToken: token, refreshToken: session.refreshToken, expiresAt, user: session.user };
  }

  let closed = false;
  async function prune() {
    // Batch after batch until one comes back short; close() stops it between statements.
    const deleteAll = async (batch: (db: Db, maxAgeSeconds: number, limit: number) => Promise<number>) => {
      let total = 0;
      for (let deleted = PRUNE_BATCH; deleted === PRUNE_BATCH && !closed; total += deleted) {
        deleted = await batch(db, sessionMaxAgeSeconds, PRUNE_BATCH);
      }
      return total;
    };
    const refreshTokens = await deleteAll(deleteTokensOfEndedSessions);
    const sessions = await deleteAll(deleteEndedSessions);
    if (sessions + refreshTokens > 0) log?.info({ sessions, refreshTokens }, 'ended sessions pruned');
    return { sessions, refreshTokens };
  }
  // Every instance prunes: a row another is deleting is skipped, so running together is harmless.
  let pruning: Promise<unknown> | undefined;
  const timer = setInterval(() => {
    pruning ??= prune()
      .catch((error: unknown) => log?.warn({ err: error }, 'pruning ended sessions failed'))
      .finally(() => (pruning = undefined));
  }, PRUNE_EVERY_MS).unref();

  return {
    async signUp(email, password) {
      const normalised = validateSignUp(email, password);
      const passwordHash = await hashPassword(password);
      try {
        return await issue(await createAccount(db, normalised, passwordHash));
      } catch (error) {
        if (isEmailTaken(error)) throw emailTakenError();
        throw error;
      }
    },

    async signIn(email, password) {
      validateSignInPassword(password);
      const credentials = await findCredentials(db, normaliseEmail(email));
      // An unknown email costs one KDF run too (and waits for a turn like the others: passwords.ts),
      // so timing does not tell which emails have accounts.
      const matches = await verifyPassword(password, credentials?.passwordHash ?? UNKNOWN_USER_HASH);
      if (!credentials || !matches) throw invalidCredentialsError();
      return issue(await createSession(db, { id: credentials.id, email: credentials.email }));
    },

    async refresh(refreshToken) {
      const result = await rotateRefreshToken(db, hashRefreshToken(refreshToken), sessionMaxAgeSeconds);
      if (result.kind !== 'rotated') throw new AuthError();
      return issue(result.session);
    },

    async signOut(claims, _accessToken, scope) {
      if (!claims.session_id) throw new AuthError();
      await revokeSessions(db, claims.sub, claims.session_id, scope);
    },

    async verify(accessToken) {
      const claims = await verifyAccessToken(key, accessToken, new Date(now()));
      // A read, always safe to repeat: a client arriving during an outage waits for the
      // database like the transactions in flight (scope.ts) instead of being refused.
      const live = await retryThroughOutage(() => isSessionLive(db, claims.session_id, claims.sub, sessionMaxAgeSeconds), isConnectionError);
      if (!live) throw new AuthError();
      return claims;
    },

    async stillValid(accessTokens) {
      const verified: [string, SessionClaims][] = [];
      for (const token of accessTokens) {
        // Signature and expiry are checked here; the sessions in one query below.
        const claims = await verifyAccessToken(key, token, new Date(now())).catch(() => undefined);
        if (claims) verified.push([token, claims]);
      }
      const live = await liveSessions(db, verified.map(([, c]) => ({ sessionId: c.session_id, userId: c.sub })), sessionMaxAgeSeconds);
      return new Set(verified.filter(([, c]) => live.has(c.session_id)).map(([token]) => token));
    },

    prune,

    async close() {
      closed = true;
      clearInterval(timer);
      await pruning;
    },
  };
}
