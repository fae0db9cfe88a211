import { type SQL, sql } from 'drizzle-orm';

/** The key of a lock name (PostgreSQL advisory locks take a bigint). */
const keyOf = (name: string): SQL => sql`hashtextextended(${name}, 0)`;

/**
 * A lock on a name until the transaction ends (PostgreSQL advisory locks, keyed by a hash
 * of the name): exclusive, or shared with every other shared holder of the name.
 */
export function advisoryLock(name: string, mode: 'exclusive' | 'shared' = 'exclusive'): SQL {
  return mode === 'shared' ? sql`pg_advisory_xact_lock_shared(${keyOf(name)})` : sql`pg_advisory_xact_lock(${keyOf(name)})`;
}

/** advisoryLock's shared lock without waiting: true when taken, false at once when an exclusive holder has it or waits for it. */
export function tryAdvisoryLockShared(name: string): SQL {
  return sql`pg_try_advisory_xact_lock_shared(${keyOf(name)})`;
}
