//! A list's snapshot as rows: what PostgreSQL and SQLite can store of it.

use chrono::{DateTime, Utc};
use larder_crdt::ListSnapshot;
use larder_storage::projection::{ProjectedItem, ProjectedOrder, ProjectedOrderItem, Projection};
use uuid::Uuid;

/// Counts what a projection leaves out.
struct Skips(u32);

impl Skips {
    /// A timestamp PostgreSQL can store (years 1 to 9999), else nothing.
    fn millis(&mut self, ms: Option<i64>) -> Option<DateTime<Utc>> {
        let ms = ms?;
        let at = DateTime::from_timestamp_millis(ms).filter(|at| {
            use chrono::Datelike;
            (1..=9999).contains(&at.year())
        });
        if at.is_none() {
            self.0 += 1;
        }
        at
    }

    /// Text PostgreSQL can store (no NUL), else nothing.
    fn text(&mut self, value: &Option<String>) -> Option<String> {
        match value {
            Some(v) if v.contains('\0') => {
                self.0 += 1;
                None
            }
            other => other.clone(),
        }
    }

    /// An id in canonical form (lower-case, hyphenated), so two keys of a
    /// document can never name one row.
    fn id(&mut self, text: &str) -> Option<Uuid> {
        let id = Uuid::parse_str(text)
            .ok()
            .filter(|id| id.hyphenated().to_string() == text);
        if id.is_none() {
            self.0 += 1;
        }
        id
    }

    fn optional_id(&mut self, text: &Option<String>) -> Option<Uuid> {
        text.as_deref().and_then(|t| self.id(t))
    }
}

/// The rows of a snapshot, and how much of the document was left out
/// (counted by larder-crdt, plus what PostgreSQL could not store: ids not in
/// canonical UUID form, text with NUL, dates out of range).
pub fn to_projection(snapshot: &ListSnapshot) -> (Projection, u32) {
    let mut skips =
        Skips(snapshot.skipped.items + snapshot.skipped.orders + snapshot.skipped.fields);
    let mut items = Vec::with_capacity(snapshot.items.len());
    for item in &snapshot.items {
        let Some(item_id) = skips.id(&item.id) else {
            continue;
        };
        let Some(name) = skips.text(&Some(item.name.clone())) else {
            continue;
        };
        items.push(ProjectedItem {
            item_id,
            name,
            quantity: skips.text(&item.quantity),
            status: item.status.as_str().to_owned(),
            category: skips.text(&item.category),
            note: skips.text(&item.note),
            assignee: skips.text(&item.assignee),
            position: skips.text(&item.position),
            added_by: skips.text(&item.added_by),
            added_at: skips.millis(item.added_at_ms),
        });
    }
    let mut orders = Vec::with_capacity(snapshot.orders.len());
    for order in &snapshot.orders {
        let Some(order_id) = skips.id(&order.id) else {
            continue;
        };
        let mut lines = Vec::with_capacity(order.items.len());
        for line in &order.items {
            let Some(name) = skips.text(&Some(line.name.clone())) else {
                continue;
            };
            lines.push(ProjectedOrderItem {
                item_id: skips.optional_id(&line.item_id),
                name,
                quantity: skips.text(&line.quantity),
            });
        }
        orders.push(ProjectedOrder {
            order_id,
            vendor_id: skips.optional_id(&order.vendor_id),
            status: order.status.as_str().to_owned(),
            placed_by: skips.text(&order.placed_by),
            placed_at: skips.millis(order.placed_at_ms),
            note: skips.text(&order.note),
            share_id: skips.optional_id(&order.share_id),
            items: lines,
        });
    }
    let projection = Projection {
        name: skips.text(&snapshot.meta.name).unwrap_or_default(),
        status: snapshot
            .meta
            .status
            .unwrap_or(larder_crdt::ListStatus::Active)
            .as_str()
            .to_owned(),
        items,
        orders,
    };
    (projection, skips.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use larder_crdt::list::{ItemRow, ListMeta, OrderRow};
    use larder_crdt::{ItemStatus, OrderStatus};

    fn item(id: &str, name: &str) -> ItemRow {
        ItemRow {
            id: id.to_owned(),
            name: name.to_owned(),
            quantity: None,
            status: ItemStatus::Needed,
            category: None,
            note: Some("ok".into()),
            assignee: None,
            position: None,
            added_by: None,
            added_at_ms: Some(-1_000_000_000_000_000),
        }
    }

    #[test]
    fn what_postgresql_cannot_store_is_left_out_and_counted() {
        let id = Uuid::new_v4().to_string();
        let upper = Uuid::new_v4().to_string().to_uppercase();
        let snapshot = ListSnapshot {
            meta: ListMeta {
                name: Some("Weekly".into()),
                ..ListMeta::default()
            },
            items: vec![
                item(&id, "Milk"),
                item(&upper, "Shouting"),
                item(&Uuid::new_v4().to_string(), "nul\0name"),
            ],
            orders: vec![OrderRow {
                id: format!("{{{}}}", Uuid::new_v4()),
                vendor_id: None,
                status: OrderStatus::Placed,
                items: vec![],
                placed_by: None,
                placed_at_ms: None,
                note: None,
                share_id: None,
            }],
            skipped: Default::default(),
        };
        let (projection, skipped) = to_projection(&snapshot);
        assert_eq!(
            projection.items.len(),
            1,
            "only the canonical, storable item"
        );
        assert_eq!(
            projection.items[0].added_at, None,
            "a date out of range is dropped"
        );
        assert_eq!(projection.items[0].note.as_deref(), Some("ok"));
        assert!(
            projection.orders.is_empty(),
            "a braced order id is not canonical"
        );
        // Upper-case id, NUL name, braced order id, the out-of-range date.
        assert_eq!(skipped, 4);
    }
}
