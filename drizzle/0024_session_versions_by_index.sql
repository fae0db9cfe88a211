-- Project.generations(sessionId:) pages one session's generations newest first: an index in
-- that order reads a page and stops. It takes the place of (project_id, session_id), its prefix.
DROP INDEX "generations_session_idx";--> statement-breakpoint
CREATE INDEX "generations_session_created_idx" ON "generations" USING btree ("project_id","session_id","created_at" DESC NULLS LAST,"id" DESC NULLS LAST);