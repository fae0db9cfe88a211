import { sql } from 'drizzle-orm';
import { type Db, rowsOf } from './client.js';
import { isConnectionError, retryThroughOutage } from './outage.js';

// The rate limits' PostgreSQL counters (api/rate-limit.ts), shared by every API instance.

/** How many hits (on one instance) between two sweeps of ended windows. */
const SWEEP_EVERY = 500;

/**
 * One upserted row per key and window length in `rate_limits`, on the database's clock
 * (instances may disagree on time). A row's key starts with its window's length
 * (`600s:auth:ip:…`): RATE_LIMIT_* takes any length, and the sweep must know when each
 * row's window ends without a column for it.
 */
export function postgresRateLimitStore(db: Db): {
  hit(key: string, windowSeconds: number): Promise<{ count: number; resetInSeconds: number }>;
  unhit(key: string, windowSeconds: number): Promise<void>;
  /** Drops the counters whose window has ended; hit() starts one every SWEEP_EVERY hits and does not wait for it. */
  sweep(): Promise<void>;
} {
  let hits = 0;
  const sweep = async () => {
    // A key without a length was written before lengths were kept; such rows go after a day, as they always did.
    await db.execute(sql`
      delete from rate_limits
      where extract(epoch from window_start) + coalesce(substring(key from '^([0-9]+)s:')::numeric, 86400) <= extract(epoch from now())`);
  };
  return {
    hit: async (key, windowSeconds) => {
      // Rides out an outage as every request's statements do (a hit counted twice when only the reply was lost is the lesser harm).
      const count = () => db.execute(sql`
        insert into rate_limits as r (key, window_start, hits)
        values (${`${windowSeconds}s:${key}`}, to_timestamp(floor(extract(epoch from now()) / ${windowSeconds}) * ${windowSeconds}), 1)
        on conflict (key) do update
          set hits = case when r.window_start = excluded.window_start then r.hits + 1 else 1 end,
              window_start = excluded.window_start
        returning hits, extract(epoch from r.window_start + make_interval(secs => ${windowSeconds}) - now())::float8 as reset_in`);
      const result = await retryThroughOutage(count, isConnectionError);
      const [row] = rowsOf<{ hits: number; reset_in: number }>(result);
      // Now and then, drop counters whose window has ended (one row per address or email ever seen otherwise).
      if (++hits % SWEEP_EVERY === 0) void sweep().catch(() => {});
      return { count: Number(row?.hits ?? 1), resetInSeconds: Number(row?.reset_in ?? windowSeconds) };
    },
    unhit: async (key, windowSeconds) => {
      const uncount = () => db.execute(sql`
        update rate_limits set hits = hits - 1
        where key = ${`${windowSeconds}s:${key}`} and hits > 0
          and window_start = to_timestamp(floor(extract(epoch from now()) / ${windowSeconds}) * ${windowSeconds})`);
      await retryThroughOutage(uncount, isConnectionError);
    },
    sweep,
  };
}
