-- Read-only links (vendor links): each token carries the id of its row, so
-- a family can list its links and revoke one; a revoked or expired link
-- stops syncing at once.
CREATE TABLE read_only_tokens (
    id          uuid PRIMARY KEY,
    list_id     uuid NOT NULL REFERENCES grocery_lists (id) ON DELETE CASCADE,
    created_by  uuid REFERENCES users (id) ON DELETE SET NULL,
    expires_at  timestamptz NOT NULL,
    revoked_at  timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX read_only_tokens_list_id_idx ON read_only_tokens (list_id);
CREATE INDEX read_only_tokens_created_by_idx ON read_only_tokens (created_by);
