CREATE TYPE "public"."artifact_kind" AS ENUM('SOURCE', 'BUNDLE');--> statement-breakpoint
CREATE TYPE "public"."diagnostic_severity" AS ENUM('ERROR', 'WARNING', 'INFO');--> statement-breakpoint
CREATE TYPE "public"."fix_round_status" AS ENUM('RUNNING', 'SUCCEEDED', 'FAILED', 'CANCELLED');--> statement-breakpoint
ALTER TYPE "public"."generation_phase" ADD VALUE 'FIXING' BEFORE 'DONE';--> statement-breakpoint
CREATE TABLE "artifact_blobs" (
	"sha256" text PRIMARY KEY NOT NULL,
	"size" bigint NOT NULL,
	"content" "bytea" NOT NULL,
	"created_at" timestamp (3) with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
ALTER TABLE "artifact_blobs" ENABLE ROW LEVEL SECURITY;--> statement-breakpoint
CREATE TABLE "fix_rounds" (
	"generation_id" uuid NOT NULL,
	"round" integer NOT NULL,
	"status" "fix_round_status" DEFAULT 'RUNNING' NOT NULL,
	"input_tokens" integer DEFAULT 0 NOT NULL,
	"output_tokens" integer DEFAULT 0 NOT NULL,
	"started_at" timestamp (3) with time zone DEFAULT now() NOT NULL,
	"finished_at" timestamp (3) with time zone,
	CONSTRAINT "fix_rounds_generation_id_round_pk" PRIMARY KEY("generation_id","round"),
	CONSTRAINT "fix_rounds_round_range" CHECK ("fix_rounds"."round" between 1 and 5)
);
--> statement-breakpoint
ALTER TABLE "fix_rounds" ENABLE ROW LEVEL SECURITY;--> statement-breakpoint
CREATE TABLE "generation_artifacts" (
	"generation_id" uuid NOT NULL,
	"kind" "artifact_kind" NOT NULL,
	"path" text NOT NULL,
	"sha256" text NOT NULL,
	"size" bigint NOT NULL,
	CONSTRAINT "generation_artifacts_generation_id_kind_path_pk" PRIMARY KEY("generation_id","kind","path")
);
--> statement-breakpoint
ALTER TABLE "generation_artifacts" ENABLE ROW LEVEL SECURITY;--> statement-breakpoint
CREATE TABLE "generation_diagnostics" (
	"generation_id" uuid NOT NULL,
	"round" integer DEFAULT 0 NOT NULL,
	"ordinal" integer NOT NULL,
	"tool" text NOT NULL,
	"severity" "diagnostic_severity" NOT NULL,
	"path" text,
	"line" integer,
	"column" integer,
	"code" text,
	"message" text NOT NULL,
	CONSTRAINT "generation_diagnostics_generation_id_round_ordinal_pk" PRIMARY KEY("generation_id","round","ordinal")
);
--> statement-breakpoint
ALTER TABLE "generation_diagnostics" ENABLE ROW LEVEL SECURITY;--> statement-breakpoint
ALTER TABLE "build_log_lines" ADD COLUMN "round" integer DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE "build_steps" ADD COLUMN "round" integer DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE "generation_chunks" ADD COLUMN "round" integer DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE "generations" ADD COLUMN "restored_from" uuid;--> statement-breakpoint
ALTER TABLE "generations" ADD COLUMN "max_fix_rounds" integer DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE "fix_rounds" ADD CONSTRAINT "fix_rounds_generation_id_generations_id_fk" FOREIGN KEY ("generation_id") REFERENCES "public"."generations"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "generation_artifacts" ADD CONSTRAINT "generation_artifacts_generation_id_generations_id_fk" FOREIGN KEY ("generation_id") REFERENCES "public"."generations"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "generation_diagnostics" ADD CONSTRAINT "generation_diagnostics_generation_id_generations_id_fk" FOREIGN KEY ("generation_id") REFERENCES "public"."generations"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
CREATE INDEX "generation_artifacts_sha256_idx" ON "generation_artifacts" USING btree ("sha256");--> statement-breakpoint
ALTER TABLE "generations" ADD CONSTRAINT "generations_restored_from_generations_id_fk" FOREIGN KEY ("restored_from") REFERENCES "public"."generations"("id") ON DELETE no action ON UPDATE no action;--> statement-breakpoint
CREATE INDEX "generations_restored_from_idx" ON "generations" USING btree ("restored_from");--> statement-breakpoint
ALTER TABLE "generations" ADD CONSTRAINT "generations_max_fix_rounds_range" CHECK ("generations"."max_fix_rounds" between 0 and 5);--> statement-breakpoint
CREATE POLICY "artifact_blobs_server_only" ON "artifact_blobs" AS RESTRICTIVE FOR ALL TO "anon", "authenticated" USING (false) WITH CHECK (false);--> statement-breakpoint
CREATE POLICY "fix_rounds_select_member" ON "fix_rounds" AS PERMISSIVE FOR SELECT TO "authenticated" USING (kiln.generation_role("fix_rounds"."generation_id") is not null);--> statement-breakpoint
CREATE POLICY "generation_artifacts_select_member" ON "generation_artifacts" AS PERMISSIVE FOR SELECT TO "authenticated" USING (kiln.generation_role("generation_artifacts"."generation_id") is not null);--> statement-breakpoint
CREATE POLICY "generation_diagnostics_select_member" ON "generation_diagnostics" AS PERMISSIVE FOR SELECT TO "authenticated" USING (kiln.generation_role("generation_diagnostics"."generation_id") is not null);