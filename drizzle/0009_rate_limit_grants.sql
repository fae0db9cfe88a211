-- Server only: requests never touch the rate-limit counters (Supabase grants new tables to anon and authenticated by default).
REVOKE ALL ON rate_limits FROM anon, authenticated;
