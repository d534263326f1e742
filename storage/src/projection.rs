//! The relational projection of a list document: `grocery_lists` (name,
//! status, counts), `list_items`, `orders` and `order_items`.
//!
//! A projection is written in one transaction under the list row's lock,
//! and only if it reflects a newer sequence than the one stored
//! (`projected_seq`): projections computed by any replica, in any order,
//! leave the newest in place. Writes are incremental: rows that did not
//! change are not touched, rows that vanished from the document are deleted.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::directory::DirResult;

/// An item row to project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectedItem {
    pub item_id: Uuid,
    pub name: String,
    pub quantity: Option<String>,
    /// `needed` | `in_cart` | `purchased`.
    pub status: String,
    pub category: Option<String>,
    pub note: Option<String>,
    pub assignee: Option<String>,
    pub position: Option<String>,
    pub added_by: Option<String>,
    pub added_at: Option<DateTime<Utc>>,
}

/// A line of an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectedOrderItem {
    pub item_id: Option<Uuid>,
    pub name: String,
    pub quantity: Option<String>,
}

/// An order to project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectedOrder {
    pub order_id: Uuid,
    /// Kept only when it names a vendor of the list's family.
    pub vendor_id: Option<Uuid>,
    /// `placed` | `confirmed` | `delivered` | `cancelled`.
    pub status: String,
    pub placed_by: Option<String>,
    pub placed_at: Option<DateTime<Utc>>,
    pub note: Option<String>,
    /// Kept only when it names a share of the list.
    pub share_id: Option<Uuid>,
    pub items: Vec<ProjectedOrderItem>,
}

/// The whole projection of one list at one sequence.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Projection {
    pub name: String,
    /// `active` | `archived`.
    pub status: String,
    pub items: Vec<ProjectedItem>,
    pub orders: Vec<ProjectedOrder>,
}

/// The projection a process wrote last for a list, at `seq`: when the
/// stored projection is still that one, only what changed since is written.
#[derive(Debug, Clone, Copy)]
pub struct Previous<'a> {
    pub seq: u64,
    pub projection: &'a Projection,
}

/// The items of `after` that are new or differ from `before`, and the ids
/// of `before`'s items that `after` no longer has.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ItemChanges<'a> {
    pub upserts: Vec<&'a ProjectedItem>,
    pub removed: Vec<Uuid>,
}

pub fn item_changes<'a>(before: &Projection, after: &'a Projection) -> ItemChanges<'a> {
    let old: std::collections::HashMap<Uuid, &ProjectedItem> =
        before.items.iter().map(|i| (i.item_id, i)).collect();
    let upserts = after
        .items
        .iter()
        .filter(|i| old.get(&i.item_id) != Some(i))
        .collect();
    let kept: std::collections::HashSet<Uuid> = after.items.iter().map(|i| i.item_id).collect();
    let removed = before
        .items
        .iter()
        .map(|i| i.item_id)
        .filter(|id| !kept.contains(id))
        .collect();
    ItemChanges { upserts, removed }
}

/// What writing a projection did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Projected {
    /// Written; `orders_skipped` orders were left out because their id
    /// belongs to another list.
    Applied { orders_skipped: u32 },
    /// A projection of this or a newer sequence is in place already.
    Stale { projected_seq: u64 },
    /// The list does not exist.
    Gone,
}

/// Lag of the projection over all lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProjectionLag {
    /// Lists whose projection is behind their log.
    pub lists: i64,
    /// Sum over them of `head_seq - projected_seq`.
    pub seqs: i64,
}

/// A projected item as read back.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ItemRecord {
    pub list_id: Uuid,
    pub item_id: Uuid,
    pub name: String,
    pub quantity: Option<String>,
    pub status: String,
    pub category: Option<String>,
    pub note: Option<String>,
    pub assignee: Option<String>,
    pub position: Option<String>,
    pub added_by: Option<String>,
    pub added_at: Option<DateTime<Utc>>,
    pub projected_seq: i64,
}

/// A projected order as read back, with its lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderRecord {
    pub id: Uuid,
    pub list_id: Uuid,
    pub family_id: Option<Uuid>,
    pub vendor_id: Option<Uuid>,
    pub status: String,
    pub placed_by: Option<String>,
    pub placed_at: Option<DateTime<Utc>>,
    pub note: Option<String>,
    pub share_id: Option<Uuid>,
    pub projected_seq: i64,
    pub items: Vec<ProjectedOrderItem>,
}

#[derive(sqlx::FromRow)]
pub(crate) struct OrderHead {
    pub(crate) id: Uuid,
    pub(crate) list_id: Uuid,
    pub(crate) family_id: Option<Uuid>,
    pub(crate) vendor_id: Option<Uuid>,
    pub(crate) status: String,
    pub(crate) placed_by: Option<String>,
    pub(crate) placed_at: Option<DateTime<Utc>>,
    pub(crate) note: Option<String>,
    pub(crate) share_id: Option<Uuid>,
    pub(crate) projected_seq: i64,
}

impl OrderHead {
    /// The order with its lines.
    pub(crate) fn with_items(self, items: Vec<ProjectedOrderItem>) -> OrderRecord {
        OrderRecord {
            items,
            id: self.id,
            list_id: self.list_id,
            family_id: self.family_id,
            vendor_id: self.vendor_id,
            status: self.status,
            placed_by: self.placed_by,
            placed_at: self.placed_at,
            note: self.note,
            share_id: self.share_id,
            projected_seq: self.projected_seq,
        }
    }
}

/// Filters of a list's items; `None` matches everything.
#[derive(Debug, Clone, Default)]
pub struct ItemFilter {
    pub status: Option<String>,
    pub assignee: Option<String>,
    pub category: Option<String>,
}

/// The projection's operations, implemented by each database.
#[async_trait]
pub trait ProjectionStore: Send + Sync + std::fmt::Debug + 'static {
    /// Writes `projection` of `list_id` as of `seq`, unless a projection of
    /// `seq` or later is stored.
    async fn write(&self, list_id: Uuid, seq: u64, projection: &Projection)
    -> DirResult<Projected>;

    /// [`ProjectionStore::write`], knowing the projection this process
    /// wrote before: a database may then write only what changed, when the
    /// stored projection is still `previous`. By default, a whole write.
    async fn write_since(
        &self,
        list_id: Uuid,
        seq: u64,
        projection: &Projection,
        previous: Previous<'_>,
    ) -> DirResult<Projected> {
        let _ = previous;
        self.write(list_id, seq, projection).await
    }

    /// Lists whose projection lags their log (not deleted), at most `limit`.
    async fn lagging(&self, limit: i64) -> DirResult<Vec<Uuid>>;

    /// How far the projection lags over all lists.
    async fn lag(&self) -> DirResult<ProjectionLag>;

    /// The list's projected items, ordered by position (then id).
    async fn items(&self, list_id: Uuid, filter: &ItemFilter) -> DirResult<Vec<ItemRecord>>;

    /// Items of the family's (not deleted) lists whose name contains `q`
    /// (case-insensitively), ordered by `(list_id, item_id)` after `after`.
    async fn search_items(
        &self,
        family_id: Uuid,
        q: &str,
        after: Option<(Uuid, Uuid)>,
        limit: i64,
    ) -> DirResult<Vec<ItemRecord>>;

    /// Orders of the family's (not deleted) lists, by id after `after`.
    async fn family_orders(
        &self,
        family_id: Uuid,
        status: Option<&str>,
        after: Option<Uuid>,
        limit: i64,
    ) -> DirResult<Vec<OrderRecord>>;

    /// One order, if projected.
    async fn order(&self, id: Uuid) -> DirResult<Option<OrderRecord>>;

    /// The list's `projected_seq`, if it exists.
    async fn projected_seq(&self, list_id: Uuid) -> DirResult<Option<u64>>;

    /// Whether `vendor_id` is a (not deleted) vendor of `family_id`.
    async fn is_family_vendor(&self, family_id: Uuid, vendor_id: Uuid) -> DirResult<bool>;
}

/// The projections of whichever database the process uses; cheap to clone.
#[derive(Clone, Debug)]
pub struct Projections(Arc<dyn ProjectionStore>);

impl Projections {
    pub fn new(store: impl ProjectionStore) -> Self {
        Projections(Arc::new(store))
    }
}

impl std::ops::Deref for Projections {
    type Target = dyn ProjectionStore;

    fn deref(&self) -> &Self::Target {
        self.0.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(id: Uuid, name: &str) -> ProjectedItem {
        ProjectedItem {
            item_id: id,
            name: name.to_owned(),
            quantity: None,
            status: "needed".into(),
            category: None,
            note: None,
            assignee: None,
            position: None,
            added_by: None,
            added_at: None,
        }
    }

    #[test]
    fn only_new_changed_and_removed_items_are_named() {
        let (kept, renamed, gone, new) = (
            Uuid::new_v4(),
            Uuid::new_v4(),
            Uuid::new_v4(),
            Uuid::new_v4(),
        );
        let before = Projection {
            items: vec![item(kept, "Milk"), item(renamed, "Egg"), item(gone, "Tea")],
            ..Projection::default()
        };
        let after = Projection {
            items: vec![item(kept, "Milk"), item(renamed, "Eggs"), item(new, "Jam")],
            ..Projection::default()
        };
        let changes = item_changes(&before, &after);
        let upserted: Vec<Uuid> = changes.upserts.iter().map(|i| i.item_id).collect();
        assert_eq!(upserted, vec![renamed, new]);
        assert_eq!(changes.removed, vec![gone]);
        assert_eq!(item_changes(&after, &after), ItemChanges::default());
    }
}
