-- Many rows of one generation (a page of chunks or log lines, the log's tail), for a
-- signed-in viewer. The row policies ask kiln.generation_role once per row, a SECURITY
-- DEFINER call with queries of its own (a 200-row page took 10-16 ms that way in PGlite);
-- these ask it once per read (1-2 ms for the same page). The check does not depend on the
-- row, so the planner runs it once, as a one-time filter, before reading anything: a
-- non-member gets no rows.
CREATE OR REPLACE FUNCTION kiln.chunks_after(p_generation_id uuid, p_after_seq integer, p_limit integer)
RETURNS SETOF public.generation_chunks
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = '' AS $$
  SELECT c.* FROM public.generation_chunks c
   WHERE kiln.generation_role(p_generation_id) IS NOT NULL
     AND c.generation_id = p_generation_id AND c.seq > p_after_seq
   ORDER BY c.seq
   LIMIT p_limit
$$;
--> statement-breakpoint
CREATE OR REPLACE FUNCTION kiln.log_lines_after(p_generation_id uuid, p_after_seq integer, p_limit integer)
RETURNS SETOF public.build_log_lines
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = '' AS $$
  SELECT l.* FROM public.build_log_lines l
   WHERE kiln.generation_role(p_generation_id) IS NOT NULL
     AND l.generation_id = p_generation_id AND l.seq > p_after_seq
   ORDER BY l.seq
   LIMIT p_limit
$$;
--> statement-breakpoint
-- The last p_count log lines, newest first.
CREATE OR REPLACE FUNCTION kiln.log_tail(p_generation_id uuid, p_count integer)
RETURNS SETOF public.build_log_lines
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = '' AS $$
  SELECT l.* FROM public.build_log_lines l
   WHERE kiln.generation_role(p_generation_id) IS NOT NULL
     AND l.generation_id = p_generation_id
   ORDER BY l.seq DESC
   LIMIT p_count
$$;
--> statement-breakpoint
REVOKE ALL ON FUNCTION kiln.chunks_after(uuid, integer, integer), kiln.log_lines_after(uuid, integer, integer), kiln.log_tail(uuid, integer) FROM PUBLIC;
--> statement-breakpoint
GRANT EXECUTE ON FUNCTION kiln.chunks_after(uuid, integer, integer), kiln.log_lines_after(uuid, integer, integer), kiln.log_tail(uuid, integer) TO authenticated;
