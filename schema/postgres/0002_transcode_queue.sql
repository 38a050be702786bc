-- Transcode job queue (PostgreSQL). Keep in step with ../sqlite/0002_transcode_queue.sql.

-- At most one pending or processing job per object and quality: two requests (or two gateways
-- sharing the database) asking at the same moment get the same job, not a duplicate.
CREATE UNIQUE INDEX transcode_jobs_active ON transcode_jobs (object_id, quality)
    WHERE status IN ('pending', 'processing');
