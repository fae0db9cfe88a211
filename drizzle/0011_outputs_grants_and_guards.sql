-- Requests read a generation's diagnostics, fix rounds and artefact index; blob bytes are server only
-- (Supabase grants new tables to anon and authenticated by default).
REVOKE ALL ON generation_diagnostics, fix_rounds, generation_artifacts, artifact_blobs FROM anon, authenticated;
--> statement-breakpoint
GRANT SELECT ON generation_diagnostics, fix_rounds, generation_artifacts TO authenticated;
--> statement-breakpoint
-- restored_from joins parent_id and retry_of: links between generations stay inside one project.
CREATE OR REPLACE FUNCTION kiln.guard_same_project() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = '' AS $$
DECLARE
  linked uuid;
BEGIN
  IF TG_TABLE_NAME = 'generations' THEN
    FOREACH linked IN ARRAY ARRAY[NEW.parent_id, NEW.retry_of, NEW.restored_from] LOOP
      IF linked IS NOT NULL AND NOT EXISTS (
        SELECT 1 FROM public.generations g WHERE g.id = linked AND g.project_id = NEW.project_id) THEN
        RAISE EXCEPTION 'a linked generation must belong to the same project' USING ERRCODE = 'foreign_key_violation';
      END IF;
    END LOOP;
  ELSIF NEW.generation_id IS NOT NULL AND NOT EXISTS (
    SELECT 1 FROM public.generations g WHERE g.id = NEW.generation_id AND g.project_id = NEW.project_id) THEN
    RAISE EXCEPTION 'a message''s generation must belong to the same project' USING ERRCODE = 'foreign_key_violation';
  END IF;
  RETURN NEW;
END $$;
--> statement-breakpoint
DROP TRIGGER generations_same_project ON public.generations;
--> statement-breakpoint
CREATE TRIGGER generations_same_project BEFORE INSERT OR UPDATE OF parent_id, retry_of, restored_from, project_id ON public.generations
  FOR EACH ROW EXECUTE FUNCTION kiln.guard_same_project();
