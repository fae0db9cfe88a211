-- A project's creator (projects.owner_id) stays an owner member: an owner's row policies
-- allow changing any membership, so this holds even for a write that skips the use-case's
-- check. A project's own deletion (its members go with it) finds no project and passes.
CREATE OR REPLACE FUNCTION kiln.keep_creator_owner() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = '' AS $$
BEGIN
  IF EXISTS (SELECT 1 FROM public.projects p WHERE p.id = OLD.project_id AND p.owner_id = OLD.user_id)
     AND (TG_OP = 'DELETE' OR NEW.role <> 'owner' OR NEW.user_id <> OLD.user_id OR NEW.project_id <> OLD.project_id) THEN
    RAISE EXCEPTION 'the creator of a project stays its owner' USING ERRCODE = 'check_violation';
  END IF;
  RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
END $$;
--> statement-breakpoint
REVOKE ALL ON FUNCTION kiln.keep_creator_owner() FROM PUBLIC;
--> statement-breakpoint
CREATE TRIGGER project_members_keep_creator BEFORE UPDATE OR DELETE ON public.project_members
  FOR EACH ROW EXECUTE FUNCTION kiln.keep_creator_owner();
