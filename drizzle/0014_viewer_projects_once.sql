-- The projects in which the viewer has one of p_roles: kiln.project_role's answer (a
-- member row's role, else owner by projects.owner_id), for every project at once. The
-- policies ask `project_id in (select kiln.viewer_project_ids(...))`: an uncorrelated
-- subquery, so PostgreSQL builds the set once per statement (for each policy) and probes it
-- per row, where kiln.project_role(project_id) ran, with a query or two, for every row (a
-- project's 80 generations made each read of them 3-6 ms in PGlite).
CREATE OR REPLACE FUNCTION kiln.viewer_project_ids(p_roles text[]) RETURNS SETOF uuid
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = '' AS $$
  SELECT m.project_id FROM public.project_members m
   WHERE m.user_id = auth.uid() AND m.role::text = ANY (p_roles)
  UNION ALL
  SELECT p.id FROM public.projects p
   WHERE p.owner_id = auth.uid() AND 'owner' = ANY (p_roles)
     AND NOT EXISTS (SELECT 1 FROM public.project_members m WHERE m.project_id = p.id AND m.user_id = auth.uid())
$$;
--> statement-breakpoint
REVOKE ALL ON FUNCTION kiln.viewer_project_ids(text[]) FROM PUBLIC;
--> statement-breakpoint
GRANT EXECUTE ON FUNCTION kiln.viewer_project_ids(text[]) TO authenticated;
--> statement-breakpoint
ALTER POLICY "conversation_messages_select_member" ON "conversation_messages" TO authenticated USING ("conversation_messages"."project_id" in (select kiln.viewer_project_ids('{owner,editor,viewer}')));--> statement-breakpoint
ALTER POLICY "conversation_messages_insert_editor" ON "conversation_messages" TO authenticated WITH CHECK ("conversation_messages"."role" = 'USER' and "conversation_messages"."project_id" in (select kiln.viewer_project_ids('{owner,editor}')));--> statement-breakpoint
ALTER POLICY "generations_select_member" ON "generations" TO authenticated USING ("generations"."project_id" in (select kiln.viewer_project_ids('{owner,editor,viewer}')));--> statement-breakpoint
ALTER POLICY "generations_insert_editor" ON "generations" TO authenticated WITH CHECK ("generations"."created_by" = (select auth.uid()) and "generations"."project_id" in (select kiln.viewer_project_ids('{owner,editor}')));--> statement-breakpoint
ALTER POLICY "generations_update_editor" ON "generations" TO authenticated USING ("generations"."project_id" in (select kiln.viewer_project_ids('{owner,editor}'))) WITH CHECK ("generations"."project_id" in (select kiln.viewer_project_ids('{owner,editor}')));--> statement-breakpoint
ALTER POLICY "project_members_select_member" ON "project_members" TO authenticated USING ("project_members"."project_id" in (select kiln.viewer_project_ids('{owner,editor,viewer}')));--> statement-breakpoint
ALTER POLICY "project_members_insert_owner" ON "project_members" TO authenticated WITH CHECK ("project_members"."project_id" in (select kiln.viewer_project_ids('{owner}')));--> statement-breakpoint
ALTER POLICY "project_members_update_owner" ON "project_members" TO authenticated USING ("project_members"."project_id" in (select kiln.viewer_project_ids('{owner}'))) WITH CHECK ("project_members"."project_id" in (select kiln.viewer_project_ids('{owner}')));--> statement-breakpoint
ALTER POLICY "project_members_delete_owner" ON "project_members" TO authenticated USING ("project_members"."project_id" in (select kiln.viewer_project_ids('{owner}')));--> statement-breakpoint
ALTER POLICY "project_secrets_select_member" ON "project_secrets" TO authenticated USING ("project_secrets"."project_id" in (select kiln.viewer_project_ids('{owner,editor,viewer}')));--> statement-breakpoint
ALTER POLICY "project_secrets_insert_owner" ON "project_secrets" TO authenticated WITH CHECK ("project_secrets"."project_id" in (select kiln.viewer_project_ids('{owner}')));--> statement-breakpoint
ALTER POLICY "project_secrets_update_owner" ON "project_secrets" TO authenticated USING ("project_secrets"."project_id" in (select kiln.viewer_project_ids('{owner}'))) WITH CHECK ("project_secrets"."project_id" in (select kiln.viewer_project_ids('{owner}')));--> statement-breakpoint
ALTER POLICY "project_secrets_delete_owner" ON "project_secrets" TO authenticated USING ("project_secrets"."project_id" in (select kiln.viewer_project_ids('{owner}')));--> statement-breakpoint
ALTER POLICY "projects_select_member" ON "projects" TO authenticated USING ("projects"."owner_id" = (select auth.uid()) or "projects"."id" in (select kiln.viewer_project_ids('{owner,editor,viewer}')));--> statement-breakpoint
ALTER POLICY "projects_update_editor" ON "projects" TO authenticated USING ("projects"."id" in (select kiln.viewer_project_ids('{owner,editor}'))) WITH CHECK ("projects"."id" in (select kiln.viewer_project_ids('{owner,editor}')));