import { sql } from 'drizzle-orm';
import { AuthError, ForbiddenError } from '../errors.js';
import type { Logger } from '../observability/logger.js';
import type { Db, Tx } from './client.js';
import { errorChain } from './error-chain.js';
import { isConnectionError, type RetryReport, retryThroughOutage } from './outage.js';

/** The verified claims of a request, in Supabase's shape. */
export interface Claims {
  sub: string;
  role: 'authenticated';
  email?: string;
  session_id?: string;
  exp?: number;
  [claim: string]: unknown;
}

/**
 * Where a use-case's statements run. `run` opens one short transaction: for a
 * user, as role `authenticated` with the claims set, so RLS guards every row.
 * A transaction that lost its connection before its work was done committed
 * nothing, and is run again once the database is back (outage.ts).
 */
export interface Scope {
  readonly userId: string | null;
  run<T>(work: (tx: Tx) => Promise<T>): Promise<T>;
}

/**
 * A user's scope. A write its row policies refuse is a ForbiddenError: a use-case checks the
 * viewer's role when it reads the project, and the role can change before its write (READ
 * COMMITTED: each statement sees the latest commits), so the policy is the one that says no.
 */
export function userScope(db: Db, claims: Claims): Scope {
  const claimsJson = JSON.stringify(claims);
  return {
    userId: claims.sub,
    run: (work) =>
      transaction(db, async (tx) => {
        // Claims go in as a bound parameter; the role is fixed here, never read from the token.
        // kiln.request: writes come through Kiln's use-cases (schema.ts, writesThroughKiln).
        await tx.execute(
          sql`select set_config('request.jwt.claims', ${claimsJson}, true), set_config('role', 'authenticated', true), set_config('kiln.request', 'api', true)`,
        );
        return work(tx);
      }).catch((error: unknown) => {
        throw isRowPolicyViolation(error) ? new ForbiddenError() : error;
      }),
  };
}

/**
 * Whether `error` (or what it wraps: drizzle puts the driver's error in `cause`) is a write the
 * viewer's role does not allow: SQLSTATE 42501 with PostgreSQL's "new row violates row-level
 * security policy" (server messages in English, as Supabase's are), or from the guard that only
 * an owner archives or sets a budget (migration 0002), which a co-owner demoted after the
 * use-case read the role meets. Other 42501s (a missing grant, the guards no use-case should
 * ever meet) are bugs: they stay unexpected, masked and logged.
 */
function isRowPolicyViolation(error: unknown): boolean {
  return [...errorChain(error)].some((e) => e.code === '42501' && /violates row-level security policy|^only the owner may /.test(e.message));
}

/** The server's own scope (worker, auth provider, migrations): no RLS. */
export function serviceScope(db: Db): Scope {
  return { userId: null, run: (work) => transaction(db, work) };
}

/**
 * The generation pipeline's scope: the service role, for work written to be run twice
 * (inserts with ON CONFLICT DO NOTHING, compare-and-set updates). So it is also run
 * again when the connection went during COMMIT and the commit may have gone through.
 */
export function pipelineScope(db: Db, logger: Logger): Scope {
  const log = logger.child({ source: 'DatabaseOutage' });
  return {
    userId: null,
    run: (work) =>
      transaction(db, work, {
        idempotent: true,
        onRetry: ({ attempt, delayMs, error }) => log.warn({ attempt, delayMs, err: error }, 'the database is unreachable; retrying'),
      }),
  };
}

function transaction<T>(
  db: Db,
  work: (tx: Tx) => Promise<T>,
  options: { idempotent?: boolean; onRetry?: (report: RetryReport) => void } = {},
): Promise<T> {
  let finished = false;
  return retryThroughOutage(
    () => {
      finished = false;
      return db.transaction(async (tx) => {
        const result = await work(tx);
        finished = true; // from here on, a lost connection may have lost only COMMIT's reply
        return result;
      });
    },
    (error) => isConnectionError(error) && (!finished || options.idempotent === true),
    options.onRetry ? { onRetry: options.onRetry } : {},
  );
}

/** A request without a valid token: any database work is refused. */
export function anonymousScope(problem?: string): Scope {
  return { userId: null, run: () => Promise.reject(new AuthError(problem)) };
}
