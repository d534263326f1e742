-- The device's copy of the lists an app keeps.
CREATE TABLE lists (
    list_id    BLOB PRIMARY KEY NOT NULL,
    family_id  BLOB,
    -- The folded document state (update v1); NULL until the first fold.
    state      BLOB,
    -- The server's latest durable acknowledgement (state vector v1).
    durable_sv BLOB,
    removed_at TEXT
);

-- Updates since the last fold, in order; local ones stay until the
-- server's acknowledgement covers them.
CREATE TABLE updates (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    list_id BLOB NOT NULL REFERENCES lists (list_id) ON DELETE CASCADE,
    origin  TEXT NOT NULL CHECK (origin IN ('local', 'remote')),
    body    BLOB NOT NULL
);
CREATE INDEX updates_list_id_idx ON updates (list_id, id);
