-- Larder's relational schema, designed once for the whole product (DESIGN §7).
-- Conventions: UUID keys (v7 from the application), created_at/updated_at on
-- every table (updated_at kept by a trigger), soft deletion with deleted_at
-- where users expect recovery, foreign keys with explicit ON DELETE, checks
-- for closed value sets, an index on every foreign key and hot filter.

CREATE FUNCTION larder_set_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END;
$$;

-- Accounts --------------------------------------------------------------------

CREATE TABLE users (
    id            uuid PRIMARY KEY,
    email         text NOT NULL,
    display_name  text NOT NULL,
    password_hash text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    deleted_at    timestamptz,
    CONSTRAINT users_email_format CHECK (char_length(email) BETWEEN 3 AND 254 AND position('@' IN email) > 1),
    CONSTRAINT users_display_name_length CHECK (char_length(display_name) BETWEEN 1 AND 100)
);
-- Emails are unique case-insensitively.
CREATE UNIQUE INDEX users_email_key ON users (lower(email));

CREATE TABLE refresh_tokens (
    id          uuid PRIMARY KEY,
    user_id     uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- Every token of one login shares a chain; reuse of a rotated token
    -- revokes the whole chain.
    chain_id    uuid NOT NULL,
    token_hash  text NOT NULL,
    replaced_by uuid REFERENCES refresh_tokens (id) ON DELETE SET NULL,
    expires_at  timestamptz NOT NULL,
    revoked_at  timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT refresh_tokens_token_hash_key UNIQUE (token_hash)
);
CREATE INDEX refresh_tokens_user_id_idx ON refresh_tokens (user_id);
CREATE INDEX refresh_tokens_chain_id_idx ON refresh_tokens (chain_id);
CREATE INDEX refresh_tokens_replaced_by_idx ON refresh_tokens (replaced_by);

-- Families --------------------------------------------------------------------

CREATE TABLE families (
    id         uuid PRIMARY KEY,
    name       text NOT NULL,
    created_by uuid REFERENCES users (id) ON DELETE SET NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    deleted_at timestamptz,
    CONSTRAINT families_name_length CHECK (char_length(name) BETWEEN 1 AND 100)
);
CREATE INDEX families_created_by_idx ON families (created_by);

CREATE TABLE family_memberships (
    family_id  uuid NOT NULL REFERENCES families (id) ON DELETE CASCADE,
    user_id    uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role       text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (family_id, user_id),
    CONSTRAINT family_memberships_role CHECK (role IN ('admin', 'member'))
);
CREATE INDEX family_memberships_user_id_idx ON family_memberships (user_id);

CREATE TABLE invitations (
    id          uuid PRIMARY KEY,
    family_id   uuid NOT NULL REFERENCES families (id) ON DELETE CASCADE,
    -- Only a hash of the one-time code is stored.
    code_hash   text NOT NULL,
    role        text NOT NULL DEFAULT 'member',
    invited_by  uuid REFERENCES users (id) ON DELETE SET NULL,
    expires_at  timestamptz NOT NULL,
    accepted_by uuid REFERENCES users (id) ON DELETE SET NULL,
    accepted_at timestamptz,
    revoked_at  timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT invitations_code_hash_key UNIQUE (code_hash),
    CONSTRAINT invitations_role CHECK (role IN ('admin', 'member')),
    CONSTRAINT invitations_accepted CHECK ((accepted_by IS NULL) = (accepted_at IS NULL))
);
CREATE INDEX invitations_family_id_idx ON invitations (family_id);
CREATE INDEX invitations_invited_by_idx ON invitations (invited_by);
CREATE INDEX invitations_accepted_by_idx ON invitations (accepted_by);

-- Lists and their documents ---------------------------------------------------

CREATE TABLE grocery_lists (
    id                     uuid PRIMARY KEY,
    -- NULL only for lists opened through the sync endpoint before they were
    -- created through the API.
    family_id              uuid REFERENCES families (id) ON DELETE CASCADE,
    created_by             uuid REFERENCES users (id) ON DELETE SET NULL,
    -- Projected from the document's meta map.
    name                   text NOT NULL DEFAULT '',
    status                 text NOT NULL DEFAULT 'active',
    item_count             integer NOT NULL DEFAULT 0,
    needed_count           integer NOT NULL DEFAULT 0,
    in_cart_count          integer NOT NULL DEFAULT 0,
    purchased_count        integer NOT NULL DEFAULT 0,
    -- Highest sequence number in the update log; taken under this row's lock.
    head_seq               bigint NOT NULL DEFAULT 0,
    -- Sequence the relational projection reflects.
    projected_seq          bigint NOT NULL DEFAULT 0,
    -- Sequence the latest snapshot covers.
    snapshot_seq           bigint NOT NULL DEFAULT 0,
    -- A replica compacting this list holds the lease until then.
    compaction_lease_until timestamptz,
    created_at             timestamptz NOT NULL DEFAULT now(),
    updated_at             timestamptz NOT NULL DEFAULT now(),
    deleted_at             timestamptz,
    CONSTRAINT grocery_lists_status CHECK (status IN ('active', 'archived')),
    CONSTRAINT grocery_lists_seqs CHECK (head_seq >= 0 AND projected_seq BETWEEN 0 AND head_seq AND snapshot_seq BETWEEN 0 AND head_seq),
    CONSTRAINT grocery_lists_counts CHECK (item_count >= 0 AND needed_count >= 0 AND in_cart_count >= 0 AND purchased_count >= 0)
);
CREATE INDEX grocery_lists_family_id_idx ON grocery_lists (family_id) WHERE deleted_at IS NULL;
CREATE INDEX grocery_lists_created_by_idx ON grocery_lists (created_by);
-- Lists whose projection lags their log, for the projector's catch-up.
CREATE INDEX grocery_lists_projection_lag_idx ON grocery_lists (id) WHERE projected_seq < head_seq;

-- The update log: one row per committed batch, opaque Yjs v1 update bytes.
-- Append-only (rows are never updated, only deleted by compaction), so it has
-- no updated_at.
CREATE TABLE doc_updates (
    list_id    uuid NOT NULL REFERENCES grocery_lists (id) ON DELETE CASCADE,
    seq        bigint NOT NULL,
    update_v1  bytea NOT NULL,
    -- Replica that committed the batch.
    origin     text NOT NULL,
    user_id    uuid REFERENCES users (id) ON DELETE SET NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (list_id, seq),
    CONSTRAINT doc_updates_seq_positive CHECK (seq > 0)
);
CREATE INDEX doc_updates_user_id_idx ON doc_updates (user_id);

-- Snapshots fold the log up to a sequence into one update.
CREATE TABLE doc_snapshots (
    list_id    uuid NOT NULL REFERENCES grocery_lists (id) ON DELETE CASCADE,
    up_to_seq  bigint NOT NULL,
    state_v1   bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (list_id, up_to_seq),
    CONSTRAINT doc_snapshots_seq CHECK (up_to_seq >= 0)
);

-- Projection rows (written only by the projector) ---------------------------

CREATE TABLE list_items (
    list_id       uuid NOT NULL REFERENCES grocery_lists (id) ON DELETE CASCADE,
    item_id       uuid NOT NULL,
    name          text NOT NULL,
    quantity      text,
    status        text NOT NULL,
    category      text,
    note          text,
    -- User ids as written in the document: not foreign keys, a document may
    -- name a user who has since left.
    assignee      text,
    position      text,
    added_by      text,
    added_at      timestamptz,
    projected_seq bigint NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (list_id, item_id),
    CONSTRAINT list_items_status CHECK (status IN ('needed', 'in_cart', 'purchased'))
);
CREATE INDEX list_items_list_position_idx ON list_items (list_id, position, item_id);
CREATE INDEX list_items_list_status_idx ON list_items (list_id, status);
CREATE INDEX list_items_assignee_idx ON list_items (assignee) WHERE assignee IS NOT NULL;
CREATE INDEX list_items_name_idx ON list_items (lower(name) text_pattern_ops);

CREATE TABLE vendors (
    id              uuid PRIMARY KEY,
    family_id       uuid NOT NULL REFERENCES families (id) ON DELETE CASCADE,
    name            text NOT NULL,
    -- E.164 digits without '+', as the WhatsApp API takes them.
    whatsapp_number text NOT NULL,
    created_by      uuid REFERENCES users (id) ON DELETE SET NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    deleted_at      timestamptz,
    CONSTRAINT vendors_name_length CHECK (char_length(name) BETWEEN 1 AND 100),
    CONSTRAINT vendors_whatsapp_number_format CHECK (whatsapp_number ~ '^[1-9][0-9]{6,14}$')
);
CREATE INDEX vendors_family_id_idx ON vendors (family_id);
CREATE INDEX vendors_created_by_idx ON vendors (created_by);
CREATE UNIQUE INDEX vendors_family_number_key ON vendors (family_id, whatsapp_number) WHERE deleted_at IS NULL;

CREATE TABLE orders (
    id            uuid PRIMARY KEY,
    list_id       uuid NOT NULL REFERENCES grocery_lists (id) ON DELETE CASCADE,
    vendor_id     uuid REFERENCES vendors (id) ON DELETE SET NULL,
    status        text NOT NULL,
    placed_by     text,
    placed_at     timestamptz,
    note          text,
    projected_seq bigint NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT orders_status CHECK (status IN ('placed', 'confirmed', 'delivered', 'cancelled'))
);
CREATE INDEX orders_list_id_idx ON orders (list_id);
CREATE INDEX orders_vendor_id_idx ON orders (vendor_id);
CREATE INDEX orders_status_idx ON orders (status);

CREATE TABLE order_items (
    order_id   uuid NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    line_no    integer NOT NULL,
    -- The list item the line came from; items may be deleted later.
    item_id    uuid,
    name       text NOT NULL,
    quantity   text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (order_id, line_no),
    CONSTRAINT order_items_line_no CHECK (line_no >= 0)
);
CREATE INDEX order_items_item_id_idx ON order_items (item_id) WHERE item_id IS NOT NULL;

-- Sharing with vendors over WhatsApp ------------------------------------------

CREATE TABLE vendor_shares (
    id            uuid PRIMARY KEY,
    list_id       uuid NOT NULL REFERENCES grocery_lists (id) ON DELETE CASCADE,
    vendor_id     uuid NOT NULL REFERENCES vendors (id) ON DELETE CASCADE,
    shared_by     uuid REFERENCES users (id) ON DELETE SET NULL,
    -- Document version the snapshot was rendered from; one send per version.
    snapshot_seq  bigint NOT NULL,
    status        text NOT NULL DEFAULT 'pending',
    rendered_text text,
    error_code    integer,
    error_message text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT vendor_shares_status CHECK (status IN ('pending', 'sent', 'delivered', 'read', 'failed')),
    CONSTRAINT vendor_shares_version_key UNIQUE (list_id, vendor_id, snapshot_seq)
);
CREATE INDEX vendor_shares_vendor_id_idx ON vendor_shares (vendor_id);
CREATE INDEX vendor_shares_shared_by_idx ON vendor_shares (shared_by);

CREATE TABLE share_messages (
    id          uuid PRIMARY KEY,
    share_id    uuid NOT NULL REFERENCES vendor_shares (id) ON DELETE CASCADE,
    -- WhatsApp message id ("wamid....").
    wamid       text NOT NULL,
    kind        text NOT NULL,
    status      text NOT NULL DEFAULT 'sent',
    status_at   timestamptz,
    error_code  integer,
    error_title text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT share_messages_wamid_key UNIQUE (wamid),
    CONSTRAINT share_messages_kind CHECK (kind IN ('text', 'template')),
    CONSTRAINT share_messages_status CHECK (status IN ('sent', 'delivered', 'read', 'failed'))
);
CREATE INDEX share_messages_share_id_idx ON share_messages (share_id);

-- Background work ---------------------------------------------------------------

CREATE TABLE outbox_jobs (
    id           uuid PRIMARY KEY,
    kind         text NOT NULL,
    -- One job per (kind, subject, version): a retried enqueue is a no-op.
    dedupe_key   text NOT NULL,
    payload      jsonb NOT NULL DEFAULT '{}'::jsonb,
    status       text NOT NULL DEFAULT 'pending',
    attempts     integer NOT NULL DEFAULT 0,
    run_after    timestamptz NOT NULL DEFAULT now(),
    locked_until timestamptz,
    last_error   text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT outbox_jobs_dedupe_key UNIQUE (dedupe_key),
    CONSTRAINT outbox_jobs_status CHECK (status IN ('pending', 'running', 'done', 'failed')),
    CONSTRAINT outbox_jobs_attempts CHECK (attempts >= 0)
);
CREATE INDEX outbox_jobs_due_idx ON outbox_jobs (run_after) WHERE status IN ('pending', 'running');

CREATE TABLE idempotency_keys (
    user_id         uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    key             text NOT NULL,
    request_method  text NOT NULL,
    request_path    text NOT NULL,
    -- Hash of the request body: the same key with another body is a conflict.
    request_hash    text NOT NULL,
    response_status integer,
    response_body   jsonb,
    expires_at      timestamptz NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, key),
    CONSTRAINT idempotency_keys_key_length CHECK (char_length(key) BETWEEN 1 AND 255)
);
CREATE INDEX idempotency_keys_expires_at_idx ON idempotency_keys (expires_at);

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['users', 'refresh_tokens', 'families', 'family_memberships', 'invitations',
        'grocery_lists', 'doc_snapshots', 'list_items', 'vendors', 'orders', 'order_items',
        'vendor_shares', 'share_messages', 'outbox_jobs', 'idempotency_keys']
    LOOP
        EXECUTE format('CREATE TRIGGER %I BEFORE UPDATE ON %I FOR EACH ROW EXECUTE FUNCTION larder_set_updated_at()',
            t || '_set_updated_at', t);
    END LOOP;
END;
$$;
