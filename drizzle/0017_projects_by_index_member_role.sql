-- Listing projects (page and count) read every project in the database: an IN subquery
-- under an OR is a hashed SubPlan that PostgreSQL tests row by row, so the policy's
-- `owner_id = … or id in (select kiln.viewer_project_ids(…))` ruled out both indexes
-- (user 7 of 20,000, with 5 of 100,000 projects: a Seq Scan removing 99,995 rows, 40-65 ms).
-- `id = any (array(select …))` is an InitPlan array an index scan can probe, so the OR is a
-- BitmapOr over projects_owner_id_idx and projects_pkey (the same 5 rows in about 1 ms).
ALTER POLICY "projects_select_member" ON "projects" TO authenticated USING ("projects"."owner_id" = (select auth.uid()) or "projects"."id" = any (array(select kiln.viewer_project_ids('{owner,editor,viewer}'))));--> statement-breakpoint
-- Kiln changes only a member's role (projectStore.upsertMember's ON CONFLICT … SET role).
-- With UPDATE on every column, the owner of two projects could move a member row from one
-- to the other, past the use-case's cap on members.
REVOKE UPDATE ON project_members FROM authenticated;
--> statement-breakpoint
GRANT UPDATE (role) ON project_members TO authenticated;
