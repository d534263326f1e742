//! The tables an export holds, their columns and the kind of each: the
//! same for both schemas (a test holds both to this list).

/// The kind of a column, which says how it is read, written and bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Uuid,
    Text,
    /// PostgreSQL `integer`.
    Int,
    /// PostgreSQL `bigint`.
    BigInt,
    Time,
    Bytes,
    Json,
}

use Kind::{BigInt, Bytes, Int, Json, Text, Time};

/// A table and its columns, in an order where every foreign key points to
/// a table written before it.
#[derive(Debug)]
pub struct Table {
    pub name: &'static str,
    pub columns: &'static [(&'static str, Kind)],
    /// `ORDER BY` of the export: rows a row of the same table refers to
    /// come first.
    pub order: &'static str,
}

const U: Kind = Kind::Uuid;

/// Every table of the schema.
pub const TABLES: &[Table] = &[
    Table {
        name: "users",
        columns: &[
            ("id", U),
            ("email", Text),
            ("display_name", Text),
            ("password_hash", Text),
            ("created_at", Time),
            ("updated_at", Time),
            ("deleted_at", Time),
        ],
        order: "id",
    },
    Table {
        name: "refresh_tokens",
        // A token points to its successor, which is newer (ids are UUIDv7).
        columns: &[
            ("id", U),
            ("user_id", U),
            ("chain_id", U),
            ("token_hash", Text),
            ("replaced_by", U),
            ("expires_at", Time),
            ("revoked_at", Time),
            ("created_at", Time),
            ("updated_at", Time),
        ],
        order: "id DESC",
    },
    Table {
        name: "families",
        columns: &[
            ("id", U),
            ("name", Text),
            ("created_by", U),
            ("created_at", Time),
            ("updated_at", Time),
            ("deleted_at", Time),
        ],
        order: "id",
    },
    Table {
        name: "family_memberships",
        columns: &[
            ("family_id", U),
            ("user_id", U),
            ("role", Text),
            ("created_at", Time),
            ("updated_at", Time),
        ],
        order: "family_id, user_id",
    },
    Table {
        name: "invitations",
        columns: &[
            ("id", U),
            ("family_id", U),
            ("code_hash", Text),
            ("role", Text),
            ("invited_by", U),
            ("expires_at", Time),
            ("accepted_by", U),
            ("accepted_at", Time),
            ("revoked_at", Time),
            ("created_at", Time),
            ("updated_at", Time),
        ],
        order: "id",
    },
    Table {
        name: "grocery_lists",
        columns: &[
            ("id", U),
            ("family_id", U),
            ("created_by", U),
            ("name", Text),
            ("status", Text),
            ("item_count", Int),
            ("needed_count", Int),
            ("in_cart_count", Int),
            ("purchased_count", Int),
            ("head_seq", BigInt),
            ("projected_seq", BigInt),
            ("snapshot_seq", BigInt),
            ("compaction_lease_until", Time),
            ("created_at", Time),
            ("updated_at", Time),
            ("deleted_at", Time),
        ],
        order: "id",
    },
    Table {
        name: "doc_snapshots",
        columns: &[
            ("list_id", U),
            ("up_to_seq", BigInt),
            ("state_v1", Bytes),
            ("created_at", Time),
            ("updated_at", Time),
        ],
        order: "list_id, up_to_seq",
    },
    Table {
        name: "doc_updates",
        columns: &[
            ("list_id", U),
            ("seq", BigInt),
            ("update_v1", Bytes),
            ("origin", Text),
            ("user_id", U),
            ("created_at", Time),
        ],
        order: "list_id, seq",
    },
    Table {
        name: "vendors",
        columns: &[
            ("id", U),
            ("family_id", U),
            ("name", Text),
            ("whatsapp_number", Text),
            ("created_by", U),
            ("created_at", Time),
            ("updated_at", Time),
            ("deleted_at", Time),
        ],
        order: "id",
    },
    Table {
        name: "list_items",
        columns: &[
            ("list_id", U),
            ("item_id", U),
            ("name", Text),
            ("quantity", Text),
            ("status", Text),
            ("category", Text),
            ("note", Text),
            ("assignee", Text),
            ("position", Text),
            ("added_by", Text),
            ("added_at", Time),
            ("projected_seq", BigInt),
            ("created_at", Time),
            ("updated_at", Time),
        ],
        order: "list_id, item_id",
    },
    Table {
        name: "orders",
        columns: &[
            ("id", U),
            ("list_id", U),
            ("vendor_id", U),
            ("status", Text),
            ("placed_by", Text),
            ("placed_at", Time),
            ("note", Text),
            ("projected_seq", BigInt),
            ("created_at", Time),
            ("updated_at", Time),
        ],
        order: "id",
    },
    Table {
        name: "order_items",
        columns: &[
            ("order_id", U),
            ("line_no", Int),
            ("item_id", U),
            ("name", Text),
            ("quantity", Text),
            ("created_at", Time),
            ("updated_at", Time),
        ],
        order: "order_id, line_no",
    },
    Table {
        name: "vendor_shares",
        columns: &[
            ("id", U),
            ("list_id", U),
            ("vendor_id", U),
            ("shared_by", U),
            ("snapshot_seq", BigInt),
            ("status", Text),
            ("rendered_text", Text),
            ("error_code", Int),
            ("error_message", Text),
            ("created_at", Time),
            ("updated_at", Time),
        ],
        order: "id",
    },
    Table {
        name: "share_messages",
        columns: &[
            ("id", U),
            ("share_id", U),
            ("wamid", Text),
            ("kind", Text),
            ("status", Text),
            ("status_at", Time),
            ("error_code", Int),
            ("error_title", Text),
            ("created_at", Time),
            ("updated_at", Time),
        ],
        order: "id",
    },
    Table {
        name: "outbox_jobs",
        columns: &[
            ("id", U),
            ("kind", Text),
            ("dedupe_key", Text),
            ("payload", Json),
            ("status", Text),
            ("attempts", Int),
            ("run_after", Time),
            ("locked_until", Time),
            ("last_error", Text),
            ("created_at", Time),
            ("updated_at", Time),
        ],
        order: "id",
    },
    Table {
        name: "idempotency_keys",
        columns: &[
            ("user_id", U),
            ("key", Text),
            ("request_method", Text),
            ("request_path", Text),
            ("request_hash", Text),
            ("response_status", Int),
            ("response_body", Json),
            ("expires_at", Time),
            ("created_at", Time),
            ("updated_at", Time),
        ],
        order: "user_id, key",
    },
    Table {
        name: "read_only_tokens",
        columns: &[
            ("id", U),
            ("list_id", U),
            ("created_by", U),
            ("expires_at", Time),
            ("revoked_at", Time),
            ("created_at", Time),
            ("updated_at", Time),
        ],
        order: "id",
    },
];
