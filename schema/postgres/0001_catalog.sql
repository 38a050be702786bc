-- Catalog of objects and transcode jobs (PostgreSQL). Keep in step with ../sqlite/0001_catalog.sql.

CREATE TABLE objects (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    bucket        TEXT        NOT NULL,
    -- "C" collation orders keys byte-wise, as S3 lists them (and as SQLite does).
    key           TEXT COLLATE "C" NOT NULL,
    size          BIGINT      NOT NULL,
    etag          TEXT        NOT NULL,
    content_type  TEXT,
    -- x-amz-meta-* pairs as a JSON object.
    user_metadata JSONB       NOT NULL DEFAULT '{}',
    -- Base64 SHA-256 when the uploader supplied one.
    sha256        TEXT,
    -- File modification time in ns since the epoch: with size, how the reconcile scan sees change.
    mtime_ns      BIGINT      NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL,
    modified_at   TIMESTAMPTZ NOT NULL,
    description   TEXT,
    -- Probe result: duration, width, height, frame rate, codecs, bitrate, container.
    media         JSONB,
    -- Renditions: quality -> {path, size, encoder}.
    variants      JSONB       NOT NULL DEFAULT '{}',
    -- none (not media), pending, ok, error.
    probe_status  TEXT        NOT NULL DEFAULT 'none'
                  CHECK (probe_status IN ('none', 'pending', 'ok', 'error')),
    probe_error   TEXT,
    probed_at     TIMESTAMPTZ,
    UNIQUE (bucket, key)
);

-- The probe worker picks pending rows oldest first.
CREATE INDEX objects_probe_pending ON objects (probe_status, id);

CREATE TABLE transcode_jobs (
    id               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    object_id        BIGINT      NOT NULL REFERENCES objects (id) ON DELETE CASCADE,
    quality          TEXT        NOT NULL,
    status           TEXT        NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'processing', 'completed', 'failed', 'cancelled')),
    progress         INTEGER     NOT NULL DEFAULT 0 CHECK (progress BETWEEN 0 AND 100),
    output_path      TEXT,
    output_size      BIGINT,
    error            TEXT,
    encoder          TEXT,
    created_at       TIMESTAMPTZ NOT NULL,
    started_at       TIMESTAMPTZ,
    completed_at     TIMESTAMPTZ,
    worker_id        TEXT,
    -- A worker holds a job until this time; an expired lease lets another worker take it.
    lease_expires_at TIMESTAMPTZ,
    attempts         INTEGER     NOT NULL DEFAULT 0
);

CREATE INDEX transcode_jobs_status ON transcode_jobs (status, created_at);
CREATE INDEX transcode_jobs_object ON transcode_jobs (object_id);
