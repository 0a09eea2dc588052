-- Every lease a worker took on a job, for audits: who held it, from when, and until
-- when (ended_at_ms; while open, the lease runs to expires_at_ms, moved on by each
-- heartbeat). Milliseconds since 1970. A lease taken over after it expired ended then.
CREATE TABLE lease_history (
    job_id         TEXT NOT NULL REFERENCES jobs(id),
    owner          TEXT NOT NULL,
    claimed_at_ms  BIGINT NOT NULL,
    expires_at_ms  BIGINT NOT NULL,
    ended_at_ms    BIGINT,
    PRIMARY KEY (job_id, claimed_at_ms, owner)
);

-- The first node to take a finished job's webhook delivers it; the others see it taken.
ALTER TABLE jobs ADD COLUMN webhook_claimed_at BIGINT;

-- SQLite's rowid, which the stores order by to break ties between rows made in the same
-- second (in creation order): a sequence here, filled for existing rows.
ALTER TABLE jobs ADD COLUMN rowid BIGSERIAL;
ALTER TABLE files ADD COLUMN rowid BIGSERIAL;
ALTER TABLE models ADD COLUMN rowid BIGSERIAL;
CREATE INDEX jobs_by_project_in_order ON jobs(project_id, created_at DESC, rowid DESC);
CREATE INDEX jobs_claimable ON jobs(status, created_at, rowid);
CREATE INDEX files_by_project_in_order ON files(project_id, created_at DESC, rowid DESC);
