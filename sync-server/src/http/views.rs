//! Response shapes shown by more than one resource.

use chrono::{DateTime, Utc};
use larder_crdt::list::ItemRow;
use larder_storage::directory::{Family, ListRow};
use larder_storage::projection::ItemRecord;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// A role in a family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Admin,
    Member,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Member => "member",
        }
    }
    pub fn parse(text: &str) -> Role {
        if text == "admin" {
            Role::Admin
        } else {
            Role::Member
        }
    }
}

/// A family, with the caller's role in it.
#[derive(Debug, Serialize, ToSchema)]
pub struct FamilyView {
    pub id: Uuid,
    pub name: String,
    pub role: Role,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<Family> for FamilyView {
    fn from(f: Family) -> Self {
        FamilyView {
            id: f.id,
            name: f.name,
            role: Role::parse(&f.role),
            created_at: f.created_at,
            updated_at: f.updated_at,
        }
    }
}

/// A list as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ListView {
    pub id: Uuid,
    pub family_id: Uuid,
    pub name: String,
    #[schema(value_type = String, example = "active")]
    pub status: String,
    pub item_count: i32,
    pub needed_count: i32,
    pub in_cart_count: i32,
    pub purchased_count: i32,
    /// Highest sequence number in the list's update log.
    pub head_seq: i64,
    /// Sequence the relational rows reflect.
    pub projected_seq: i64,
    pub created_by: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Set while the list is deleted (it can be restored).
    pub deleted_at: Option<DateTime<Utc>>,
}

impl From<ListRow> for ListView {
    fn from(r: ListRow) -> Self {
        ListView {
            id: r.id,
            family_id: r.family_id,
            name: r.name,
            status: r.status,
            item_count: r.item_count,
            needed_count: r.needed_count,
            in_cart_count: r.in_cart_count,
            purchased_count: r.purchased_count,
            head_seq: r.head_seq,
            projected_seq: r.projected_seq,
            created_by: r.created_by,
            created_at: r.created_at,
            updated_at: r.updated_at,
            deleted_at: r.deleted_at,
        }
    }
}

/// An item.
#[derive(Debug, Serialize, ToSchema)]
pub struct ItemView {
    pub id: Uuid,
    pub name: String,
    pub quantity: Option<String>,
    #[schema(example = "needed")]
    pub status: String,
    pub category: Option<String>,
    pub note: Option<String>,
    pub assignee: Option<String>,
    /// Fractional index: items sort by it.
    pub position: Option<String>,
    pub added_by: Option<String>,
    pub added_at: Option<DateTime<Utc>>,
}

impl ItemView {
    pub fn from_doc(row: &ItemRow) -> Option<ItemView> {
        Some(ItemView {
            id: Uuid::parse_str(&row.id).ok()?,
            name: row.name.clone(),
            quantity: row.quantity.clone(),
            status: row.status.as_str().to_owned(),
            category: row.category.clone(),
            note: row.note.clone(),
            assignee: row.assignee.clone(),
            position: row.position.clone(),
            added_by: row.added_by.clone(),
            added_at: row.added_at_ms.and_then(DateTime::from_timestamp_millis),
        })
    }
}

impl From<ItemRecord> for ItemView {
    fn from(r: ItemRecord) -> Self {
        ItemView {
            id: r.item_id,
            name: r.name,
            quantity: r.quantity,
            status: r.status,
            category: r.category,
            note: r.note,
            assignee: r.assignee,
            position: r.position,
            added_by: r.added_by,
            added_at: r.added_at,
        }
    }
}
