CREATE TYPE "public"."project_secret_name" AS ENUM('GEMINI_API_KEY', 'OPENAI_API_KEY');--> statement-breakpoint
CREATE TABLE "project_secrets" (
	"project_id" uuid NOT NULL,
	"name" "project_secret_name" NOT NULL,
	"ciphertext" text NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL,
	CONSTRAINT "project_secrets_project_id_name_pk" PRIMARY KEY("project_id","name")
);
--> statement-breakpoint
ALTER TABLE "project_secrets" ENABLE ROW LEVEL SECURITY;--> statement-breakpoint
ALTER TABLE "project_secrets" ADD CONSTRAINT "project_secrets_project_id_projects_id_fk" FOREIGN KEY ("project_id") REFERENCES "public"."projects"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
CREATE POLICY "project_secrets_select_member" ON "project_secrets" AS PERMISSIVE FOR SELECT TO "authenticated" USING (kiln.project_role("project_secrets"."project_id") is not null);--> statement-breakpoint
CREATE POLICY "project_secrets_insert_owner" ON "project_secrets" AS PERMISSIVE FOR INSERT TO "authenticated" WITH CHECK (kiln.project_role("project_secrets"."project_id") = 'owner');--> statement-breakpoint
CREATE POLICY "project_secrets_update_owner" ON "project_secrets" AS PERMISSIVE FOR UPDATE TO "authenticated" USING (kiln.project_role("project_secrets"."project_id") = 'owner') WITH CHECK (kiln.project_role("project_secrets"."project_id") = 'owner');--> statement-breakpoint
CREATE POLICY "project_secrets_delete_owner" ON "project_secrets" AS PERMISSIVE FOR DELETE TO "authenticated" USING (kiln.project_role("project_secrets"."project_id") = 'owner');