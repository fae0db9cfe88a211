-- Finding a user by email answered any signed-in user about any address, which tells who has
-- an account. Only adding a member needs it, which only a project's owner may do (and not in
-- an archived project): the lookup now answers only them, about that project.
DROP FUNCTION kiln.user_id_by_email(text);
--> statement-breakpoint
CREATE OR REPLACE FUNCTION kiln.member_candidate_id(p_project_id uuid, p_email text) RETURNS uuid
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = '' AS $$
BEGIN
  IF kiln.project_role(p_project_id) IS DISTINCT FROM 'owner'
     OR EXISTS (SELECT 1 FROM public.projects p WHERE p.id = p_project_id AND p.archived_at IS NOT NULL) THEN
    RETURN NULL;
  END IF;
  RETURN (SELECT u.id FROM public.users u WHERE u.email = lower(p_email));
END $$;
--> statement-breakpoint
REVOKE ALL ON FUNCTION kiln.member_candidate_id(uuid, text) FROM PUBLIC;
--> statement-breakpoint
GRANT EXECUTE ON FUNCTION kiln.member_candidate_id(uuid, text) TO authenticated;
