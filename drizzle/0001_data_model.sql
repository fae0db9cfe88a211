CREATE TYPE "public"."build_step_status" AS ENUM('PENDING', 'RUNNING', 'SUCCEEDED', 'FAILED', 'CANCELLED', 'SKIPPED');--> statement-breakpoint
CREATE TYPE "public"."generation_phase" AS ENUM('QUEUED', 'GENERATING', 'WRITING', 'BUILDING', 'DONE');--> statement-breakpoint
CREATE TYPE "public"."generation_status" AS ENUM('QUEUED', 'RUNNING', 'SUCCEEDED', 'FAILED', 'CANCELLED');--> statement-breakpoint
CREATE TYPE "public"."log_stream" AS ENUM('STDOUT', 'STDERR');--> statement-breakpoint
CREATE TYPE "public"."message_role" AS ENUM('USER', 'MODEL');--> statement-breakpoint
CREATE TYPE "public"."project_role" AS ENUM('owner', 'editor', 'viewer');--> statement-breakpoint
CREATE TYPE "public"."project_target" AS ENUM('FLUTTER', 'WEB');--> statement-breakpoint
CREATE TABLE "auth_sessions" (
	"id" uuid PRIMARY KEY DEFAULT gen_random_uuid() NOT NULL,
	"user_id" uuid NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"refreshed_at" timestamp with time zone,
	"revoked_at" timestamp with time zone,
	"revoked_reason" text
);
--> statement-breakpoint
ALTER TABLE "auth_sessions" ENABLE ROW LEVEL SECURITY;--> statement-breakpoint
CREATE TABLE "build_log_lines" (
	"generation_id" uuid NOT NULL,
	"seq" integer NOT NULL,
	"step" text NOT NULL,
	"stream" "log_stream" NOT NULL,
	"text" text NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "build_log_lines_generation_id_seq_pk" PRIMARY KEY("generation_id","seq")
);
--> statement-breakpoint
ALTER TABLE "build_log_lines" ENABLE ROW LEVEL SECURITY;--> statement-breakpoint
CREATE TABLE "build_steps" (
	"generation_id" uuid NOT NULL,
	"ordinal" integer NOT NULL,
	"name" text NOT NULL,
	"command" text NOT NULL,
	"status" "build_step_status" DEFAULT 'PENDING' NOT NULL,
	"exit_code" integer,
	"started_at" timestamp with time zone,
	"finished_at" timestamp with time zone,
	CONSTRAINT "build_steps_generation_id_ordinal_pk" PRIMARY KEY("generation_id","ordinal")
);
--> statement-breakpoint
ALTER TABLE "build_steps" ENABLE ROW LEVEL SECURITY;--> statement-breakpoint
CREATE TABLE "conversation_messages" (
	"id" uuid PRIMARY KEY DEFAULT gen_random_uuid() NOT NULL,
	"project_id" uuid NOT NULL,
	"session_id" uuid NOT NULL,
	"role" "message_role" NOT NULL,
	"content" text NOT NULL,
	"generation_id" uuid,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
ALTER TABLE "conversation_messages" ENABLE ROW LEVEL SECURITY;--> statement-breakpoint
CREATE TABLE "generation_chunks" (
	"generation_id" uuid NOT NULL,
	"seq" integer NOT NULL,
	"text" text NOT NULL,
	CONSTRAINT "generation_chunks_generation_id_seq_pk" PRIMARY KEY("generation_id","seq")
);
--> statement-breakpoint
ALTER TABLE "generation_chunks" ENABLE ROW LEVEL SECURITY;--> statement-breakpoint
CREATE TABLE "generation_files" (
	"generation_id" uuid NOT NULL,
	"path" text NOT NULL,
	"content" text NOT NULL,
	"size" integer NOT NULL,
	"sha256" text NOT NULL,
	CONSTRAINT "generation_files_generation_id_path_pk" PRIMARY KEY("generation_id","path")
);
--> statement-breakpoint
ALTER TABLE "generation_files" ENABLE ROW LEVEL SECURITY;--> statement-breakpoint
CREATE TABLE "generations" (
	"id" uuid PRIMARY KEY DEFAULT gen_random_uuid() NOT NULL,
	"project_id" uuid NOT NULL,
	"created_by" uuid NOT NULL,
	"session_id" uuid NOT NULL,
	"parent_id" uuid,
	"retry_of" uuid,
	"prompt" text NOT NULL,
	"status" "generation_status" DEFAULT 'QUEUED' NOT NULL,
	"phase" "generation_phase" DEFAULT 'QUEUED' NOT NULL,
	"provider" text NOT NULL,
	"model" text NOT NULL,
	"attempt" integer DEFAULT 1 NOT NULL,
	"error_code" text,
	"error_message" text,
	"input_tokens" integer DEFAULT 0 NOT NULL,
	"output_tokens" integer DEFAULT 0 NOT NULL,
	"cancel_requested_at" timestamp with time zone,
	"lease_expires_at" timestamp with time zone,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"started_at" timestamp with time zone,
	"finished_at" timestamp with time zone,
	CONSTRAINT "generations_prompt_length" CHECK (char_length("generations"."prompt") between 1 and 20000),
	CONSTRAINT "generations_error_code" CHECK ("generations"."error_code" in ('LLM_ERROR', 'BUILD_FAILED', 'TIMEOUT', 'UNSAFE_OUTPUT', 'INVALID_OUTPUT', 'INTERRUPTED', 'TOOLCHAIN_MISSING', 'BUDGET_EXCEEDED', 'INTERNAL'))
);
--> statement-breakpoint
ALTER TABLE "generations" ENABLE ROW LEVEL SECURITY;--> statement-breakpoint
CREATE TABLE "local_credentials" (
	"user_id" uuid PRIMARY KEY NOT NULL,
	"password_hash" text NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
ALTER TABLE "local_credentials" ENABLE ROW LEVEL SECURITY;--> statement-breakpoint
CREATE TABLE "project_members" (
	"project_id" uuid NOT NULL,
	"user_id" uuid NOT NULL,
	"role" "project_role" NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "project_members_project_id_user_id_pk" PRIMARY KEY("project_id","user_id")
);
--> statement-breakpoint
ALTER TABLE "project_members" ENABLE ROW LEVEL SECURITY;--> statement-breakpoint
CREATE TABLE "projects" (
	"id" uuid PRIMARY KEY DEFAULT gen_random_uuid() NOT NULL,
	"owner_id" uuid NOT NULL,
	"name" text NOT NULL,
	"description" text,
	"target" "project_target" NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL,
	"archived_at" timestamp with time zone,
	"monthly_token_limit" bigint,
	CONSTRAINT "projects_name_length" CHECK (char_length("projects"."name") between 1 and 100),
	CONSTRAINT "projects_description_length" CHECK (char_length("projects"."description") <= 2000),
	CONSTRAINT "projects_budget_positive" CHECK ("projects"."monthly_token_limit" > 0)
);
--> statement-breakpoint
ALTER TABLE "projects" ENABLE ROW LEVEL SECURITY;--> statement-breakpoint
CREATE TABLE "refresh_tokens" (
	"token_hash" text PRIMARY KEY NOT NULL,
	"session_id" uuid NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"used_at" timestamp with time zone
);
--> statement-breakpoint
ALTER TABLE "refresh_tokens" ENABLE ROW LEVEL SECURITY;--> statement-breakpoint
CREATE TABLE "server_secrets" (
	"name" text PRIMARY KEY NOT NULL,
	"value" text NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
ALTER TABLE "server_secrets" ENABLE ROW LEVEL SECURITY;--> statement-breakpoint
CREATE TABLE "users" (
	"id" uuid PRIMARY KEY NOT NULL,
	"email" text NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "users_email_lowercase" CHECK ("users"."email" = lower("users"."email"))
);
--> statement-breakpoint
ALTER TABLE "users" ENABLE ROW LEVEL SECURITY;--> statement-breakpoint
ALTER TABLE "auth_sessions" ADD CONSTRAINT "auth_sessions_user_id_users_id_fk" FOREIGN KEY ("user_id") REFERENCES "public"."users"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "build_log_lines" ADD CONSTRAINT "build_log_lines_generation_id_generations_id_fk" FOREIGN KEY ("generation_id") REFERENCES "public"."generations"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "build_steps" ADD CONSTRAINT "build_steps_generation_id_generations_id_fk" FOREIGN KEY ("generation_id") REFERENCES "public"."generations"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "conversation_messages" ADD CONSTRAINT "conversation_messages_project_id_projects_id_fk" FOREIGN KEY ("project_id") REFERENCES "public"."projects"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "conversation_messages" ADD CONSTRAINT "conversation_messages_generation_id_generations_id_fk" FOREIGN KEY ("generation_id") REFERENCES "public"."generations"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "generation_chunks" ADD CONSTRAINT "generation_chunks_generation_id_generations_id_fk" FOREIGN KEY ("generation_id") REFERENCES "public"."generations"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "generation_files" ADD CONSTRAINT "generation_files_generation_id_generations_id_fk" FOREIGN KEY ("generation_id") REFERENCES "public"."generations"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "generations" ADD CONSTRAINT "generations_project_id_projects_id_fk" FOREIGN KEY ("project_id") REFERENCES "public"."projects"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "generations" ADD CONSTRAINT "generations_created_by_users_id_fk" FOREIGN KEY ("created_by") REFERENCES "public"."users"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "generations" ADD CONSTRAINT "generations_parent_id_generations_id_fk" FOREIGN KEY ("parent_id") REFERENCES "public"."generations"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "generations" ADD CONSTRAINT "generations_retry_of_generations_id_fk" FOREIGN KEY ("retry_of") REFERENCES "public"."generations"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "local_credentials" ADD CONSTRAINT "local_credentials_user_id_users_id_fk" FOREIGN KEY ("user_id") REFERENCES "public"."users"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "project_members" ADD CONSTRAINT "project_members_project_id_projects_id_fk" FOREIGN KEY ("project_id") REFERENCES "public"."projects"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "project_members" ADD CONSTRAINT "project_members_user_id_users_id_fk" FOREIGN KEY ("user_id") REFERENCES "public"."users"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "projects" ADD CONSTRAINT "projects_owner_id_users_id_fk" FOREIGN KEY ("owner_id") REFERENCES "public"."users"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "refresh_tokens" ADD CONSTRAINT "refresh_tokens_session_id_auth_sessions_id_fk" FOREIGN KEY ("session_id") REFERENCES "public"."auth_sessions"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
CREATE INDEX "auth_sessions_user_id_idx" ON "auth_sessions" USING btree ("user_id");--> statement-breakpoint
CREATE INDEX "conversation_messages_session_idx" ON "conversation_messages" USING btree ("project_id","session_id","created_at");--> statement-breakpoint
CREATE INDEX "conversation_messages_generation_id_idx" ON "conversation_messages" USING btree ("generation_id");--> statement-breakpoint
CREATE INDEX "generations_project_created_idx" ON "generations" USING btree ("project_id","created_at" DESC NULLS LAST,"id" DESC NULLS LAST);--> statement-breakpoint
CREATE INDEX "generations_created_by_idx" ON "generations" USING btree ("created_by");--> statement-breakpoint
CREATE INDEX "generations_parent_id_idx" ON "generations" USING btree ("parent_id");--> statement-breakpoint
CREATE INDEX "generations_retry_of_idx" ON "generations" USING btree ("retry_of");--> statement-breakpoint
CREATE INDEX "generations_session_idx" ON "generations" USING btree ("project_id","session_id");--> statement-breakpoint
CREATE INDEX "generations_active_idx" ON "generations" USING btree ("status") WHERE "generations"."status" in ('QUEUED', 'RUNNING');--> statement-breakpoint
CREATE INDEX "project_members_user_id_idx" ON "project_members" USING btree ("user_id");--> statement-breakpoint
CREATE INDEX "projects_owner_id_idx" ON "projects" USING btree ("owner_id");--> statement-breakpoint
CREATE INDEX "projects_created_at_idx" ON "projects" USING btree ("created_at" DESC NULLS LAST,"id" DESC NULLS LAST);--> statement-breakpoint
CREATE INDEX "refresh_tokens_session_id_idx" ON "refresh_tokens" USING btree ("session_id");--> statement-breakpoint
CREATE UNIQUE INDEX "users_email_key" ON "users" USING btree ("email");--> statement-breakpoint
CREATE POLICY "auth_sessions_server_only" ON "auth_sessions" AS RESTRICTIVE FOR ALL TO "anon", "authenticated" USING (false) WITH CHECK (false);--> statement-breakpoint
CREATE POLICY "build_log_lines_select_member" ON "build_log_lines" AS PERMISSIVE FOR SELECT TO "authenticated" USING (kiln.generation_role("build_log_lines"."generation_id") is not null);--> statement-breakpoint
CREATE POLICY "build_steps_select_member" ON "build_steps" AS PERMISSIVE FOR SELECT TO "authenticated" USING (kiln.generation_role("build_steps"."generation_id") is not null);--> statement-breakpoint
CREATE POLICY "conversation_messages_select_member" ON "conversation_messages" AS PERMISSIVE FOR SELECT TO "authenticated" USING (kiln.project_role("conversation_messages"."project_id") is not null);--> statement-breakpoint
CREATE POLICY "conversation_messages_insert_editor" ON "conversation_messages" AS PERMISSIVE FOR INSERT TO "authenticated" WITH CHECK ("conversation_messages"."role" = 'USER' and kiln.project_role("conversation_messages"."project_id") in ('owner', 'editor'));--> statement-breakpoint
CREATE POLICY "generation_chunks_select_member" ON "generation_chunks" AS PERMISSIVE FOR SELECT TO "authenticated" USING (kiln.generation_role("generation_chunks"."generation_id") is not null);--> statement-breakpoint
CREATE POLICY "generation_files_select_member" ON "generation_files" AS PERMISSIVE FOR SELECT TO "authenticated" USING (kiln.generation_role("generation_files"."generation_id") is not null);--> statement-breakpoint
CREATE POLICY "generations_select_member" ON "generations" AS PERMISSIVE FOR SELECT TO "authenticated" USING (kiln.project_role("generations"."project_id") is not null);--> statement-breakpoint
CREATE POLICY "generations_insert_editor" ON "generations" AS PERMISSIVE FOR INSERT TO "authenticated" WITH CHECK ("generations"."created_by" = (select auth.uid()) and kiln.project_role("generations"."project_id") in ('owner', 'editor'));--> statement-breakpoint
CREATE POLICY "generations_update_editor" ON "generations" AS PERMISSIVE FOR UPDATE TO "authenticated" USING (kiln.project_role("generations"."project_id") in ('owner', 'editor')) WITH CHECK (kiln.project_role("generations"."project_id") in ('owner', 'editor'));--> statement-breakpoint
CREATE POLICY "local_credentials_server_only" ON "local_credentials" AS RESTRICTIVE FOR ALL TO "anon", "authenticated" USING (false) WITH CHECK (false);--> statement-breakpoint
CREATE POLICY "project_members_select_member" ON "project_members" AS PERMISSIVE FOR SELECT TO "authenticated" USING (kiln.project_role("project_members"."project_id") is not null);--> statement-breakpoint
CREATE POLICY "project_members_insert_owner" ON "project_members" AS PERMISSIVE FOR INSERT TO "authenticated" WITH CHECK (kiln.project_role("project_members"."project_id") = 'owner');--> statement-breakpoint
CREATE POLICY "project_members_update_owner" ON "project_members" AS PERMISSIVE FOR UPDATE TO "authenticated" USING (kiln.project_role("project_members"."project_id") = 'owner') WITH CHECK (kiln.project_role("project_members"."project_id") = 'owner');--> statement-breakpoint
CREATE POLICY "project_members_delete_owner" ON "project_members" AS PERMISSIVE FOR DELETE TO "authenticated" USING (kiln.project_role("project_members"."project_id") = 'owner');--> statement-breakpoint
CREATE POLICY "projects_select_member" ON "projects" AS PERMISSIVE FOR SELECT TO "authenticated" USING ("projects"."owner_id" = (select auth.uid()) or kiln.project_role("projects"."id") is not null);--> statement-breakpoint
CREATE POLICY "projects_insert_self" ON "projects" AS PERMISSIVE FOR INSERT TO "authenticated" WITH CHECK ("projects"."owner_id" = (select auth.uid()));--> statement-breakpoint
CREATE POLICY "projects_update_editor" ON "projects" AS PERMISSIVE FOR UPDATE TO "authenticated" USING (kiln.project_role("projects"."id") in ('owner', 'editor')) WITH CHECK (kiln.project_role("projects"."id") in ('owner', 'editor'));--> statement-breakpoint
CREATE POLICY "refresh_tokens_server_only" ON "refresh_tokens" AS RESTRICTIVE FOR ALL TO "anon", "authenticated" USING (false) WITH CHECK (false);--> statement-breakpoint
CREATE POLICY "server_secrets_server_only" ON "server_secrets" AS RESTRICTIVE FOR ALL TO "anon", "authenticated" USING (false) WITH CHECK (false);--> statement-breakpoint
CREATE POLICY "users_select_self_or_teammate" ON "users" AS PERMISSIVE FOR SELECT TO "authenticated" USING ("users"."id" = (select auth.uid()) or kiln.shares_project("users"."id"));