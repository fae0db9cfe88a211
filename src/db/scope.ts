import { sql } from 'drizzle-orm';
import { AuthError } from '../errors.js';
import type { Logger } from '../observability/logger.js';
import type { Db, Tx } from './client.js';
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
      }),
  };
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
