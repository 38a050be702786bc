-- Catalog of objects and transcode jobs (SQLite). Keep in step with ../postgres/0001_catalog.sql.
-- Times are stored by sqlx as RFC 3339 text; JSON columns hold JSON text.

CREATE TABLE objects (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    bucket        TEXT    NOT NULL,
    -- BINARY collation (the default) orders keys byte-wise, as S3 lists them.
    key           TEXT    NOT NULL,
    size          INTEGER NOT NULL,
    etag          TEXT    NOT NULL,
    content_type  TEXT,
    -- x-amz-meta-* pairs as a JSON object.
    user_metadata TEXT    NOT NULL DEFAULT '{}',
    -- Base64 SHA-256 when the uploader supplied one.
    sha256        TEXT,
    -- File modification time in ns since the epoch: with size, how the reconcile scan sees change.
    mtime_ns      INTEGER NOT NULL,
    created_at    TEXT    NOT NULL,
    modified_at   TEXT    NOT NULL,
    description   TEXT,
    -- Probe result as JSON: duration, width, height, frame rate, codecs, bitrate, container.
    media         TEXT,
    -- Renditions as JSON: quality -> {path, size, encoder}.
    variants      TEXT    NOT NULL DEFAULT '{}',
    -- none (not media), pending, ok, error.
    probe_status  TEXT    NOT NULL DEFAULT 'none'
                  CHECK (probe_status IN ('none', 'pending', 'ok', 'error')),
    probe_error   TEXT,
    probed_at     TEXT,
    UNIQUE (bucket, key)
);

-- The probe worker picks pending rows oldest first.
CREATE INDEX objects_probe_pending ON objects (probe_status, id);

CREATE TABLE transcode_jobs (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    object_id        INTEGER NOT NULL REFERENCES objects (id) ON DELETE CASCADE,
    quality          TEXT    NOT NULL,
    status           TEXT    NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'processing', 'completed', 'failed', 'cancelled')),
    progress         INTEGER NOT NULL DEFAULT 0 CHECK (progress BETWEEN 0 AND 100),
    output_path      TEXT,
    output_size      INTEGER,
    error            TEXT,
    encoder          TEXT,
    created_at       TEXT    NOT NULL,
    started_at       TEXT,
    completed_at     TEXT,
    worker_id        TEXT,
    -- A worker holds a job until this time; an expired lease lets another worker take it.
    lease_expires_at TEXT,
    attempts         INTEGER NOT NULL DEFAULT 0
);

CREATE INDEX transcode_jobs_status ON transcode_jobs (status, created_at);
CREATE INDEX transcode_jobs_object ON transcode_jobs (object_id);
