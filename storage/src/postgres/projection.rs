//! [`PgProjections`]: the projection in PostgreSQL, written with one
//! statement per table (`UNNEST` of arrays) under the list row's lock.

use async_trait::async_trait;
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::directory::DirResult;
use crate::projection::{
    ItemFilter, ItemRecord, OrderHead, OrderRecord, Previous, Projected, ProjectedItem,
    ProjectedOrder, ProjectedOrderItem, Projection, ProjectionLag, ProjectionStore, item_changes,
};

/// The projection in PostgreSQL.
#[derive(Clone, Debug)]
pub struct PgProjections {
    pool: PgPool,
}

impl PgProjections {
    pub fn new(pool: PgPool) -> Self {
        PgProjections { pool }
    }
}

impl PgProjections {
    /// Writes `projection` under the list row's lock; with `previous` (the
    /// projection this process wrote last, if it is still the stored one)
    /// only the items that changed since, and the orders only if they did.
    async fn write_with(
        &self,
        list_id: Uuid,
        seq: u64,
        projection: &Projection,
        previous: Option<Previous<'_>>,
    ) -> DirResult<Projected> {
        let seq = i64::try_from(seq).unwrap_or(i64::MAX);
        let mut tx = self.pool.begin().await?;
        let row: Option<(i64, i64, Option<Uuid>)> = sqlx::query_as(
            "SELECT projected_seq, head_seq, family_id FROM grocery_lists WHERE id = $1 FOR UPDATE",
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
        // The rows are what `previous` says only if nobody wrote since.
        let previous = previous.filter(|p| i64::try_from(p.seq) == Ok(projected_seq));
        let items = &projection.items;
        match previous {
            Some(p) => {
                let changes = item_changes(p.projection, projection);
                if !changes.removed.is_empty() {
                    sqlx::query("DELETE FROM list_items WHERE list_id = $1 AND item_id = ANY($2)")
                        .bind(list_id)
                        .bind(&changes.removed)
                        .execute(&mut *tx)
                        .await?;
                }
                if !changes.upserts.is_empty() {
                    upsert_items(&mut tx, list_id, seq, &changes.upserts).await?;
                }
            }
            None => {
                let ids: Vec<Uuid> = items.iter().map(|i| i.item_id).collect();
                sqlx::query(
                    "DELETE FROM list_items WHERE list_id = $1 AND NOT (item_id = ANY($2))",
                )
                .bind(list_id)
                .bind(&ids)
                .execute(&mut *tx)
                .await?;
                let all: Vec<&ProjectedItem> = items.iter().collect();
                upsert_items(&mut tx, list_id, seq, &all).await?;
            }
        }
        let orders_skipped = if previous.is_some_and(|p| p.projection.orders == projection.orders) {
            0
        } else {
            write_orders(&mut tx, list_id, family_id, seq, &projection.orders).await?
        };
        let count = |status: &str| items.iter().filter(|i| i.status == status).count() as i32;
        sqlx::query(
            "UPDATE grocery_lists SET name = $2, status = $3, item_count = $4, needed_count = $5, \
                 in_cart_count = $6, purchased_count = $7, projected_seq = $8 WHERE id = $1",
        )
        .bind(list_id)
        .bind(&projection.name)
        .bind(&projection.status)
        .bind(items.len() as i32)
        .bind(count("needed"))
        .bind(count("in_cart"))
        .bind(count("purchased"))
        .bind(seq)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Projected::Applied {
            orders_skipped: u32::try_from(orders_skipped).unwrap_or(u32::MAX),
        })
    }
}

/// Inserts `items`, or updates the stored rows that differ.
async fn upsert_items(
    tx: &mut Transaction<'_, Postgres>,
    list_id: Uuid,
    seq: i64,
    items: &[&ProjectedItem],
) -> DirResult<()> {
    let ids: Vec<Uuid> = items.iter().map(|i| i.item_id).collect();
    sqlx::query(
        "INSERT INTO list_items (list_id, item_id, name, quantity, status, category, note, assignee, \
             position, added_by, added_at, projected_seq) \
         SELECT $1, * , $12 FROM UNNEST($2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[], \
             $7::text[], $8::text[], $9::text[], $10::text[], $11::timestamptz[]) \
         ON CONFLICT (list_id, item_id) DO UPDATE SET name = EXCLUDED.name, quantity = EXCLUDED.quantity, \
             status = EXCLUDED.status, category = EXCLUDED.category, note = EXCLUDED.note, \
             assignee = EXCLUDED.assignee, position = EXCLUDED.position, added_by = EXCLUDED.added_by, \
             added_at = EXCLUDED.added_at, projected_seq = EXCLUDED.projected_seq \
         WHERE (list_items.name, list_items.quantity, list_items.status, list_items.category, \
             list_items.note, list_items.assignee, list_items.position, list_items.added_by, \
             list_items.added_at) IS DISTINCT FROM (EXCLUDED.name, EXCLUDED.quantity, EXCLUDED.status, \
             EXCLUDED.category, EXCLUDED.note, EXCLUDED.assignee, EXCLUDED.position, \
             EXCLUDED.added_by, EXCLUDED.added_at)",
    )
    .bind(list_id)
    .bind(&ids)
    .bind(items.iter().map(|i| i.name.clone()).collect::<Vec<_>>())
    .bind(items.iter().map(|i| i.quantity.clone()).collect::<Vec<_>>())
    .bind(items.iter().map(|i| i.status.clone()).collect::<Vec<_>>())
    .bind(items.iter().map(|i| i.category.clone()).collect::<Vec<_>>())
    .bind(items.iter().map(|i| i.note.clone()).collect::<Vec<_>>())
    .bind(items.iter().map(|i| i.assignee.clone()).collect::<Vec<_>>())
    .bind(items.iter().map(|i| i.position.clone()).collect::<Vec<_>>())
    .bind(items.iter().map(|i| i.added_by.clone()).collect::<Vec<_>>())
    .bind(items.iter().map(|i| i.added_at).collect::<Vec<_>>())
    .bind(seq)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Writes the orders this list owns; returns how many it could not own
/// (their id belongs to another list's order).
async fn write_orders(
    tx: &mut Transaction<'_, Postgres>,
    list_id: Uuid,
    family_id: Option<Uuid>,
    seq: i64,
    all_orders: &[ProjectedOrder],
) -> DirResult<usize> {
    // Orders: an id held by another list's order is not ours to touch.
    let candidate_ids: Vec<Uuid> = all_orders.iter().map(|o| o.order_id).collect();
    let foreign: Vec<(Uuid,)> =
        sqlx::query_as("SELECT id FROM orders WHERE id = ANY($1) AND list_id <> $2")
            .bind(&candidate_ids)
            .bind(list_id)
            .fetch_all(&mut **tx)
            .await?;
    let foreign: std::collections::HashSet<Uuid> = foreign.into_iter().map(|(id,)| id).collect();
    let orders: Vec<&ProjectedOrder> = all_orders
        .iter()
        .filter(|o| !foreign.contains(&o.order_id))
        .collect();
    let order_ids: Vec<Uuid> = orders.iter().map(|o| o.order_id).collect();
    sqlx::query("DELETE FROM orders WHERE list_id = $1 AND NOT (id = ANY($2))")
        .bind(list_id)
        .bind(&order_ids)
        .execute(&mut **tx)
        .await?;
    // A vendor id that names no vendor of the family is dropped.
    let vendor_ids: Vec<Option<Uuid>> = orders.iter().map(|o| o.vendor_id).collect();
    let known_vendors: Vec<(Uuid,)> = sqlx::query_as(
        "SELECT id FROM vendors WHERE id = ANY($1) AND family_id IS NOT DISTINCT FROM $2",
    )
    .bind(vendor_ids.iter().flatten().copied().collect::<Vec<Uuid>>())
    .bind(family_id)
    .fetch_all(&mut **tx)
    .await?;
    let known_vendors: std::collections::HashSet<Uuid> =
        known_vendors.into_iter().map(|(id,)| id).collect();
    // So is a share id that names no share of this list.
    let share_ids: Vec<Uuid> = orders.iter().filter_map(|o| o.share_id).collect();
    let known_shares: Vec<(Uuid,)> =
        sqlx::query_as("SELECT id FROM vendor_shares WHERE id = ANY($1) AND list_id = $2")
            .bind(&share_ids)
            .bind(list_id)
            .fetch_all(&mut **tx)
            .await?;
    let known_shares: std::collections::HashSet<Uuid> =
        known_shares.into_iter().map(|(id,)| id).collect();
    sqlx::query(
            "INSERT INTO orders (id, list_id, vendor_id, status, placed_by, placed_at, note, share_id, \
                 projected_seq) \
             SELECT o.id, $1, o.vendor_id, o.status, o.placed_by, o.placed_at, o.note, o.share_id, $9 \
             FROM UNNEST($2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::timestamptz[], $7::text[], \
                 $8::uuid[]) AS o(id, vendor_id, status, placed_by, placed_at, note, share_id) \
             ON CONFLICT (id) DO UPDATE SET vendor_id = EXCLUDED.vendor_id, status = EXCLUDED.status, \
                 placed_by = EXCLUDED.placed_by, placed_at = EXCLUDED.placed_at, note = EXCLUDED.note, \
                 share_id = EXCLUDED.share_id, projected_seq = EXCLUDED.projected_seq \
             WHERE orders.list_id = EXCLUDED.list_id AND (orders.vendor_id, orders.status, orders.placed_by, \
                 orders.placed_at, orders.note, orders.share_id) IS DISTINCT FROM (EXCLUDED.vendor_id, \
                 EXCLUDED.status, EXCLUDED.placed_by, EXCLUDED.placed_at, EXCLUDED.note, EXCLUDED.share_id)",
        )
        .bind(list_id)
        .bind(&order_ids)
        .bind(
            orders
                .iter()
                .map(|o| o.vendor_id.filter(|v| known_vendors.contains(v)))
                .collect::<Vec<_>>(),
        )
        .bind(orders.iter().map(|o| o.status.clone()).collect::<Vec<_>>())
        .bind(orders.iter().map(|o| o.placed_by.clone()).collect::<Vec<_>>())
        .bind(orders.iter().map(|o| o.placed_at).collect::<Vec<_>>())
        .bind(orders.iter().map(|o| o.note.clone()).collect::<Vec<_>>())
        .bind(
            orders
                .iter()
                .map(|o| o.share_id.filter(|s| known_shares.contains(s)))
                .collect::<Vec<_>>(),
        )
        .bind(seq)
        .execute(&mut **tx)
        .await?;
    // Lines only of the orders this list owns now: a concurrent
    // projection of another list claiming the same id may have won the
    // insert, and its lines are not ours to touch.
    let owned: Vec<(Uuid,)> =
        sqlx::query_as("SELECT id FROM orders WHERE id = ANY($1) AND list_id = $2 FOR UPDATE")
            .bind(&order_ids)
            .bind(list_id)
            .fetch_all(&mut **tx)
            .await?;
    let owned: std::collections::HashSet<Uuid> = owned.into_iter().map(|(id,)| id).collect();
    let stored_lines: Vec<(Uuid, Option<Uuid>, String, Option<String>)> = sqlx::query_as(
        "SELECT order_id, item_id, name, quantity FROM order_items WHERE order_id = ANY($1) \
             ORDER BY order_id, line_no",
    )
    .bind(owned.iter().copied().collect::<Vec<Uuid>>())
    .fetch_all(&mut **tx)
    .await?;
    let mut stored: std::collections::HashMap<Uuid, Vec<ProjectedOrderItem>> =
        std::collections::HashMap::new();
    for (order_id, item_id, name, quantity) in stored_lines {
        stored
            .entry(order_id)
            .or_default()
            .push(ProjectedOrderItem {
                item_id,
                name,
                quantity,
            });
    }
    // Only orders whose lines changed are rewritten.
    let changed: Vec<&&ProjectedOrder> = orders
        .iter()
        .filter(|o| owned.contains(&o.order_id))
        .filter(|o| {
            stored
                .get(&o.order_id)
                .map_or(!o.items.is_empty(), |s| *s != o.items)
        })
        .collect();
    sqlx::query("DELETE FROM order_items WHERE order_id = ANY($1)")
        .bind(changed.iter().map(|o| o.order_id).collect::<Vec<Uuid>>())
        .execute(&mut **tx)
        .await?;
    let mut line_orders = Vec::new();
    let mut line_nos = Vec::new();
    let mut line_items = Vec::new();
    let mut line_names = Vec::new();
    let mut line_quantities = Vec::new();
    for order in &changed {
        for (n, line) in order.items.iter().enumerate() {
            line_orders.push(order.order_id);
            line_nos.push(i32::try_from(n).unwrap_or(i32::MAX));
            line_items.push(line.item_id);
            line_names.push(line.name.clone());
            line_quantities.push(line.quantity.clone());
        }
    }
    sqlx::query(
        "INSERT INTO order_items (order_id, line_no, item_id, name, quantity) \
             SELECT * FROM UNNEST($1::uuid[], $2::int[], $3::uuid[], $4::text[], $5::text[])",
    )
    .bind(&line_orders)
    .bind(&line_nos)
    .bind(&line_items)
    .bind(&line_names)
    .bind(&line_quantities)
    .execute(&mut **tx)
    .await?;

    Ok(all_orders.len() - owned.len())
}

#[async_trait]
impl ProjectionStore for PgProjections {
    async fn write(
        &self,
        list_id: Uuid,
        seq: u64,
        projection: &Projection,
    ) -> DirResult<Projected> {
        self.write_with(list_id, seq, projection, None).await
    }

    async fn write_since(
        &self,
        list_id: Uuid,
        seq: u64,
        projection: &Projection,
        previous: Previous<'_>,
    ) -> DirResult<Projected> {
        self.write_with(list_id, seq, projection, Some(previous))
            .await
    }

    async fn lagging(&self, limit: i64) -> DirResult<Vec<Uuid>> {
        let rows: Vec<(Uuid,)> = sqlx::query_as(
            "SELECT id FROM grocery_lists WHERE projected_seq < head_seq AND deleted_at IS NULL \
             AND family_id IS NOT NULL LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|(id,)| id).collect())
    }

    async fn lag(&self) -> DirResult<ProjectionLag> {
        let (lists, seqs): (i64, i64) = sqlx::query_as(
            "SELECT count(*), coalesce(sum(head_seq - projected_seq), 0)::bigint FROM grocery_lists \
             WHERE projected_seq < head_seq AND deleted_at IS NULL AND family_id IS NOT NULL",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(ProjectionLag { lists, seqs })
    }
    async fn items(&self, list_id: Uuid, filter: &ItemFilter) -> DirResult<Vec<ItemRecord>> {
        sqlx::query_as::<_, ItemRecord>(sqlx::AssertSqlSafe(format!(
            "SELECT {ITEM_COLUMNS} FROM list_items WHERE list_id = $1 \
             AND ($2::text IS NULL OR status = $2) AND ($3::text IS NULL OR assignee = $3) \
             AND ($4::text IS NULL OR category = $4) \
             ORDER BY position COLLATE \"C\" NULLS FIRST, item_id"
        )))
        .bind(list_id)
        .bind(&filter.status)
        .bind(&filter.assignee)
        .bind(&filter.category)
        .fetch_all(&self.pool)
        .await
    }

    async fn search_items(
        &self,
        family_id: Uuid,
        q: &str,
        after: Option<(Uuid, Uuid)>,
        limit: i64,
    ) -> DirResult<Vec<ItemRecord>> {
        let pattern = contains_pattern(q);
        let (after_list, after_item) = after.unzip();
        sqlx::query_as::<_, ItemRecord>(sqlx::AssertSqlSafe(format!(
            "SELECT {} FROM list_items i JOIN grocery_lists l ON l.id = i.list_id \
             WHERE l.family_id = $1 AND l.deleted_at IS NULL AND lower(i.name) LIKE $2 \
             AND ($3::uuid IS NULL OR (i.list_id, i.item_id) > ($3, $4)) \
             ORDER BY i.list_id, i.item_id LIMIT $5",
            ITEM_COLUMNS
                .split(", ")
                .map(|c| format!("i.{}", c.trim()))
                .collect::<Vec<_>>()
                .join(", ")
        )))
        .bind(family_id)
        .bind(pattern)
        .bind(after_list)
        .bind(after_item)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
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
             WHERE l.family_id = $1 AND l.deleted_at IS NULL AND ($2::text IS NULL OR o.status = $2) \
             AND ($3::uuid IS NULL OR o.id > $3) ORDER BY o.id LIMIT $4",
        )
        .bind(family_id)
        .bind(status)
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        with_lines(&self.pool, heads).await
    }

    async fn order(&self, id: Uuid) -> DirResult<Option<OrderRecord>> {
        let heads = sqlx::query_as::<_, OrderHead>(
            "SELECT o.id, o.list_id, l.family_id, o.vendor_id, o.status, o.placed_by, o.placed_at, \
                 o.note, o.share_id, o.projected_seq FROM orders o JOIN grocery_lists l ON l.id = o.list_id \
             WHERE o.id = $1",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        Ok(with_lines(&self.pool, heads).await?.pop())
    }

    async fn projected_seq(&self, list_id: Uuid) -> DirResult<Option<u64>> {
        let row: Option<(i64,)> =
            sqlx::query_as("SELECT projected_seq FROM grocery_lists WHERE id = $1")
                .bind(list_id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|(seq,)| u64::try_from(seq).unwrap_or(0)))
    }

    async fn is_family_vendor(&self, family_id: Uuid, vendor_id: Uuid) -> DirResult<bool> {
        let row: Option<(i32,)> = sqlx::query_as(
            "SELECT 1 FROM vendors WHERE id = $1 AND family_id = $2 AND deleted_at IS NULL",
        )
        .bind(vendor_id)
        .bind(family_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.is_some())
    }
}

const ITEM_COLUMNS: &str = "list_id, item_id, name, quantity, status, category, note, assignee, \
     position, added_by, added_at, projected_seq";

async fn with_lines(pool: &PgPool, heads: Vec<OrderHead>) -> DirResult<Vec<OrderRecord>> {
    let ids: Vec<Uuid> = heads.iter().map(|h| h.id).collect();
    let lines: Vec<(Uuid, Option<Uuid>, String, Option<String>)> = sqlx::query_as(
        "SELECT order_id, item_id, name, quantity FROM order_items WHERE order_id = ANY($1) \
         ORDER BY order_id, line_no",
    )
    .bind(&ids)
    .fetch_all(pool)
    .await?;
    let mut by_order: std::collections::HashMap<Uuid, Vec<ProjectedOrderItem>> =
        std::collections::HashMap::new();
    for (order_id, item_id, name, quantity) in lines {
        by_order
            .entry(order_id)
            .or_default()
            .push(ProjectedOrderItem {
                item_id,
                name,
                quantity,
            });
    }
    Ok(heads
        .into_iter()
        .map(|h| {
            let items = by_order.remove(&h.id).unwrap_or_default();
            h.with_items(items)
        })
        .collect())
}

/// The `LIKE` pattern matching names that contain `q`, case-insensitively
/// (compared with `lower(name)`), with `\` escaping the wildcards.
fn contains_pattern(q: &str) -> String {
    format!(
        "%{}%",
        q.to_lowercase()
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_")
    )
}
