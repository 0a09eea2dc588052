-- preftune's first schema. Never edit a released migration: add a new file.
-- Times are Unix seconds. Ids are opaque strings with a prefix (file-, ftjob-, …).

CREATE TABLE projects (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL
);

-- API keys are stored as SHA-256 hashes; the key itself is shown once, at creation.
CREATE TABLE api_keys (
    id          TEXT PRIMARY KEY,
    project_id  TEXT NOT NULL REFERENCES projects(id),
    key_hash    TEXT NOT NULL UNIQUE,
    prefix      TEXT NOT NULL,
    is_admin    INTEGER NOT NULL DEFAULT 0,
    created_at  INTEGER NOT NULL,
    revoked_at  INTEGER
);

CREATE TABLE files (
    id          TEXT PRIMARY KEY,
    project_id  TEXT NOT NULL REFERENCES projects(id),
    filename    TEXT NOT NULL,
    purpose     TEXT NOT NULL,
    bytes       INTEGER NOT NULL,
    status      TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    deleted_at  INTEGER
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
    created_at  INTEGER NOT NULL,
    deleted_at  INTEGER
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
    seed               INTEGER NOT NULL,
    suffix             TEXT,
    metadata           TEXT NOT NULL DEFAULT '{}',
    webhook_url        TEXT,
    status             TEXT NOT NULL,
    error              TEXT,                    -- JSON {code, message, param} or NULL
    fine_tuned_model   TEXT,
    step               INTEGER NOT NULL DEFAULT 0,
    total_steps        INTEGER,
    samples_per_s      REAL,
    estimated_finish   INTEGER,
    created_at         INTEGER NOT NULL,
    started_at         INTEGER,
    finished_at        INTEGER,
    -- The worker holding the job, and until when (renewed by heartbeats).
    lease_owner        TEXT,
    lease_expires_at   INTEGER
);
-- Listing newest first with cursor paging, per project.
CREATE INDEX jobs_by_project ON jobs(project_id, created_at DESC, id DESC);
-- Claiming the oldest queued job.
CREATE INDEX jobs_by_status ON jobs(status, created_at, id);

-- Events in order: seq is strictly increasing per job.
CREATE TABLE events (
    job_id      TEXT NOT NULL REFERENCES jobs(id),
    seq         INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    level       TEXT NOT NULL,
    type        TEXT NOT NULL,
    message     TEXT NOT NULL,
    data        TEXT,
    PRIMARY KEY (job_id, seq)
) WITHOUT ROWID;

-- One value per (job, name, step): a replayed step cannot duplicate a point.
CREATE TABLE metric_points (
    job_id  TEXT NOT NULL REFERENCES jobs(id),
    name    TEXT NOT NULL,
    step    INTEGER NOT NULL,
    value   REAL NOT NULL,
    PRIMARY KEY (job_id, name, step)
) WITHOUT ROWID;

CREATE TABLE checkpoints (
    id          TEXT PRIMARY KEY,
    job_id      TEXT NOT NULL REFERENCES jobs(id),
    step        INTEGER NOT NULL,
    metrics     TEXT NOT NULL DEFAULT '{}',
    created_at  INTEGER NOT NULL,
    UNIQUE (job_id, step)
);

-- A repeated POST with the same Idempotency-Key returns the first response.
CREATE TABLE idempotency_keys (
    project_id   TEXT NOT NULL REFERENCES projects(id),
    key          TEXT NOT NULL,
    request      TEXT NOT NULL,               -- method and path
    status       INTEGER NOT NULL,
    body         BLOB NOT NULL,
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (project_id, key)
);
