-- A request's write to a generation is a cancel and nothing else (0004 checked only the
-- status): while the status stays, its phase and finish time stay and a cancel asked for is
-- never withdrawn; a cancel ends the row as Kiln's own does (phase DONE, finished and
-- cancel-requested now). A request's insert is stamped now(), the month its budget counts it
-- in, with nothing spent yet.
CREATE OR REPLACE FUNCTION kiln.guard_generation_status() RETURNS trigger
LANGUAGE plpgsql SET search_path = '' AS $$
BEGIN
  IF NEW.status IS DISTINCT FROM OLD.status AND NOT (
       (OLD.status = 'QUEUED' AND NEW.status IN ('RUNNING', 'FAILED', 'CANCELLED'))
    OR (OLD.status = 'RUNNING' AND NEW.status IN ('SUCCEEDED', 'FAILED', 'CANCELLED'))) THEN
    RAISE EXCEPTION 'generation status cannot change from % to %', OLD.status, NEW.status USING ERRCODE = 'check_violation';
  END IF;
  IF current_user = 'authenticated' THEN
    IF OLD.status IN ('SUCCEEDED', 'FAILED', 'CANCELLED')
       OR (NEW.status IS DISTINCT FROM OLD.status AND NEW.status <> 'CANCELLED')
       OR (OLD.cancel_requested_at IS NOT NULL AND NEW.cancel_requested_at IS NULL)
       OR (NEW.status = OLD.status AND (NEW.phase IS DISTINCT FROM OLD.phase OR NEW.finished_at IS DISTINCT FROM OLD.finished_at)) THEN
      RAISE EXCEPTION 'a request may only cancel an unfinished generation' USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF NEW.status = 'CANCELLED' THEN
      NEW.phase := 'DONE';
      NEW.finished_at := now();
      NEW.cancel_requested_at := coalesce(NEW.cancel_requested_at, now());
    END IF;
  END IF;
  RETURN NEW;
END $$;
--> statement-breakpoint
CREATE OR REPLACE FUNCTION kiln.guard_generation_insert() RETURNS trigger
LANGUAGE plpgsql SET search_path = '' AS $$
BEGIN
  IF current_user = 'authenticated' THEN
    IF NEW.status <> 'QUEUED' OR NEW.phase <> 'QUEUED' OR NEW.input_tokens <> 0 OR NEW.output_tokens <> 0
       OR NEW.spent_input_tokens <> 0 OR NEW.spent_output_tokens <> 0
       OR NEW.error_code IS NOT NULL OR NEW.error_message IS NOT NULL OR NEW.cancel_requested_at IS NOT NULL
       OR NEW.lease_expires_at IS NOT NULL OR NEW.started_at IS NOT NULL OR NEW.finished_at IS NOT NULL THEN
      RAISE EXCEPTION 'a request may only create a queued generation' USING ERRCODE = 'insufficient_privilege';
    END IF;
    -- committedOfProject and usageOfProjects count a generation in the month of its created_at.
    NEW.created_at := now();
  END IF;
  RETURN NEW;
END $$;
