-- Several gateways on one database (SQLite: the one gateway of a data folder, and
-- `nebula-gateway reindex`). Keep the tables in step with ../postgres/0004_cluster.sql (which
-- also announces object changes to the other gateways: SQLite has no other gateway to tell).
-- Times are milliseconds since the epoch by the database's clock.

-- Every gateway serving with this database, refreshed by its heartbeat.
CREATE TABLE gateways (
    id           TEXT    PRIMARY KEY,
    version      TEXT    NOT NULL,
    -- JSON array of the URLs it serves on.
    addresses    TEXT    NOT NULL,
    started_ms   INTEGER NOT NULL,
    heartbeat_ms INTEGER NOT NULL
);

-- Named leases: one holder at a time until expires_ms (start scans, reindex, sweeps).
CREATE TABLE leases (
    name       TEXT    PRIMARY KEY,
    holder     TEXT    NOT NULL,
    expires_ms INTEGER NOT NULL
);
