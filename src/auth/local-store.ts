import { randomUUID } from 'node:crypto';
import { and, eq, gt, inArray, isNull, lt, ne, not, or, sql } from 'drizzle-orm';
import type { Db, Tx } from '../db/client.js';
import { errorChain } from '../db/error-chain.js';
import { authSessions, localCredentials, refreshTokens, users } from '../db/schema.js';
import { serviceScope } from '../db/scope.js';
import type { AuthUser, SignOutScope } from './provider.js';
import { newRefreshToken } from './refresh-tokens.js';

// The local provider's queries. Every auth table is server-only (RLS refuses requests),
// so these run in the service scope; single statements run without a transaction.

export interface StoredSession {
  sessionId: string;
  /** When the session began (sign-up or sign-in): its absolute lifetime counts from here. */
  startedAt: Date;
  refreshToken: string;
  user: AuthUser;
}

/** Sessions younger than `maxAgeSeconds`: SESSION_MAX_AGE_SECONDS ends a session however often it is refreshed. */
const youngerThan = (maxAgeSeconds: number) => gt(authSessions.createdAt, sql`now() - ${maxAgeSeconds} * interval '1 second'`);

/**
 * Sessions no refresh or request can use again: past their absolute lifetime, or revoked
 * more than a day ago (kept that long only to show why they ended). Neither comes back,
 * so deleting them changes no answer: their tokens are refused as unknown instead.
 */
const ended = (maxAgeSeconds: number) => or(not(youngerThan(maxAgeSeconds)), lt(authSessions.revokedAt, sql`now() - interval '1 day'`));

/**
 * How long a spent refresh token still gets a successor (Supabase Auth's refresh token reuse
 * interval, default 10 s): long enough for concurrent or retried refreshes from one client.
 */
export const REFRESH_TOKEN_REUSE_INTERVAL_SECONDS = 10;

export type RotationResult =
  | { kind: 'rotated'; session: StoredSession }
  /** The token was spent longer than the reuse interval ago: its session is now revoked. */
  | { kind: 'reused' }
  /** Unknown token, or its session has ended. */
  | { kind: 'invalid' };

/** A new user with credentials and a first session, all or nothing. A taken email throws (see isEmailTaken). */
export function createAccount(db: Db, email: string, passwordHash: string): Promise<StoredSession> {
  return serviceScope(db).run(async (tx) => {
    const user = { id: randomUUID(), email };
    await tx.insert(users).values(user);
    await tx.insert(localCredentials).values({ userId: user.id, passwordHash });
    return startSession(tx, user);
  });
}

/** The error of createAccount when the email is taken: the unique index decides, so racing sign-ups cannot both win. */
export function isEmailTaken(error: unknown): boolean {
  // drizzle wraps the driver's error in `cause`; postgres.js names the constraint constraint_name, PGlite constraint.
  for (const e of errorChain(error)) {
    const { code, constraint_name, constraint } = e as { code?: unknown; constraint_name?: string; constraint?: string };
    if (code === '23505') return (constraint_name ?? constraint) === 'users_email_key';
  }
  return false;
}

export function createSession(db: Db, user: AuthUser): Promise<StoredSession> {
  return serviceScope(db).run((tx) => startSession(tx, user));
}

export async function findCredentials(db: Db, email: string): Promise<(AuthUser & { passwordHash: string }) | undefined> {
  const [row] = await db
    .select({ id: users.id, email: users.email, passwordHash: localCredentials.passwordHash })
    .from(users)
    .innerJoin(localCredentials, eq(localCredentials.userId, users.id))
    .where(eq(users.email, email));
  return row;
}

/**
 * Spends a refresh token and issues its successor in the same session. A token presented
 * again within REFRESH_TOKEN_REUSE_INTERVAL_SECONDS of being spent (a double click, a retry,
 * two tabs at once) gets another successor; later, it may have been stolen, so its use
 * revokes the session. The interval is measured with the database's clock, as used_at is.
 */
export function rotateRefreshToken(db: Db, tokenHash: string, maxAgeSeconds: number): Promise<RotationResult> {
  return serviceScope(db).run(async (tx): Promise<RotationResult> => {
    // Uses of one session's tokens take turns on its row; the read below, a statement of its
    // own, then sees what the use before this one committed.
    const ofToken = tx.select({ sessionId: refreshTokens.sessionId }).from(refreshTokens).where(eq(refreshTokens.tokenHash, tokenHash));
    await tx.select({ id: authSessions.id }).from(authSessions).where(eq(authSessions.id, ofToken)).for('update');
    const [token] = await tx
      .select({
        sessionId: refreshTokens.sessionId,
        live: sql<boolean>`${authSessions.revokedAt} is null and ${youngerThan(maxAgeSeconds)}`,
        spent: sql<boolean>`${refreshTokens.usedAt} is not null`,
        justSpent: sql<boolean>`${refreshTokens.usedAt} > now() - ${REFRESH_TOKEN_REUSE_INTERVAL_SECONDS} * interval '1 second'`,
      })
      .from(refreshTokens)
      .innerJoin(authSessions, eq(authSessions.id, refreshTokens.sessionId))
      .where(eq(refreshTokens.tokenHash, tokenHash));
    if (!token?.live) return { kind: 'invalid' };

    if (!token.spent) {
      // Other unspent tokens of the session are successors a retry got within the reuse
      // interval and the client dropped: spent with this one, so the session keeps one live
      // token and a later use of them is reuse too.
      await tx
        .update(refreshTokens)
        .set({ usedAt: sql`now()` })
        .where(and(eq(refreshTokens.sessionId, token.sessionId), isNull(refreshTokens.usedAt)));
    } else if (!token.justSpent) {
      // Returned, not thrown, so the revocation commits.
      await tx.update(authSessions).set({ revokedAt: sql`now()`, revokedReason: 'refresh_token_reuse' }).where(eq(authSessions.id, token.sessionId));
      return { kind: 'reused' };
    }
    return { kind: 'rotated', session: await continueSession(tx, token.sessionId) };
  });
}

/** LOCAL ends this session, GLOBAL every session of the user, OTHERS all but this one. */
export async function revokeSessions(db: Db, userId: string, sessionId: string, scope: SignOutScope): Promise<void> {
  const which = {
    LOCAL: eq(authSessions.id, sessionId),
    GLOBAL: undefined,
    OTHERS: ne(authSessions.id, sessionId),
  }[scope];
  await db
    .update(authSessions)
    .set({ revokedAt: sql`now()`, revokedReason: 'sign_out' })
    .where(and(eq(authSessions.userId, userId), isNull(authSessions.revokedAt), which));
}

/** One primary-key lookup per verified request: revocation and the session's age take effect at once. */
export async function isSessionLive(db: Db, sessionId: string, userId: string, maxAgeSeconds: number): Promise<boolean> {
  const [row] = await db
    .select({ id: authSessions.id })
    .from(authSessions)
    .where(and(eq(authSessions.id, sessionId), eq(authSessions.userId, userId), isNull(authSessions.revokedAt), youngerThan(maxAgeSeconds)));
  return row !== undefined;
}

/** isSessionLive for many sessions in one query: the ids among them that are live and belong to their user. */
export async function liveSessions(db: Db, sessions: { sessionId: string; userId: string }[], maxAgeSeconds: number): Promise<Set<string>> {
  if (sessions.length === 0) return new Set();
  const rows = await db
    .select({ id: authSessions.id, userId: authSessions.userId })
    .from(authSessions)
    .where(and(inArray(authSessions.id, sessions.map((s) => s.sessionId)), isNull(authSessions.revokedAt), youngerThan(maxAgeSeconds)));
  const owners = new Map(rows.map((row) => [row.id, row.userId]));
  return new Set(sessions.filter((s) => owners.get(s.sessionId) === s.userId).map((s) => s.sessionId));
}

/**
 * Deletes up to `limit` refresh tokens of ended sessions; deleting their sessions afterwards
 * then cascades to few rows, so no statement grows with the tokens a session piled up. Rows
 * another instance is deleting are skipped, never waited for. Spent tokens of a live
 * session stay: reusing one is what revokes it (rotateRefreshToken).
 */
export async function deleteTokensOfEndedSessions(db: Db, maxAgeSeconds: number, limit: number): Promise<number> {
  const batch = db
    .select({ tokenHash: refreshTokens.tokenHash })
    .from(refreshTokens)
    .where(inArray(refreshTokens.sessionId, db.select({ id: authSessions.id }).from(authSessions).where(ended(maxAgeSeconds))))
    .limit(limit)
    .for('update', { skipLocked: true });
  const deleted = await db.delete(refreshTokens).where(inArray(refreshTokens.tokenHash, batch)).returning({ tokenHash: refreshTokens.tokenHash });
  return deleted.length;
}

/** Deletes up to `limit` ended sessions (and any tokens left to them), skipping rows another instance holds. */
export async function deleteEndedSessions(db: Db, maxAgeSeconds: number, limit: number): Promise<number> {
  const batch = db.select({ id: authSessions.id }).from(authSessions).where(ended(maxAgeSeconds)).limit(limit).for('update', { skipLocked: true });
  const deleted = await db.delete(authSessions).where(inArray(authSessions.id, batch)).returning({ id: authSessions.id });
  return deleted.length;
}

async function startSession(tx: Tx, user: AuthUser): Promise<StoredSession> {
  const [session] = await tx.insert(authSessions).values({ userId: user.id }).returning({ id: authSessions.id, startedAt: authSessions.createdAt });
  if (!session) throw new Error('auth_sessions insert returned no row');
  return { sessionId: session.id, startedAt: session.startedAt, refreshToken: await addRefreshToken(tx, session.id), user };
}

async function continueSession(tx: Tx, sessionId: string): Promise<StoredSession> {
  const [owner] = await tx
    .update(authSessions)
    .set({ refreshedAt: sql`now()` })
    .where(eq(authSessions.id, sessionId))
    .returning({ userId: authSessions.userId, startedAt: authSessions.createdAt });
  const [user] = owner ? await tx.select({ id: users.id, email: users.email }).from(users).where(eq(users.id, owner.userId)) : [];
  if (!owner || !user) throw new Error(`session ${sessionId} has no user`);
  return { sessionId, startedAt: owner.startedAt, refreshToken: await addRefreshToken(tx, sessionId), user };
}

async function addRefreshToken(tx: Tx, sessionId: string): Promise<string> {
  const { token, tokenHash } = newRefreshToken();
  await tx.insert(refreshTokens).values({ tokenHash, sessionId });
  return token;
}
