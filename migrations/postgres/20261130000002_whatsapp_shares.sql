-- Vendors and WhatsApp shares: what a share froze and sent, the statuses
-- WhatsApp reported, what vendors replied, and per-number send state.

ALTER TABLE vendors ADD COLUMN notes text;
ALTER TABLE vendors ADD CONSTRAINT vendors_notes_length CHECK (char_length(notes) <= 500);

-- The frozen snapshot (JSON text: family name, version, items by category),
-- the note the family added, the vendor link, and why a pending share waits.
ALTER TABLE vendor_shares ADD COLUMN snapshot text NOT NULL DEFAULT '{}';
ALTER TABLE vendor_shares ADD COLUMN note text;
ALTER TABLE vendor_shares ADD COLUMN link_id uuid REFERENCES read_only_tokens (id) ON DELETE SET NULL;
ALTER TABLE vendor_shares ADD COLUMN page_token_hash text;
ALTER TABLE vendor_shares ADD COLUMN detail text;
CREATE UNIQUE INDEX vendor_shares_page_token_key ON vendor_shares (page_token_hash);
CREATE INDEX vendor_shares_link_id_idx ON vendor_shares (link_id);
CREATE INDEX vendor_shares_list_id_idx ON vendor_shares (list_id, id);

-- The job that sends a share. request_started_at is set just before the
-- request goes out: a job found with it set may have been sent already.
ALTER TABLE outbox_jobs ADD COLUMN share_id uuid REFERENCES vendor_shares (id) ON DELETE CASCADE;
ALTER TABLE outbox_jobs ADD COLUMN claimed_by text;
ALTER TABLE outbox_jobs ADD COLUMN request_started_at timestamptz;
CREATE INDEX outbox_jobs_share_id_idx ON outbox_jobs (share_id);

-- One row per WhatsApp number we talk to: the customer-service window its
-- messages open, and the earliest next send (pacing per recipient).
CREATE TABLE whatsapp_contacts (
    wa_number         text PRIMARY KEY,
    window_open_until timestamptz,
    next_send_at      timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);
CREATE TRIGGER whatsapp_contacts_set_updated_at BEFORE UPDATE ON whatsapp_contacts
    FOR EACH ROW EXECUTE FUNCTION larder_set_updated_at();

-- Status webhooks, once per (message, status) however often Meta retries.
CREATE TABLE whatsapp_statuses (
    wamid       text NOT NULL,
    status      text NOT NULL,
    share_id    uuid REFERENCES vendor_shares (id) ON DELETE CASCADE,
    occurred_at timestamptz NOT NULL,
    error_code  integer,
    error_title text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (wamid, status),
    CONSTRAINT whatsapp_statuses_status CHECK (status IN ('sent', 'delivered', 'read', 'failed'))
);
CREATE INDEX whatsapp_statuses_share_id_idx ON whatsapp_statuses (share_id);

-- Messages vendors sent to the business number, on their latest share.
CREATE TABLE vendor_replies (
    id          uuid PRIMARY KEY,
    wamid       text NOT NULL,
    wa_number   text NOT NULL,
    share_id    uuid REFERENCES vendor_shares (id) ON DELETE SET NULL,
    kind        text NOT NULL,
    body        text,
    sender_name text,
    received_at timestamptz NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT vendor_replies_wamid_key UNIQUE (wamid)
);
CREATE INDEX vendor_replies_share_id_idx ON vendor_replies (share_id);
CREATE INDEX vendor_replies_wa_number_idx ON vendor_replies (wa_number);
