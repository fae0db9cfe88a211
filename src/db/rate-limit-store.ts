import { sql } from 'drizzle-orm';
import { type Db, rowsOf } from './client.js';

// The rate limits' PostgreSQL counters (api/rate-limit.ts), shared by every API instance.

/** One upserted row per key in `rate_limits`, on the database's clock (instances may disagree on time). */
export function postgresRateLimitStore(db: Db): { hit(key: string, windowSeconds: number): Promise<{ count: number; resetInSeconds: number }> } {
  let hits = 0;
  return {
    hit: async (key, windowSeconds) => {
      const result = await db.execute(sql`
        insert into rate_limits as r (key, window_start, hits)
        values (${key}, to_timestamp(floor(extract(epoch from now()) / ${windowSeconds}) * ${windowSeconds}), 1)
        on conflict (key) do update
          set hits = case when r.window_start = excluded.window_start then r.hits + 1 else 1 end,
              window_start = excluded.window_start
        returning hits, extract(epoch from r.window_start + make_interval(secs => ${windowSeconds}) - now())::float8 as reset_in`);
      const [row] = rowsOf<{ hits: number; reset_in: number }>(result);
      // Now and then, drop counters whose window ended long ago (one row per address or email ever seen otherwise).
      if (++hits % 500 === 0) void db.execute(sql`delete from rate_limits where window_start < now() - interval '1 day'`).catch(() => {});
      return { count: Number(row?.hits ?? 1), resetInSeconds: Number(row?.reset_in ?? windowSeconds) };
    },
  };
}
