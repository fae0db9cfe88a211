-- What a running generation has spent so far, written by its heartbeat: lease recovery charges it
-- when the worker died with the exact count (the usage of the run's final transaction).
ALTER TABLE "generations" ADD COLUMN "spent_input_tokens" integer DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE "generations" ADD COLUMN "spent_output_tokens" integer DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE "generations" ADD CONSTRAINT "generations_spent_tokens_positive" CHECK ("generations"."spent_input_tokens" >= 0 and "generations"."spent_output_tokens" >= 0);