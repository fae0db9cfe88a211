-- Membership helpers for RLS policies. SECURITY DEFINER so a policy on
-- project_members can ask about project_members without recursing; plpgsql so the
-- tables they read may be created by the next migration.
CREATE SCHEMA IF NOT EXISTS kiln;
--> statement-breakpoint
CREATE OR REPLACE FUNCTION kiln.project_role(p_project_id uuid) RETURNS text
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = '' AS $$
DECLARE
  viewer uuid := auth.uid();
  found_role text;
BEGIN
  IF viewer IS NULL THEN
    RETURN NULL;
  END IF;
  SELECT m.role::text INTO found_role FROM public.project_members m
   WHERE m.project_id = p_project_id AND m.user_id = viewer;
  IF found_role IS NULL AND EXISTS (SELECT 1 FROM public.projects p WHERE p.id = p_project_id AND p.owner_id = viewer) THEN
    found_role := 'owner';
  END IF;
  RETURN found_role;
END $$;
--> statement-breakpoint
CREATE OR REPLACE FUNCTION kiln.generation_role(p_generation_id uuid) RETURNS text
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = '' AS $$
BEGIN
  RETURN kiln.project_role((SELECT g.project_id FROM public.generations g WHERE g.id = p_generation_id));
END $$;
--> statement-breakpoint
CREATE OR REPLACE FUNCTION kiln.shares_project(p_user_id uuid) RETURNS boolean
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = '' AS $$
BEGIN
  RETURN EXISTS (
    SELECT 1 FROM public.project_members mine
      JOIN public.project_members theirs ON theirs.project_id = mine.project_id
     WHERE mine.user_id = auth.uid() AND theirs.user_id = p_user_id);
END $$;
--> statement-breakpoint
CREATE OR REPLACE FUNCTION kiln.user_id_by_email(p_email text) RETURNS uuid
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = '' AS $$
BEGIN
  RETURN (SELECT u.id FROM public.users u WHERE u.email = lower(p_email));
END $$;
--> statement-breakpoint
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA kiln FROM PUBLIC;
--> statement-breakpoint
GRANT USAGE ON SCHEMA kiln TO authenticated;
--> statement-breakpoint
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA kiln TO authenticated;
