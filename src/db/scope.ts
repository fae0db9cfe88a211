import { sql } from 'drizzle-orm';
import { AuthError } from '../errors.js';
import type { Db, Tx } from './client.js';

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
      db.transaction(async (tx) => {
        // Claims go in as a bound parameter; the role is fixed here, never read from the token.
        await tx.execute(
          sql`select set_config('request.jwt.claims', ${claimsJson}, true), set_config('role', 'authenticated', true)`,
        );
        return work(tx);
      }),
  };
}

/** The server's own scope (worker, auth provider, migrations): no RLS. */
export function serviceScope(db: Db): Scope {
  return { userId: null, run: (work) => db.transaction(work) };
}

/** A request without a valid token: any database work is refused. */
export function anonymousScope(problem?: string): Scope {
  return { userId: null, run: () => Promise.reject(new AuthError(problem)) };
}
