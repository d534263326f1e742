-- Larder's relational schema for the single-node store (SQLite), table for
-- table the PostgreSQL one (migrations/postgres), so a database moves from
-- one to the other with `larder export` / `larder import`.
-- Types: UUIDs are 16-byte blobs, times are RFC 3339 text in UTC (which
-- sorts as time does), JSON is text. updated_at is kept by triggers.

-- Accounts --------------------------------------------------------------------

CREATE TABLE users (
    id            BLOB PRIMARY KEY NOT NULL,
    email         TEXT NOT NULL,
    display_name  TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    created_at    TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')),
    updated_at    TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')),
    deleted_at    TEXT,
    CONSTRAINT users_email_format CHECK (length(email) BETWEEN 3 AND 254 AND instr(email, '@') > 1),
    CONSTRAINT users_display_name_length CHECK (length(display_name) BETWEEN 1 AND 100)
);
-- Emails are unique case-insensitively (the application lower-cases them
-- before SQLite's ASCII-only lower() sees them).
CREATE UNIQUE INDEX users_email_key ON users (lower(email));

CREATE TABLE refresh_tokens (
    id          BLOB PRIMARY KEY NOT NULL,
    user_id     BLOB NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    chain_id    BLOB NOT NULL,
    token_hash  TEXT NOT NULL,
    replaced_by BLOB REFERENCES refresh_tokens (id) ON DELETE SET NULL,
    expires_at  TEXT NOT NULL,
    revoked_at  TEXT,
    created_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')),
    updated_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')),
    CONSTRAINT refresh_tokens_token_hash_key UNIQUE (token_hash)
);
CREATE INDEX refresh_tokens_user_id_idx ON refresh_tokens (user_id);
CREATE INDEX refresh_tokens_chain_id_idx ON refresh_tokens (chain_id);
CREATE INDEX refresh_tokens_replaced_by_idx ON refresh_tokens (replaced_by);

-- Families --------------------------------------------------------------------

CREATE TABLE families (
    id         BLOB PRIMARY KEY NOT NULL,
    name       TEXT NOT NULL,
    created_by BLOB REFERENCES users (id) ON DELETE SET NULL,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')),
    updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')),
    deleted_at TEXT,
    CONSTRAINT families_name_length CHECK (length(name) BETWEEN 1 AND 100)
);
CREATE INDEX families_created_by_idx ON families (created_by);

CREATE TABLE family_memberships (
    family_id  BLOB NOT NULL REFERENCES families (id) ON DELETE CASCADE,
    user_id    BLOB NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role       TEXT NOT NULL,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')),
    updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')),
    PRIMARY KEY (family_id, user_id),
    CONSTRAINT family_memberships_role CHECK (role IN ('admin', 'member'))
);
CREATE INDEX family_memberships_user_id_idx ON family_memberships (user_id);

CREATE TABLE invitations (
    id          BLOB PRIMARY KEY NOT NULL,
    family_id   BLOB NOT NULL REFERENCES families (id) ON DELETE CASCADE,
    code_hash   TEXT NOT NULL,
    role        TEXT NOT NULL DEFAULT 'member',
    invited_by  BLOB REFERENCES users (id) ON DELETE SET NULL,
    expires_at  TEXT NOT NULL,
    accepted_by BLOB REFERENCES users (id) ON DELETE SET NULL,
    accepted_at TEXT,
    revoked_at  TEXT,
    created_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')),
    updated_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')),
    CONSTRAINT invitations_code_hash_key UNIQUE (code_hash),
    CONSTRAINT invitations_role CHECK (role IN ('admin', 'member')),
    CONSTRAINT invitations_accepted CHECK ((accepted_by IS NULL) = (accepted_at IS NULL))
);
CREATE INDEX invitations_family_id_idx ON invitations (family_id);
CREATE INDEX invitations_invited_by_idx ON invitations (invited_by);
CREATE INDEX invitations_accepted_by_idx ON invitations (accepted_by);

-- Lists and their documents ---------------------------------------------------

CREATE TABLE grocery_lists (
    id                     BLOB PRIMARY KEY NOT NULL,
    family_id              BLOB REFERENCES families (id) ON DELETE CASCADE,
    created_by             BLOB REFERENCES users (id) ON DELETE SET NULL,
    name                   TEXT NOT NULL DEFAULT '',
    status                 TEXT NOT NULL DEFAULT 'active',
    item_count             INTEGER NOT NULL DEFAULT 0,
    needed_count           INTEGER NOT NULL DEFAULT 0,
    in_cart_count          INTEGER NOT NULL DEFAULT 0,
    purchased_count        INTEGER NOT NULL DEFAULT 0,
    head_seq               INTEGER NOT NULL DEFAULT 0,
    projected_seq          INTEGER NOT NULL DEFAULT 0,
    snapshot_seq           INTEGER NOT NULL DEFAULT 0,
    compaction_lease_until TEXT,
    created_at             TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')),
    updated_at             TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')),
    deleted_at             TEXT,
    CONSTRAINT grocery_lists_status CHECK (status IN ('active', 'archived')),
    CONSTRAINT grocery_lists_seqs CHECK (head_seq >= 0 AND projected_seq BETWEEN 0 AND head_seq AND snapshot_seq BETWEEN 0 AND head_seq),
    CONSTRAINT grocery_lists_counts CHECK (item_count >= 0 AND needed_count >= 0 AND in_cart_count >= 0 AND purchased_count >= 0)
);
CREATE INDEX grocery_lists_family_id_idx ON grocery_lists (family_id) WHERE deleted_at IS NULL;
CREATE INDEX grocery_lists_created_by_idx ON grocery_lists (created_by);
CREATE INDEX grocery_lists_projection_lag_idx ON grocery_lists (id) WHERE projected_seq < head_seq;

CREATE TABLE doc_updates (
    list_id    BLOB NOT NULL REFERENCES grocery_lists (id) ON DELETE CASCADE,
    seq        INTEGER NOT NULL,
    update_v1  BLOB NOT NULL,
    origin     TEXT NOT NULL,
    user_id    BLOB REFERENCES users (id) ON DELETE SET NULL,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')),
    PRIMARY KEY (list_id, seq),
    CONSTRAINT doc_updates_seq_positive CHECK (seq > 0)
) WITHOUT ROWID;
CREATE INDEX doc_updates_user_id_idx ON doc_updates (user_id);

CREATE TABLE doc_snapshots (
    list_id    BLOB NOT NULL REFERENCES grocery_lists (id) ON DELETE CASCADE,
    up_to_seq  INTEGER NOT NULL,
    state_v1   BLOB NOT NULL,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')),
    updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')),
    PRIMARY KEY (list_id, up_to_seq),
    CONSTRAINT doc_snapshots_seq CHECK (up_to_seq >= 0)
);

-- Projection rows (written only by the projector) ---------------------------

CREATE TABLE list_items (
    list_id       BLOB NOT NULL REFERENCES grocery_lists (id) ON DELETE CASCADE,
    item_id       BLOB NOT NULL,
    name          TEXT NOT NULL,
    quantity      TEXT,
    status        TEXT NOT NULL,
    category      TEXT,
    note          TEXT,
    assignee      TEXT,
    position      TEXT,
    added_by      TEXT,
    added_at      TEXT,
    projected_seq INTEGER NOT NULL,
    created_at    TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')),
    updated_at    TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')),
    PRIMARY KEY (list_id, item_id),
    CONSTRAINT list_items_status CHECK (status IN ('needed', 'in_cart', 'purchased'))
);
CREATE INDEX list_items_list_position_idx ON list_items (list_id, position, item_id);
CREATE INDEX list_items_list_status_idx ON list_items (list_id, status);
CREATE INDEX list_items_assignee_idx ON list_items (assignee) WHERE assignee IS NOT NULL;
CREATE INDEX list_items_name_idx ON list_items (lower(name));

CREATE TABLE vendors (
    id              BLOB PRIMARY KEY NOT NULL,
    family_id       BLOB NOT NULL REFERENCES families (id) ON DELETE CASCADE,
    name            TEXT NOT NULL,
    whatsapp_number TEXT NOT NULL,
    created_by      BLOB REFERENCES users (id) ON DELETE SET NULL,
    created_at      TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')),
    updated_at      TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')),
    deleted_at      TEXT,
    CONSTRAINT vendors_name_length CHECK (length(name) BETWEEN 1 AND 100),
    CONSTRAINT vendors_whatsapp_number_format CHECK (
        length(whatsapp_number) BETWEEN 7 AND 15
        AND whatsapp_number GLOB '[1-9]*'
        AND whatsapp_number NOT GLOB '*[^0-9]*')
);
CREATE INDEX vendors_family_id_idx ON vendors (family_id);
CREATE INDEX vendors_created_by_idx ON vendors (created_by);
CREATE UNIQUE INDEX vendors_family_number_key ON vendors (family_id, whatsapp_number) WHERE deleted_at IS NULL;

CREATE TABLE orders (
    id            BLOB PRIMARY KEY NOT NULL,
    list_id       BLOB NOT NULL REFERENCES grocery_lists (id) ON DELETE CASCADE,
    vendor_id     BLOB REFERENCES vendors (id) ON DELETE SET NULL,
    status        TEXT NOT NULL,
    placed_by     TEXT,
    placed_at     TEXT,
    note          TEXT,
    projected_seq INTEGER NOT NULL,
    created_at    TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')),
    updated_at    TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')),
    CONSTRAINT orders_status CHECK (status IN ('placed', 'confirmed', 'delivered', 'cancelled'))
);
CREATE INDEX orders_list_id_idx ON orders (list_id);
CREATE INDEX orders_vendor_id_idx ON orders (vendor_id);
CREATE INDEX orders_status_idx ON orders (status);

CREATE TABLE order_items (
    order_id   BLOB NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    line_no    INTEGER NOT NULL,
    item_id    BLOB,
    name       TEXT NOT NULL,
    quantity   TEXT,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')),
    updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')),
    PRIMARY KEY (order_id, line_no),
    CONSTRAINT order_items_line_no CHECK (line_no >= 0)
);
CREATE INDEX order_items_item_id_idx ON order_items (item_id) WHERE item_id IS NOT NULL;

-- Sharing with vendors over WhatsApp ------------------------------------------

CREATE TABLE vendor_shares (
    id            BLOB PRIMARY KEY NOT NULL,
    list_id       BLOB NOT NULL REFERENCES grocery_lists (id) ON DELETE CASCADE,
    vendor_id     BLOB NOT NULL REFERENCES vendors (id) ON DELETE CASCADE,
    shared_by     BLOB REFERENCES users (id) ON DELETE SET NULL,
    snapshot_seq  INTEGER NOT NULL,
    status        TEXT NOT NULL DEFAULT 'pending',
    rendered_text TEXT,
    error_code    INTEGER,
    error_message TEXT,
    created_at    TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')),
    updated_at    TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')),
    CONSTRAINT vendor_shares_status CHECK (status IN ('pending', 'sent', 'delivered', 'read', 'failed')),
    CONSTRAINT vendor_shares_version_key UNIQUE (list_id, vendor_id, snapshot_seq)
);
CREATE INDEX vendor_shares_vendor_id_idx ON vendor_shares (vendor_id);
CREATE INDEX vendor_shares_shared_by_idx ON vendor_shares (shared_by);

CREATE TABLE share_messages (
    id          BLOB PRIMARY KEY NOT NULL,
    share_id    BLOB NOT NULL REFERENCES vendor_shares (id) ON DELETE CASCADE,
    wamid       TEXT NOT NULL,
    kind        TEXT NOT NULL,
    status      TEXT NOT NULL DEFAULT 'sent',
    status_at   TEXT,
    error_code  INTEGER,
    error_title TEXT,
    created_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')),
    updated_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')),
    CONSTRAINT share_messages_wamid_key UNIQUE (wamid),
    CONSTRAINT share_messages_kind CHECK (kind IN ('text', 'template')),
    CONSTRAINT share_messages_status CHECK (status IN ('sent', 'delivered', 'read', 'failed'))
);
CREATE INDEX share_messages_share_id_idx ON share_messages (share_id);

-- Background work ---------------------------------------------------------------

CREATE TABLE outbox_jobs (
    id           BLOB PRIMARY KEY NOT NULL,
    kind         TEXT NOT NULL,
    dedupe_key   TEXT NOT NULL,
    payload      TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(payload)),
    status       TEXT NOT NULL DEFAULT 'pending',
    attempts     INTEGER NOT NULL DEFAULT 0,
    run_after    TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')),
    locked_until TEXT,
    last_error   TEXT,
    created_at   TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')),
    updated_at   TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')),
    CONSTRAINT outbox_jobs_dedupe_key UNIQUE (dedupe_key),
    CONSTRAINT outbox_jobs_status CHECK (status IN ('pending', 'running', 'done', 'failed')),
    CONSTRAINT outbox_jobs_attempts CHECK (attempts >= 0)
);
CREATE INDEX outbox_jobs_due_idx ON outbox_jobs (run_after) WHERE status IN ('pending', 'running');

CREATE TABLE idempotency_keys (
    user_id         BLOB NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    key             TEXT NOT NULL,
    request_method  TEXT NOT NULL,
    request_path    TEXT NOT NULL,
    request_hash    TEXT NOT NULL,
    response_status INTEGER,
    response_body   TEXT CHECK (response_body IS NULL OR json_valid(response_body)),
    expires_at      TEXT NOT NULL,
    created_at      TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')),
    updated_at      TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')),
    PRIMARY KEY (user_id, key),
    CONSTRAINT idempotency_keys_key_length CHECK (length(key) BETWEEN 1 AND 255)
);
CREATE INDEX idempotency_keys_expires_at_idx ON idempotency_keys (expires_at);

-- Read-only links (vendor links) ------------------------------------------------

CREATE TABLE read_only_tokens (
    id          BLOB PRIMARY KEY NOT NULL,
    list_id     BLOB NOT NULL REFERENCES grocery_lists (id) ON DELETE CASCADE,
    created_by  BLOB REFERENCES users (id) ON DELETE SET NULL,
    expires_at  TEXT NOT NULL,
    revoked_at  TEXT,
    created_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')),
    updated_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now'))
);
CREATE INDEX read_only_tokens_list_id_idx ON read_only_tokens (list_id);
CREATE INDEX read_only_tokens_created_by_idx ON read_only_tokens (created_by);

-- updated_at follows every change that does not set it itself.
CREATE TRIGGER users_set_updated_at AFTER UPDATE ON users FOR EACH ROW
WHEN NEW.updated_at IS OLD.updated_at
BEGIN
    UPDATE users SET updated_at = strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now') WHERE rowid = NEW.rowid;
END;
CREATE TRIGGER refresh_tokens_set_updated_at AFTER UPDATE ON refresh_tokens FOR EACH ROW
WHEN NEW.updated_at IS OLD.updated_at
BEGIN
    UPDATE refresh_tokens SET updated_at = strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now') WHERE rowid = NEW.rowid;
END;
CREATE TRIGGER families_set_updated_at AFTER UPDATE ON families FOR EACH ROW
WHEN NEW.updated_at IS OLD.updated_at
BEGIN
    UPDATE families SET updated_at = strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now') WHERE rowid = NEW.rowid;
END;
CREATE TRIGGER family_memberships_set_updated_at AFTER UPDATE ON family_memberships FOR EACH ROW
WHEN NEW.updated_at IS OLD.updated_at
BEGIN
    UPDATE family_memberships SET updated_at = strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now') WHERE rowid = NEW.rowid;
END;
CREATE TRIGGER invitations_set_updated_at AFTER UPDATE ON invitations FOR EACH ROW
WHEN NEW.updated_at IS OLD.updated_at
BEGIN
    UPDATE invitations SET updated_at = strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now') WHERE rowid = NEW.rowid;
END;
CREATE TRIGGER grocery_lists_set_updated_at AFTER UPDATE ON grocery_lists FOR EACH ROW
WHEN NEW.updated_at IS OLD.updated_at
BEGIN
    UPDATE grocery_lists SET updated_at = strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now') WHERE rowid = NEW.rowid;
END;
CREATE TRIGGER doc_snapshots_set_updated_at AFTER UPDATE ON doc_snapshots FOR EACH ROW
WHEN NEW.updated_at IS OLD.updated_at
BEGIN
    UPDATE doc_snapshots SET updated_at = strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now') WHERE rowid = NEW.rowid;
END;
CREATE TRIGGER list_items_set_updated_at AFTER UPDATE ON list_items FOR EACH ROW
WHEN NEW.updated_at IS OLD.updated_at
BEGIN
    UPDATE list_items SET updated_at = strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now') WHERE rowid = NEW.rowid;
END;
CREATE TRIGGER vendors_set_updated_at AFTER UPDATE ON vendors FOR EACH ROW
WHEN NEW.updated_at IS OLD.updated_at
BEGIN
    UPDATE vendors SET updated_at = strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now') WHERE rowid = NEW.rowid;
END;
CREATE TRIGGER orders_set_updated_at AFTER UPDATE ON orders FOR EACH ROW
WHEN NEW.updated_at IS OLD.updated_at
BEGIN
    UPDATE orders SET updated_at = strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now') WHERE rowid = NEW.rowid;
END;
CREATE TRIGGER order_items_set_updated_at AFTER UPDATE ON order_items FOR EACH ROW
WHEN NEW.updated_at IS OLD.updated_at
BEGIN
    UPDATE order_items SET updated_at = strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now') WHERE rowid = NEW.rowid;
END;
CREATE TRIGGER vendor_shares_set_updated_at AFTER UPDATE ON vendor_shares FOR EACH ROW
WHEN NEW.updated_at IS OLD.updated_at
BEGIN
    UPDATE vendor_shares SET updated_at = strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now') WHERE rowid = NEW.rowid;
END;
CREATE TRIGGER share_messages_set_updated_at AFTER UPDATE ON share_messages FOR EACH ROW
WHEN NEW.updated_at IS OLD.updated_at
BEGIN
    UPDATE share_messages SET updated_at = strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now') WHERE rowid = NEW.rowid;
END;
CREATE TRIGGER outbox_jobs_set_updated_at AFTER UPDATE ON outbox_jobs FOR EACH ROW
WHEN NEW.updated_at IS OLD.updated_at
BEGIN
    UPDATE outbox_jobs SET updated_at = strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now') WHERE rowid = NEW.rowid;
END;
CREATE TRIGGER idempotency_keys_set_updated_at AFTER UPDATE ON idempotency_keys FOR EACH ROW
WHEN NEW.updated_at IS OLD.updated_at
BEGIN
    UPDATE idempotency_keys SET updated_at = strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now') WHERE rowid = NEW.rowid;
END;
CREATE TRIGGER read_only_tokens_set_updated_at AFTER UPDATE ON read_only_tokens FOR EACH ROW
WHEN NEW.updated_at IS OLD.updated_at
BEGIN
    UPDATE read_only_tokens SET updated_at = strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now') WHERE rowid = NEW.rowid;
END;
