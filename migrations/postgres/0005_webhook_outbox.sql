-- Webhook deliveries, written in the same transaction as what they announce (an outbox):
-- a job's end, a checkpoint, a preemption, a resumption, a validation. Any API node takes
-- a due row for claimed_until_ms, sends it, and records the outcome; a node that dies
-- mid-send leaves the row to another once the hold expires. body is the exact JSON sent
-- on every attempt (the same webhook-id each time).
CREATE TABLE webhook_deliveries (
    id                  TEXT PRIMARY KEY,
    job_id              TEXT NOT NULL REFERENCES jobs(id),
    project_id          TEXT NOT NULL,
    url                 TEXT NOT NULL,
    type                TEXT NOT NULL,
    body                TEXT NOT NULL,
    created_at          BIGINT NOT NULL,
    attempts            BIGINT NOT NULL DEFAULT 0,
    next_attempt_at_ms  BIGINT NOT NULL,
    claimed_until_ms    BIGINT,
    delivered_at        BIGINT,
    abandoned_at        BIGINT
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries(next_attempt_at_ms) WHERE delivered_at IS NULL AND abandoned_at IS NULL;
CREATE INDEX webhook_deliveries_by_job ON webhook_deliveries(job_id);
-- Fair share reads the leases that ended within its window, or are still held.
CREATE INDEX lease_history_by_end ON lease_history(ended_at_ms);
