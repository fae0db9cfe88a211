-- Members see which secrets exist and when they changed, never the ciphertext.
REVOKE ALL ON project_secrets FROM anon, authenticated;
--> statement-breakpoint
GRANT SELECT (project_id, name, updated_at) ON project_secrets TO authenticated;
--> statement-breakpoint
GRANT INSERT (project_id, name, ciphertext, updated_at), UPDATE (ciphertext, updated_at), DELETE ON project_secrets TO authenticated;
