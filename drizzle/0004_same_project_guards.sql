-- A request creates a generation only as a fresh QUEUED one (drizzle names every
-- column in an INSERT, so this is a trigger rather than column grants).
CREATE OR REPLACE FUNCTION kiln.guard_generation_insert() RETURNS trigger
LANGUAGE plpgsql SET search_path = '' AS $$
BEGIN
  IF current_user = 'authenticated' AND (
       NEW.status <> 'QUEUED' OR NEW.phase <> 'QUEUED' OR NEW.input_tokens <> 0 OR NEW.output_tokens <> 0
    OR NEW.error_code IS NOT NULL OR NEW.error_message IS NOT NULL OR NEW.cancel_requested_at IS NOT NULL
    OR NEW.lease_expires_at IS NOT NULL OR NEW.started_at IS NOT NULL OR NEW.finished_at IS NOT NULL) THEN
    RAISE EXCEPTION 'a request may only create a queued generation' USING ERRCODE = 'insufficient_privilege';
  END IF;
  RETURN NEW;
END $$;
--> statement-breakpoint
CREATE TRIGGER generations_guard_insert BEFORE INSERT ON public.generations
  FOR EACH ROW EXECUTE FUNCTION kiln.guard_generation_insert();
--> statement-breakpoint
REVOKE UPDATE ON generations FROM authenticated;
--> statement-breakpoint
GRANT UPDATE (status, phase, cancel_requested_at, finished_at) ON generations TO authenticated;
--> statement-breakpoint
-- Links between generations and messages stay inside one project, so nobody can
-- point a generation at another tenant's files.
CREATE OR REPLACE FUNCTION kiln.guard_same_project() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = '' AS $$
DECLARE
  linked uuid;
BEGIN
  IF TG_TABLE_NAME = 'generations' THEN
    FOREACH linked IN ARRAY ARRAY[NEW.parent_id, NEW.retry_of] LOOP
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
CREATE TRIGGER generations_same_project BEFORE INSERT OR UPDATE OF parent_id, retry_of, project_id ON public.generations
  FOR EACH ROW EXECUTE FUNCTION kiln.guard_same_project();
--> statement-breakpoint
CREATE TRIGGER conversation_messages_same_project BEFORE INSERT OR UPDATE OF generation_id, project_id ON public.conversation_messages
  FOR EACH ROW EXECUTE FUNCTION kiln.guard_same_project();
--> statement-breakpoint
-- A request may cancel an unfinished generation and nothing else.
CREATE OR REPLACE FUNCTION kiln.guard_generation_status() RETURNS trigger
LANGUAGE plpgsql SET search_path = '' AS $$
BEGIN
  IF NEW.status IS DISTINCT FROM OLD.status AND NOT (
       (OLD.status = 'QUEUED' AND NEW.status IN ('RUNNING', 'FAILED', 'CANCELLED'))
    OR (OLD.status = 'RUNNING' AND NEW.status IN ('SUCCEEDED', 'FAILED', 'CANCELLED'))) THEN
    RAISE EXCEPTION 'generation status cannot change from % to %', OLD.status, NEW.status USING ERRCODE = 'check_violation';
  END IF;
  IF current_user = 'authenticated' AND (
       OLD.status IN ('SUCCEEDED', 'FAILED', 'CANCELLED')
    OR (NEW.status IS DISTINCT FROM OLD.status AND NEW.status <> 'CANCELLED')) THEN
    RAISE EXCEPTION 'a request may only cancel an unfinished generation' USING ERRCODE = 'insufficient_privilege';
  END IF;
  RETURN NEW;
END $$;
