-- Families whose lists the device keeps in sync (`Client::sync_family`).
CREATE TABLE families (
    family_id BLOB PRIMARY KEY NOT NULL
);
CREATE INDEX lists_family_id_idx ON lists (family_id);
