import { type SQL, sql } from 'drizzle-orm';

/**
 * A lock on a name until the transaction ends (PostgreSQL advisory locks, keyed by a hash
 * of the name): exclusive, or shared with every other shared holder of the name.
 */
export function advisoryLock(name: string, mode: 'exclusive' | 'shared' = 'exclusive'): SQL {
  const key = sql`hashtextextended(${name}, 0)`;
  return mode === 'shared' ? sql`pg_advisory_xact_lock_shared(${key})` : sql`pg_advisory_xact_lock(${key})`;
}
