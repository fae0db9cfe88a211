-- A version's files for a signed-in viewer (its file list, a diff, a restore's check). The row
-- policy asks kiln.generation_role once per file: a version of 1,000 files took 27-29 ms on
-- PostgreSQL and 48-57 ms in PGlite that way, against 3 and 8 ms when it is asked once per
-- read, as 0013's reads of chunks and log lines do. A non-member gets no rows.
CREATE OR REPLACE FUNCTION kiln.files_of(p_generation_id uuid, p_with_content boolean)
RETURNS TABLE (path text, size integer, sha256 text, content text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = '' AS $$
  SELECT f.path, f.size, f.sha256, CASE WHEN p_with_content THEN f.content ELSE '' END
    FROM public.generation_files f
   WHERE kiln.generation_role(p_generation_id) IS NOT NULL
     AND f.generation_id = p_generation_id
   ORDER BY f.path
$$;
--> statement-breakpoint
REVOKE ALL ON FUNCTION kiln.files_of(uuid, boolean) FROM PUBLIC;
--> statement-breakpoint
GRANT EXECUTE ON FUNCTION kiln.files_of(uuid, boolean) TO authenticated;
