-- (sqlite) Keep in step with ../postgres/0003_probe_pending_partial.sql.
-- Only rows waiting for a probe are in the prober's index: every other write (nearly all of
-- them, for a folder that is not all media) no longer updates it.
DROP INDEX objects_probe_pending;
CREATE INDEX objects_probe_pending ON objects (id) WHERE probe_status = 'pending';
