-- (sqlite) Keep in step with ../postgres/0005_access_keys.sql.
-- The scoped access keys, when the catalog is shared by several gateways (PostgreSQL): one JSON
-- document, as the data folder's access-keys.json holds it, and a generation every change
-- bumps, which gateways poll to see a change without reading the document.
CREATE TABLE access_keys (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    document TEXT NOT NULL,
    generation BIGINT NOT NULL
);
INSERT INTO access_keys (id, document, generation) VALUES (1, '{"keys": []}', 0);
