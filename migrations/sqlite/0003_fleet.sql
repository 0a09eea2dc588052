-- Every lease a worker took on a job, for audits: who held it, from when, and until
-- when (ended_at_ms; while open, the lease runs to expires_at_ms, moved on by each
-- heartbeat). Milliseconds since 1970. A lease taken over after it expired ended then.
CREATE TABLE lease_history (
    job_id         TEXT NOT NULL REFERENCES jobs(id),
    owner          TEXT NOT NULL,
    claimed_at_ms  INTEGER NOT NULL,
    expires_at_ms  INTEGER NOT NULL,
    ended_at_ms    INTEGER,
    PRIMARY KEY (job_id, claimed_at_ms, owner)
);

-- The first node to take a finished job's webhook delivers it; the others see it taken.
ALTER TABLE jobs ADD COLUMN webhook_claimed_at INTEGER;
