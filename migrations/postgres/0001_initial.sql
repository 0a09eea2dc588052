-- preftune's first schema, for PostgreSQL (the same tables as sqlite/0001_initial.sql).
-- Never edit a released migration: add a new file, in both dialects.
-- Times are Unix seconds; every integer is 64-bit (BIGINT), as SQLite's are. Ids are opaque strings with a prefix (file-, ftjob-, …).

CREATE TABLE projects (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    created_at  BIGINT NOT NULL
);

-- API keys are stored as SHA-256 hashes; the key itself is shown once, at creation.
CREATE TABLE api_keys (
    id          TEXT PRIMARY KEY,
    project_id  TEXT NOT NULL REFERENCES projects(id),
    key_hash    TEXT NOT NULL UNIQUE,
    prefix      TEXT NOT NULL,
    is_admin    BIGINT NOT NULL DEFAULT 0,
    created_at  BIGINT NOT NULL,
    revoked_at  BIGINT
);

CREATE TABLE files (
    id          TEXT PRIMARY KEY,
    project_id  TEXT NOT NULL REFERENCES projects(id),
    filename    TEXT NOT NULL,
    purpose     TEXT NOT NULL,
    bytes       BIGINT NOT NULL,
    status      TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    deleted_at  BIGINT
);
CREATE INDEX files_by_project ON files(project_id, created_at DESC, id DESC);

-- Base models (from a config or an uploaded file) and fine-tuned results.
-- project_id NULL: visible to every project.
CREATE TABLE models (
    id          TEXT PRIMARY KEY,
    project_id  TEXT REFERENCES projects(id),
    config      TEXT NOT NULL,
    parent      TEXT REFERENCES models(id),
    job_id      TEXT,
    created_at  BIGINT NOT NULL,
    deleted_at  BIGINT
);
CREATE INDEX models_by_project ON models(project_id, created_at DESC);

CREATE TABLE jobs (
    id                 TEXT PRIMARY KEY,
    project_id         TEXT NOT NULL REFERENCES projects(id),
    model              TEXT NOT NULL REFERENCES models(id),
    training_file      TEXT NOT NULL REFERENCES files(id),
    validation_file    TEXT REFERENCES files(id),
    method             TEXT NOT NULL,           -- JSON, as submitted
    hyperparameters    TEXT NOT NULL,           -- JSON, resolved
    seed               BIGINT NOT NULL,
    suffix             TEXT,
    metadata           TEXT NOT NULL DEFAULT '{}',
    webhook_url        TEXT,
    status             TEXT NOT NULL,
    error              TEXT,                    -- JSON {code, message, param} or NULL
    fine_tuned_model   TEXT,
    step               BIGINT NOT NULL DEFAULT 0,
    total_steps        BIGINT,
    samples_per_s      DOUBLE PRECISION,
    estimated_finish   BIGINT,
    created_at         BIGINT NOT NULL,
    started_at         BIGINT,
    finished_at        BIGINT,
    -- The worker holding the job, and until when (renewed by heartbeats).
    lease_owner        TEXT,
    lease_expires_at   BIGINT
);
-- Listing newest first with cursor paging, per project.
CREATE INDEX jobs_by_project ON jobs(project_id, created_at DESC, id DESC);
-- Claiming the oldest queued job.
CREATE INDEX jobs_by_status ON jobs(status, created_at, id);

-- Events in order: seq is strictly increasing per job.
CREATE TABLE events (
    job_id      TEXT NOT NULL REFERENCES jobs(id),
    seq         BIGINT NOT NULL,
    created_at  BIGINT NOT NULL,
    level       TEXT NOT NULL,
    type        TEXT NOT NULL,
    message     TEXT NOT NULL,
    data        TEXT,
    PRIMARY KEY (job_id, seq)
);

-- One value per (job, name, step): a replayed step cannot duplicate a point.
CREATE TABLE metric_points (
    job_id  TEXT NOT NULL REFERENCES jobs(id),
    name    TEXT NOT NULL,
    step    BIGINT NOT NULL,
    value   DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (job_id, name, step)
);

CREATE TABLE checkpoints (
    id          TEXT PRIMARY KEY,
    job_id      TEXT NOT NULL REFERENCES jobs(id),
    step        BIGINT NOT NULL,
    metrics     TEXT NOT NULL DEFAULT '{}',
    created_at  BIGINT NOT NULL,
    UNIQUE (job_id, step)
);

-- A repeated POST with the same Idempotency-Key returns the first response.
CREATE TABLE idempotency_keys (
    project_id   TEXT NOT NULL REFERENCES projects(id),
    key          TEXT NOT NULL,
    request      TEXT NOT NULL,               -- method and path
    status       BIGINT NOT NULL,
    body         BYTEA NOT NULL,
    created_at   BIGINT NOT NULL,
    PRIMARY KEY (project_id, key)
);
