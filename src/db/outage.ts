import { errorChain } from './error-chain.js';

// Riding out a database outage (a managed-Postgres failover, a restart): work that
// failed because the connection was lost is tried again, with back-off, for up to
// OUTAGE_RETRY_MS, instead of failing the run or the request that needed it.
//
// Only connection errors are retried. Whether retrying is safe depends on how far the
// transaction got (see scope.ts): when the connection goes before the work finished,
// nothing was committed; when it goes during COMMIT, the commit may have gone through,
// so only work written to be run twice (ON CONFLICT DO NOTHING, compare-and-set) is
// retried then.

/** How long work waits for the database to come back before it fails (failovers take up to ~30 s). */
export const OUTAGE_RETRY_MS = 45_000;
/**
 * How long a connection that awaits a reply may hear nothing from the database before it is
 * dropped as dead (silent-connections.ts): far above any statement Kiln runs in a request or
 * a run, far below the 10-15 minutes TCP takes to give up on a vanished host.
 */
export const DATABASE_SILENCE_LIMIT_MS = 60_000;
const FIRST_DELAY_MS = 100;
/** The longest pause between attempts: work resumes within this of the database's return. */
const MAX_DELAY_MS = 2_000;

// Node's socket errors and postgres.js's own codes for a connection that failed or went away
// (CONNECTION_ENDED and CONNECTION_DESTROYED are our own close(): not transient).
const CONNECTION_CODES = new Set([
  'ECONNRESET',
  'ECONNREFUSED',
  'ECONNABORTED',
  'EPIPE',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EAI_AGAIN',
  'CONNECTION_CLOSED',
  'CONNECT_TIMEOUT',
]);
// SQLSTATE: admin_shutdown, crash_shutdown, cannot_connect_now (a server restarting or failing over).
const SHUTDOWN_STATES = new Set(['57P01', '57P02', '57P03']);

/** Whether `error` (or what it wraps: drizzle puts the driver's error in `cause`) is a lost or refused connection. */
export function isConnectionError(error: unknown): boolean {
  for (const { code } of errorChain(error)) {
    if (typeof code !== 'string') continue;
    // SQLSTATE class 08: connection exception.
    if (CONNECTION_CODES.has(code) || SHUTDOWN_STATES.has(code) || /^08[0-9A-Z]{3}$/.test(code)) return true;
  }
  return false;
}

/**
 * The database stayed unreachable for the whole window: what retryThroughOutage throws
 * then, wrapping the last connection error. Only this says "the database is down" to a
 * client (DATABASE_UNAVAILABLE, a 1013 close); a bare ECONNREFUSED may come from anywhere
 * (GoTrue's keys, an artefact store).
 */
export class DatabaseUnavailableError extends Error {
  constructor(cause: unknown) {
    super('The database stayed unreachable for the outage window.', { cause });
  }
}

export interface RetryReport {
  attempt: number;
  delayMs: number;
  error: unknown;
}

/**
 * Runs `attempt` until it succeeds, fails with an error `retryable` refuses (thrown as it
 * is), or `windowMs` has passed since its first failure (a DatabaseUnavailableError); pauses
 * double from 100 ms to 2 s between attempts. From the first failure, not the first attempt:
 * an attempt on a connection that went silent fails only after DATABASE_SILENCE_LIMIT_MS,
 * longer than the window, and the database is usually back by then.
 */
export async function retryThroughOutage<T>(
  attempt: () => Promise<T>,
  retryable: (error: unknown) => boolean,
  options: { windowMs?: number; onRetry?: (report: RetryReport) => void } = {},
): Promise<T> {
  let deadline: number | undefined;
  let delayMs = FIRST_DELAY_MS;
  for (let tries = 1; ; tries++) {
    try {
      return await attempt();
    } catch (error) {
      if (!retryable(error)) throw error;
      deadline ??= Date.now() + (options.windowMs ?? OUTAGE_RETRY_MS);
      if (Date.now() + delayMs > deadline) throw new DatabaseUnavailableError(error);
      options.onRetry?.({ attempt: tries, delayMs, error });
      await new Promise((resolve) => setTimeout(resolve, delayMs));
      delayMs = Math.min(delayMs * 2, MAX_DELAY_MS);
    }
  }
}
