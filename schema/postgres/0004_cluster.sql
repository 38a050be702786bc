-- Several gateways on one database (PostgreSQL). Keep the tables in step with
-- ../sqlite/0004_cluster.sql. Times are milliseconds since the epoch by the database's clock,
-- so gateways whose clocks disagree still agree on who is stale and which lease expired.

-- Every gateway serving with this database, refreshed by its heartbeat.
CREATE TABLE gateways (
    id           TEXT   PRIMARY KEY,
    version      TEXT   NOT NULL,
    -- JSON array of the URLs it serves on.
    addresses    TEXT   NOT NULL,
    started_ms   BIGINT NOT NULL,
    heartbeat_ms BIGINT NOT NULL
);

-- Named leases: one holder at a time until expires_ms (start scans, reindex, sweeps).
CREATE TABLE leases (
    name       TEXT   PRIMARY KEY,
    holder     TEXT   NOT NULL,
    expires_ms BIGINT NOT NULL
);

-- Every change to an object's bytes or metadata is announced to the other gateways, which
-- drop what their memory caches hold of it. NOTIFY is sent at commit, and only then; the
-- payload names the gateway that made the change (its connections' application_name) so it
-- can ignore its own.
CREATE FUNCTION nebula_notify_object() RETURNS trigger AS $$
DECLARE
    r RECORD;
BEGIN
    IF TG_OP = 'DELETE' THEN r := OLD; ELSE r := NEW; END IF;
    PERFORM pg_notify('nebula_objects', json_build_object(
        'g', current_setting('application_name'), 'b', r.bucket, 'k', r.key)::text);
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER objects_notify
    AFTER INSERT OR DELETE OR UPDATE OF size, etag, content_type, user_metadata, mtime_ns ON objects
    FOR EACH ROW EXECUTE FUNCTION nebula_notify_object();
