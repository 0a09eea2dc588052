-- Claims of a job since its last progress (a recorded step or checkpoint, or a clean
-- hand-back). A job that kills its worker is claimed again and again; after 3 such
-- claims it fails with worker_crashed instead of taking the next worker down too.
ALTER TABLE jobs ADD COLUMN claims_without_progress BIGINT NOT NULL DEFAULT 0;

-- Uploaded files: lines counted as the upload streams in (memory budgets need the
-- number of examples before a job is queued) and the content's SHA-256 (an
-- Idempotency-Key on an upload covers the bytes stored). NULL for older uploads.
ALTER TABLE files ADD COLUMN lines BIGINT;
ALTER TABLE files ADD COLUMN sha256 TEXT;

-- Idempotency keys are reserved before their request runs: status 0 marks a request
-- in progress, so that simultaneous repeats wait for it instead of running again.
CREATE INDEX idempotency_by_age ON idempotency_keys(created_at);
