//! [`SqliteProjections`]: the projection in SQLite, written row by row in
//! one write transaction (statements in process cost microseconds, so the
//! arrays PostgreSQL is sent at once buy nothing here).

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use futures_util::TryStreamExt;
use sqlx::{Sqlite, SqlitePool, Transaction};
use uuid::Uuid;

use super::{SqliteDb, now};
use crate::directory::DirResult;
use crate::projection::{
    ItemFilter, ItemRecord, OrderHead, OrderRecord, Projected, ProjectedItem, ProjectedOrder,
    ProjectedOrderItem, Projection, ProjectionLag, ProjectionStore,
};

/// The projection in SQLite.
#[derive(Clone, Debug)]
pub struct SqliteProjections {
    db: SqliteDb,
}

impl SqliteProjections {
    pub fn new(db: SqliteDb) -> Self {
        SqliteProjections { db }
    }
}

/// The item as stored, to leave unchanged rows untouched.
type StoredItem = (
    String,
    Option<String>,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<chrono::DateTime<chrono::Utc>>,
);

fn stored_form(i: &ProjectedItem) -> StoredItem {
    (
        i.name.clone(),
        i.quantity.clone(),
        i.status.clone(),
        i.category.clone(),
        i.note.clone(),
        i.assignee.clone(),
        i.position.clone(),
        i.added_by.clone(),
        i.added_at,
    )
}

async fn write_items(
    tx: &mut Transaction<'_, Sqlite>,
    list_id: Uuid,
    seq: i64,
    items: &[ProjectedItem],
) -> DirResult<()> {
    let rows: Vec<ItemRecord> = sqlx::query_as(
        "SELECT list_id, item_id, name, quantity, status, category, note, assignee, position, \
         added_by, added_at, projected_seq FROM list_items WHERE list_id = $1",
    )
    .bind(list_id)
    .fetch_all(&mut **tx)
    .await?;
    let stored: HashMap<Uuid, StoredItem> = rows
        .into_iter()
        .map(|r| {
            (
                r.item_id,
                (
                    r.name, r.quantity, r.status, r.category, r.note, r.assignee, r.position,
                    r.added_by, r.added_at,
                ),
            )
        })
        .collect();
    let wanted: HashSet<Uuid> = items.iter().map(|i| i.item_id).collect();
    for id in stored.keys().filter(|id| !wanted.contains(id)) {
        sqlx::query("DELETE FROM list_items WHERE list_id = $1 AND item_id = $2")
            .bind(list_id)
            .bind(id)
            .execute(&mut **tx)
            .await?;
    }
    let now = now();
    for item in items {
        if stored.get(&item.item_id) == Some(&stored_form(item)) {
            continue;
        }
        sqlx::query(
            "INSERT INTO list_items (list_id, item_id, name, quantity, status, category, note, assignee, \
                 position, added_by, added_at, projected_seq, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $13) \
             ON CONFLICT (list_id, item_id) DO UPDATE SET name = excluded.name, quantity = excluded.quantity, \
                 status = excluded.status, category = excluded.category, note = excluded.note, \
                 assignee = excluded.assignee, position = excluded.position, added_by = excluded.added_by, \
                 added_at = excluded.added_at, projected_seq = excluded.projected_seq, updated_at = $13",
        )
        .bind(list_id)
        .bind(item.item_id)
        .bind(&item.name)
        .bind(&item.quantity)
        .bind(&item.status)
        .bind(&item.category)
        .bind(&item.note)
        .bind(&item.assignee)
        .bind(&item.position)
        .bind(&item.added_by)
        .bind(item.added_at)
        .bind(seq)
        .bind(now)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// Writes the orders this list owns; returns how many it owns.
async fn write_orders(
    tx: &mut Transaction<'_, Sqlite>,
    list_id: Uuid,
    family_id: Option<Uuid>,
    seq: i64,
    orders: &[ProjectedOrder],
) -> DirResult<usize> {
    let mut owned: Vec<&ProjectedOrder> = Vec::with_capacity(orders.len());
    for order in orders {
        // An id held by another list's order is not ours to touch.
        let holder: Option<(Uuid,)> = sqlx::query_as("SELECT list_id FROM orders WHERE id = $1")
            .bind(order.order_id)
            .fetch_optional(&mut **tx)
            .await?;
        if holder.is_none_or(|(holder,)| holder == list_id) {
            owned.push(order);
        }
    }
    let kept: HashSet<Uuid> = owned.iter().map(|o| o.order_id).collect();
    let existing: Vec<(Uuid,)> = sqlx::query_as("SELECT id FROM orders WHERE list_id = $1")
        .bind(list_id)
        .fetch_all(&mut **tx)
        .await?;
    for (id,) in existing.into_iter().filter(|(id,)| !kept.contains(id)) {
        sqlx::query("DELETE FROM orders WHERE id = $1")
            .bind(id)
            .execute(&mut **tx)
            .await?;
    }
    let now = now();
    for order in &owned {
        // A vendor id that names no vendor of the family is dropped.
        let vendor = match (order.vendor_id, family_id) {
            (Some(vendor), Some(family)) => {
                let known: Option<(i64,)> =
                    sqlx::query_as("SELECT 1 FROM vendors WHERE id = $1 AND family_id = $2")
                        .bind(vendor)
                        .bind(family)
                        .fetch_optional(&mut **tx)
                        .await?;
                known.map(|_| vendor)
            }
            _ => None,
        };
        // So is a share id that names no share of this list.
        let share = match order.share_id {
            Some(share) => {
                let known: Option<(i64,)> =
                    sqlx::query_as("SELECT 1 FROM vendor_shares WHERE id = $1 AND list_id = $2")
                        .bind(share)
                        .bind(list_id)
                        .fetch_optional(&mut **tx)
                        .await?;
                known.map(|_| share)
            }
            None => None,
        };
        sqlx::query(
            "INSERT INTO orders (id, list_id, vendor_id, status, placed_by, placed_at, note, projected_seq, \
                 created_at, updated_at, share_id) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9, $10) \
             ON CONFLICT (id) DO UPDATE SET vendor_id = excluded.vendor_id, status = excluded.status, \
                 placed_by = excluded.placed_by, placed_at = excluded.placed_at, note = excluded.note, \
                 share_id = excluded.share_id, projected_seq = excluded.projected_seq, updated_at = $9 \
             WHERE (orders.vendor_id, orders.status, orders.placed_by, orders.placed_at, orders.note, \
                 orders.share_id) IS NOT (excluded.vendor_id, excluded.status, excluded.placed_by, \
                 excluded.placed_at, excluded.note, excluded.share_id)",
        )
        .bind(order.order_id)
        .bind(list_id)
        .bind(vendor)
        .bind(&order.status)
        .bind(&order.placed_by)
        .bind(order.placed_at)
        .bind(&order.note)
        .bind(seq)
        .bind(now)
        .bind(share)
        .execute(&mut **tx)
        .await?;
        let lines: Vec<(Option<Uuid>, String, Option<String>)> = sqlx::query_as(
            "SELECT item_id, name, quantity FROM order_items WHERE order_id = $1 ORDER BY line_no",
        )
        .bind(order.order_id)
        .fetch_all(&mut **tx)
        .await?;
        let lines: Vec<ProjectedOrderItem> = lines
            .into_iter()
            .map(|(item_id, name, quantity)| ProjectedOrderItem {
                item_id,
                name,
                quantity,
            })
            .collect();
        // Only orders whose lines changed are rewritten.
        if lines == order.items {
            continue;
        }
        sqlx::query("DELETE FROM order_items WHERE order_id = $1")
            .bind(order.order_id)
            .execute(&mut **tx)
            .await?;
        for (n, line) in order.items.iter().enumerate() {
            sqlx::query(
                "INSERT INTO order_items (order_id, line_no, item_id, name, quantity, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $6)",
            )
            .bind(order.order_id)
            .bind(i64::try_from(n).unwrap_or(i64::MAX))
            .bind(line.item_id)
            .bind(&line.name)
            .bind(&line.quantity)
            .bind(now)
            .execute(&mut **tx)
            .await?;
        }
    }
    Ok(owned.len())
}

#[async_trait]
impl ProjectionStore for SqliteProjections {
    async fn write(
        &self,
        list_id: Uuid,
        seq: u64,
        projection: &Projection,
    ) -> DirResult<Projected> {
        let seq = i64::try_from(seq).unwrap_or(i64::MAX);
        let mut tx = self.db.write().await?;
        let row: Option<(i64, i64, Option<Uuid>)> = sqlx::query_as(
            "SELECT projected_seq, head_seq, family_id FROM grocery_lists WHERE id = $1",
        )
        .bind(list_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((projected_seq, head_seq, family_id)) = row else {
            return Ok(Projected::Gone);
        };
        if projected_seq >= seq {
            return Ok(Projected::Stale {
                projected_seq: u64::try_from(projected_seq).unwrap_or(0),
            });
        }
        let seq = seq.min(head_seq);
        let items = &projection.items;
        write_items(&mut tx, list_id, seq, items).await?;
        let owned = write_orders(&mut tx, list_id, family_id, seq, &projection.orders).await?;
        let count = |status: &str| items.iter().filter(|i| i.status == status).count() as i64;
        sqlx::query(
            "UPDATE grocery_lists SET name = $2, status = $3, item_count = $4, needed_count = $5, \
                 in_cart_count = $6, purchased_count = $7, projected_seq = $8 WHERE id = $1",
        )
        .bind(list_id)
        .bind(&projection.name)
        .bind(&projection.status)
        .bind(items.len() as i64)
        .bind(count("needed"))
        .bind(count("in_cart"))
        .bind(count("purchased"))
        .bind(seq)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        let skipped = projection.orders.len() - owned;
        Ok(Projected::Applied {
            orders_skipped: u32::try_from(skipped).unwrap_or(u32::MAX),
        })
    }

    async fn lagging(&self, limit: i64) -> DirResult<Vec<Uuid>> {
        let rows: Vec<(Uuid,)> = sqlx::query_as(
            "SELECT id FROM grocery_lists WHERE projected_seq < head_seq AND deleted_at IS NULL \
             AND family_id IS NOT NULL LIMIT $1",
        )
        .bind(limit)
        .fetch_all(self.db.readers())
        .await?;
        Ok(rows.into_iter().map(|(id,)| id).collect())
    }

    async fn lag(&self) -> DirResult<ProjectionLag> {
        let (lists, seqs): (i64, i64) = sqlx::query_as(
            "SELECT count(*), coalesce(sum(head_seq - projected_seq), 0) FROM grocery_lists \
             WHERE projected_seq < head_seq AND deleted_at IS NULL AND family_id IS NOT NULL",
        )
        .fetch_one(self.db.readers())
        .await?;
        Ok(ProjectionLag { lists, seqs })
    }

    async fn items(&self, list_id: Uuid, filter: &ItemFilter) -> DirResult<Vec<ItemRecord>> {
        // BINARY collation orders positions as ASCII, NULLs first.
        sqlx::query_as::<_, ItemRecord>(
            "SELECT list_id, item_id, name, quantity, status, category, note, assignee, \
             position, added_by, added_at, projected_seq FROM list_items WHERE list_id = $1 \
             AND ($2 IS NULL OR status = $2) AND ($3 IS NULL OR assignee = $3) \
             AND ($4 IS NULL OR category = $4) \
             ORDER BY position, item_id",
        )
        .bind(list_id)
        .bind(&filter.status)
        .bind(&filter.assignee)
        .bind(&filter.category)
        .fetch_all(self.db.readers())
        .await
    }

    async fn search_items(
        &self,
        family_id: Uuid,
        q: &str,
        after: Option<(Uuid, Uuid)>,
        limit: i64,
    ) -> DirResult<Vec<ItemRecord>> {
        // SQLite's lower() and LIKE fold ASCII only ("Äpfel" would not
        // match "äpfel"), so names are compared here, folded as Rust folds
        // the query: the family's items stream in key order and the scan
        // stops at `limit` matches.
        let needle = q.to_lowercase();
        let limit = usize::try_from(limit).unwrap_or(0);
        let (after_list, after_item) = after.unzip();
        let mut rows = sqlx::query_as::<_, ItemRecord>(
            "SELECT i.list_id, i.item_id, i.name, i.quantity, i.status, i.category, i.note, \
                 i.assignee, i.position, i.added_by, i.added_at, i.projected_seq \
             FROM list_items i JOIN grocery_lists l ON l.id = i.list_id \
             WHERE l.family_id = $1 AND l.deleted_at IS NULL \
             AND ($2 IS NULL OR (i.list_id, i.item_id) > ($2, $3)) \
             ORDER BY i.list_id, i.item_id",
        )
        .bind(family_id)
        .bind(after_list)
        .bind(after_item)
        .fetch(self.db.readers());
        let mut found = Vec::new();
        while found.len() < limit {
            let Some(item) = rows.try_next().await? else {
                break;
            };
            if item.name.to_lowercase().contains(&needle) {
                found.push(item);
            }
        }
        Ok(found)
    }

    async fn family_orders(
        &self,
        family_id: Uuid,
        status: Option<&str>,
        after: Option<Uuid>,
        limit: i64,
    ) -> DirResult<Vec<OrderRecord>> {
        let heads = sqlx::query_as::<_, OrderHead>(
            "SELECT o.id, o.list_id, l.family_id, o.vendor_id, o.status, o.placed_by, o.placed_at, \
                 o.note, o.share_id, o.projected_seq FROM orders o JOIN grocery_lists l ON l.id = o.list_id \
             WHERE l.family_id = $1 AND l.deleted_at IS NULL AND ($2 IS NULL OR o.status = $2) \
             AND ($3 IS NULL OR o.id > $3) ORDER BY o.id LIMIT $4",
        )
        .bind(family_id)
        .bind(status)
        .bind(after)
        .bind(limit)
        .fetch_all(self.db.readers())
        .await?;
        with_lines(self.db.readers(), heads).await
    }

    async fn order(&self, id: Uuid) -> DirResult<Option<OrderRecord>> {
        let heads = sqlx::query_as::<_, OrderHead>(
            "SELECT o.id, o.list_id, l.family_id, o.vendor_id, o.status, o.placed_by, o.placed_at, \
                 o.note, o.share_id, o.projected_seq FROM orders o JOIN grocery_lists l ON l.id = o.list_id \
             WHERE o.id = $1",
        )
        .bind(id)
        .fetch_all(self.db.readers())
        .await?;
        Ok(with_lines(self.db.readers(), heads).await?.pop())
    }

    async fn projected_seq(&self, list_id: Uuid) -> DirResult<Option<u64>> {
        let row: Option<(i64,)> =
            sqlx::query_as("SELECT projected_seq FROM grocery_lists WHERE id = $1")
                .bind(list_id)
                .fetch_optional(self.db.readers())
                .await?;
        Ok(row.map(|(seq,)| u64::try_from(seq).unwrap_or(0)))
    }

    async fn is_family_vendor(&self, family_id: Uuid, vendor_id: Uuid) -> DirResult<bool> {
        let row: Option<(i64,)> = sqlx::query_as(
            "SELECT 1 FROM vendors WHERE id = $1 AND family_id = $2 AND deleted_at IS NULL",
        )
        .bind(vendor_id)
        .bind(family_id)
        .fetch_optional(self.db.readers())
        .await?;
        Ok(row.is_some())
    }
}

async fn with_lines(pool: &SqlitePool, heads: Vec<OrderHead>) -> DirResult<Vec<OrderRecord>> {
    let mut conn = pool.acquire().await?;
    let mut records = Vec::with_capacity(heads.len());
    for h in heads {
        let lines: Vec<(Option<Uuid>, String, Option<String>)> = sqlx::query_as(
            "SELECT item_id, name, quantity FROM order_items WHERE order_id = $1 ORDER BY line_no",
        )
        .bind(h.id)
        .fetch_all(&mut *conn)
        .await?;
        records.push(
            h.with_items(
                lines
                    .into_iter()
                    .map(|(item_id, name, quantity)| ProjectedOrderItem {
                        item_id,
                        name,
                        quantity,
                    })
                    .collect(),
            ),
        );
    }
    Ok(records)
}
