-- Null where a row predates the column or an older instance wrote it during a deploy: the worker
-- reads that as spent for a retry (retry_of set), as those instances would have.
ALTER TABLE "generations" ADD COLUMN "retry_spent" boolean;
