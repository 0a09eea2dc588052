-- Scheduling: a job's priority (higher is claimed first; ties oldest first), and the
-- operator's bounds per project: the highest priority its jobs may ask for, and how many
-- of its jobs may run at once (NULL: no limit).
ALTER TABLE jobs ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;
ALTER TABLE projects ADD COLUMN max_priority INTEGER NOT NULL DEFAULT 0;
ALTER TABLE projects ADD COLUMN max_running INTEGER;
CREATE INDEX jobs_queue ON jobs(status, priority DESC, created_at);
-- Fair share: each project's weight (its share of the workers, relative to the other
-- projects waiting), and when each job last entered the queue.
ALTER TABLE projects ADD COLUMN weight REAL NOT NULL DEFAULT 1;
ALTER TABLE jobs ADD COLUMN queued_at INTEGER;
-- Retries and deadlines: how many times a job may be taken over after its worker died or
-- lost its lease (retries counts them), and the most it may run, in seconds (NULL: no limit).
ALTER TABLE jobs ADD COLUMN max_retries INTEGER NOT NULL DEFAULT 3;
ALTER TABLE jobs ADD COLUMN retries INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN max_duration INTEGER;
-- Signed webhooks: each project's signing secret (Standard Webhooks, whsec_…), shown once
-- when made; NULL: its webhooks go unsigned.
ALTER TABLE projects ADD COLUMN webhook_secret TEXT;
