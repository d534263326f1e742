-- Vendors and WhatsApp shares (as migrations/postgres/20261130000002).

ALTER TABLE vendors ADD COLUMN notes TEXT CHECK (length(notes) <= 500);

ALTER TABLE vendor_shares ADD COLUMN snapshot TEXT NOT NULL DEFAULT '{}';
ALTER TABLE vendor_shares ADD COLUMN note TEXT;
ALTER TABLE vendor_shares ADD COLUMN link_id BLOB REFERENCES read_only_tokens (id) ON DELETE SET NULL;
ALTER TABLE vendor_shares ADD COLUMN page_token_hash TEXT;
ALTER TABLE vendor_shares ADD COLUMN detail TEXT;
CREATE UNIQUE INDEX vendor_shares_page_token_key ON vendor_shares (page_token_hash);
CREATE INDEX vendor_shares_link_id_idx ON vendor_shares (link_id);
CREATE INDEX vendor_shares_list_id_idx ON vendor_shares (list_id, id);

ALTER TABLE outbox_jobs ADD COLUMN share_id BLOB REFERENCES vendor_shares (id) ON DELETE CASCADE;
ALTER TABLE outbox_jobs ADD COLUMN claimed_by TEXT;
ALTER TABLE outbox_jobs ADD COLUMN request_started_at TEXT;
CREATE INDEX outbox_jobs_share_id_idx ON outbox_jobs (share_id);

CREATE TABLE whatsapp_contacts (
    wa_number         TEXT PRIMARY KEY NOT NULL,
    window_open_until TEXT,
    next_send_at      TEXT,
    created_at        TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')),
    updated_at        TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now'))
);

CREATE TABLE whatsapp_statuses (
    wamid       TEXT NOT NULL,
    status      TEXT NOT NULL,
    share_id    BLOB REFERENCES vendor_shares (id) ON DELETE CASCADE,
    occurred_at TEXT NOT NULL,
    error_code  INTEGER,
    error_title TEXT,
    created_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')),
    updated_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')),
    PRIMARY KEY (wamid, status),
    CONSTRAINT whatsapp_statuses_status CHECK (status IN ('sent', 'delivered', 'read', 'failed'))
);
CREATE INDEX whatsapp_statuses_share_id_idx ON whatsapp_statuses (share_id);

CREATE TABLE vendor_replies (
    id          BLOB PRIMARY KEY NOT NULL,
    wamid       TEXT NOT NULL,
    wa_number   TEXT NOT NULL,
    share_id    BLOB REFERENCES vendor_shares (id) ON DELETE SET NULL,
    kind        TEXT NOT NULL,
    body        TEXT,
    sender_name TEXT,
    received_at TEXT NOT NULL,
    created_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')),
    updated_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')),
    CONSTRAINT vendor_replies_wamid_key UNIQUE (wamid)
);
CREATE INDEX vendor_replies_share_id_idx ON vendor_replies (share_id);
CREATE INDEX vendor_replies_wa_number_idx ON vendor_replies (wa_number);

CREATE TRIGGER whatsapp_contacts_set_updated_at AFTER UPDATE ON whatsapp_contacts FOR EACH ROW
WHEN NEW.updated_at IS OLD.updated_at
BEGIN
    UPDATE whatsapp_contacts SET updated_at = strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now') WHERE rowid = NEW.rowid;
END;
CREATE TRIGGER whatsapp_statuses_set_updated_at AFTER UPDATE ON whatsapp_statuses FOR EACH ROW
WHEN NEW.updated_at IS OLD.updated_at
BEGIN
    UPDATE whatsapp_statuses SET updated_at = strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now') WHERE rowid = NEW.rowid;
END;
CREATE TRIGGER vendor_replies_set_updated_at AFTER UPDATE ON vendor_replies FOR EACH ROW
WHEN NEW.updated_at IS OLD.updated_at
BEGIN
    UPDATE vendor_replies SET updated_at = strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now') WHERE rowid = NEW.rowid;
END;
