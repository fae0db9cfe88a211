import { databaseAddress } from '../config.js';
import { errorChain } from './error-chain.js';
import { isConnectionError } from './outage.js';

/**
 * A start (`npm start`, `npm run db:migrate`) that could not reach its PostgreSQL (refused,
 * unknown host, a password or database it does not accept): said in one line, with where it
 * looked and why, never the URL itself.
 */
export class DatabaseUnreachableError extends Error {
  constructor(url: string, cause: unknown) {
    const reason = [...errorChain(cause)].find((e) => typeof e.code === 'string');
    // A server's SQLSTATE alone says little ("28P01"); its message names no secret.
    const why = !reason ? 'no error code' : /^[0-9A-Z]{5}$/.test(reason.code as string) ? `${reason.code}: ${reason.message}` : String(reason.code);
    super(`Cannot reach the database at ${databaseAddress(url)} (${why})`, { cause });
    this.name = 'DatabaseUnreachableError';
  }
}

/** A start's first statements failed for want of a database, not for a bug (class 28: authorization, 3D000: no such database). */
export function isDatabaseUnreachable(error: unknown): boolean {
  return isConnectionError(error) || [...errorChain(error)].some((e) => e.code === 'ENOTFOUND' || e.code === '3D000' || /^28[0-9A-Z]{3}$/.test(String(e.code)));
}
