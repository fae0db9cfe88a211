-- Archiving is final: a request never changes an archived project's row (brings it back,
-- renames it, sets its budget), whatever its role; the use-cases refuse as much (InvalidStateError).
CREATE OR REPLACE FUNCTION kiln.guard_project_update() RETURNS trigger
LANGUAGE plpgsql SET search_path = '' AS $$
BEGIN
  IF current_user = 'authenticated'
     AND (NEW.archived_at IS DISTINCT FROM OLD.archived_at OR NEW.monthly_token_limit IS DISTINCT FROM OLD.monthly_token_limit)
     AND kiln.project_role(OLD.id) IS DISTINCT FROM 'owner' THEN
    RAISE EXCEPTION 'only the owner may archive a project or change its budget' USING ERRCODE = 'insufficient_privilege';
  END IF;
  IF current_user = 'authenticated' AND OLD.archived_at IS NOT NULL AND NEW IS DISTINCT FROM OLD THEN
    RAISE EXCEPTION 'an archived project cannot be changed' USING ERRCODE = 'insufficient_privilege';
  END IF;
  RETURN NEW;
END $$;
