-- Requests run as `authenticated` and get only what they need; `anon` gets nothing.
REVOKE ALL ON ALL TABLES IN SCHEMA public FROM anon, authenticated;
--> statement-breakpoint
GRANT USAGE ON SCHEMA public TO authenticated;
--> statement-breakpoint
GRANT SELECT ON users TO authenticated;
--> statement-breakpoint
GRANT SELECT, INSERT ON projects TO authenticated;
--> statement-breakpoint
GRANT UPDATE (name, description, updated_at, archived_at, monthly_token_limit) ON projects TO authenticated;
--> statement-breakpoint
GRANT SELECT, INSERT, UPDATE, DELETE ON project_members TO authenticated;
--> statement-breakpoint
GRANT SELECT, INSERT ON generations TO authenticated;
--> statement-breakpoint
GRANT UPDATE (status, phase, cancel_requested_at, finished_at, error_code, error_message) ON generations TO authenticated;
--> statement-breakpoint
GRANT SELECT ON generation_chunks, build_steps, build_log_lines, generation_files TO authenticated;
--> statement-breakpoint
GRANT SELECT, INSERT ON conversation_messages TO authenticated;
--> statement-breakpoint
-- Only owners archive a project or change its budget; editors may rename it.
CREATE OR REPLACE FUNCTION kiln.guard_project_update() RETURNS trigger
LANGUAGE plpgsql SET search_path = '' AS $$
BEGIN
  IF current_user = 'authenticated'
     AND (NEW.archived_at IS DISTINCT FROM OLD.archived_at OR NEW.monthly_token_limit IS DISTINCT FROM OLD.monthly_token_limit)
     AND kiln.project_role(OLD.id) IS DISTINCT FROM 'owner' THEN
    RAISE EXCEPTION 'only the owner may archive a project or change its budget' USING ERRCODE = 'insufficient_privilege';
  END IF;
  RETURN NEW;
END $$;
--> statement-breakpoint
CREATE TRIGGER projects_guard_update BEFORE UPDATE ON public.projects
  FOR EACH ROW EXECUTE FUNCTION kiln.guard_project_update();
--> statement-breakpoint
-- A finished generation never changes status again, and a queued or running one
-- only moves forward.
CREATE OR REPLACE FUNCTION kiln.guard_generation_status() RETURNS trigger
LANGUAGE plpgsql SET search_path = '' AS $$
BEGIN
  IF NEW.status IS DISTINCT FROM OLD.status AND NOT (
       (OLD.status = 'QUEUED' AND NEW.status IN ('RUNNING', 'FAILED', 'CANCELLED'))
    OR (OLD.status = 'RUNNING' AND NEW.status IN ('SUCCEEDED', 'FAILED', 'CANCELLED'))) THEN
    RAISE EXCEPTION 'generation status cannot change from % to %', OLD.status, NEW.status USING ERRCODE = 'check_violation';
  END IF;
  IF current_user = 'authenticated' AND NEW.status IS DISTINCT FROM OLD.status AND NEW.status <> 'CANCELLED' THEN
    RAISE EXCEPTION 'a request may only cancel a generation' USING ERRCODE = 'insufficient_privilege';
  END IF;
  RETURN NEW;
END $$;
--> statement-breakpoint
CREATE TRIGGER generations_guard_status BEFORE UPDATE ON public.generations
  FOR EACH ROW EXECUTE FUNCTION kiln.guard_generation_status();
