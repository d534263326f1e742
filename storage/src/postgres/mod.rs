//! PostgreSQL: [`PgStore`] (the update log), [`PgDirectory`] and
//! [`PgProjections`], for many replicas sharing one database.

pub mod directory;
mod links;
pub mod projection;
pub mod vendors;
mod write_tx;

pub use directory::PgDirectory;
pub use projection::PgProjections;
pub use vendors::PgVendors;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use async_trait::async_trait;
use sqlx::migrate::MigrateDatabase;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres};
use uuid::Uuid;

use crate::{
    ListHead, NewUpdate, SeqRange, Snapshot, Store, StoreError, StoredDoc, StoredUpdate, to_i64,
    to_u64,
};

/// Migrations of `migrations/postgres`, embedded in the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/postgres");

/// Opens a pool. `max_connections` bounds what this process asks of the
/// server (two are opened at once and kept); connection attempts give up after a few seconds so that an outage
/// surfaces as an error instead of a hang.
pub async fn connect(url: &str, max_connections: u32) -> Result<PgPool, StoreError> {
    let options: PgConnectOptions = url.parse()?;
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        // Kept open from the start: the first lists opened after a restart
        // do not wait for new backends.
        .min_connections(max_connections.min(2))
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(options)
        .await?;
    Ok(pool)
}

/// Creates the database named in `url` if it does not exist.
pub async fn create_database_if_missing(url: &str) -> Result<(), StoreError> {
    if !Postgres::database_exists(url).await? {
        match Postgres::create_database(url).await {
            Ok(()) => {}
            // Another process created it meanwhile.
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P04") => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Applies pending migrations.
pub async fn migrate(pool: &PgPool) -> Result<(), StoreError> {
    MIGRATOR.run(pool).await?;
    Ok(())
}

/// The PostgreSQL store.
#[derive(Clone, Debug)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    pub fn new(pool: PgPool) -> Self {
        PgStore { pool }
    }

    /// The pool, for components that run their own queries in this crate.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

#[async_trait]
impl Store for PgStore {
    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn ensure_list(&self, list_id: Uuid) -> Result<ListHead, StoreError> {
        sqlx::query("INSERT INTO grocery_lists (id) VALUES ($1) ON CONFLICT (id) DO NOTHING")
            .bind(list_id)
            .execute(&self.pool)
            .await?;
        self.list_head(list_id)
            .await?
            .ok_or(StoreError::ListNotFound(list_id))
    }

    async fn list_head(&self, list_id: Uuid) -> Result<Option<ListHead>, StoreError> {
        let row: Option<(i64, i64, bool)> =
            sqlx::query_as("SELECT head_seq, snapshot_seq, deleted_at IS NOT NULL FROM grocery_lists WHERE id = $1")
                .bind(list_id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|(head, snapshot, is_deleted)| ListHead {
            head_seq: to_u64(head),
            snapshot_seq: to_u64(snapshot),
            is_deleted,
        }))
    }

    async fn load_since(&self, list_id: Uuid, after_seq: u64) -> Result<StoredDoc, StoreError> {
        // One snapshot-isolated read, so a compaction committing between the
        // snapshot and the tail cannot hide updates from us.
        let mut tx = self.pool.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .execute(&mut *tx)
            .await?;
        let head: Option<(i64, i64, bool)> = sqlx::query_as(
            "SELECT head_seq, snapshot_seq, deleted_at IS NOT NULL FROM grocery_lists WHERE id = $1",
        )
        .bind(list_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((head_seq, snapshot_seq, is_deleted)) = head else {
            return Err(StoreError::ListNotFound(list_id));
        };
        // The reader lacks updates a snapshot folded away: start from it.
        let snapshot: Option<(i64, Vec<u8>)> = if snapshot_seq > to_i64(after_seq) {
            sqlx::query_as(
                "SELECT up_to_seq, state_v1 FROM doc_snapshots WHERE list_id = $1 ORDER BY up_to_seq DESC LIMIT 1",
            )
            .bind(list_id)
            .fetch_optional(&mut *tx)
            .await?
        } else {
            None
        };
        let after = snapshot
            .as_ref()
            .map(|(seq, _)| *seq)
            .unwrap_or(to_i64(after_seq));
        let tail: Vec<(i64, Vec<u8>)> = sqlx::query_as(
            "SELECT seq, update_v1 FROM doc_updates WHERE list_id = $1 AND seq > $2 ORDER BY seq",
        )
        .bind(list_id)
        .bind(after)
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(StoredDoc {
            head_seq: to_u64(head_seq),
            is_deleted,
            snapshot: snapshot.map(|(seq, state)| Snapshot {
                up_to_seq: to_u64(seq),
                state,
            }),
            tail: tail
                .into_iter()
                .map(|(seq, update)| StoredUpdate {
                    seq: to_u64(seq),
                    update,
                })
                .collect(),
        })
    }

    async fn list_heads(&self, list_ids: &[Uuid]) -> Result<HashMap<Uuid, ListHead>, StoreError> {
        if list_ids.is_empty() {
            return Ok(HashMap::new());
        }
        let rows: Vec<(Uuid, i64, i64, bool)> = sqlx::query_as(
            "SELECT id, head_seq, snapshot_seq, deleted_at IS NOT NULL FROM grocery_lists WHERE id = ANY($1)",
        )
        .bind(list_ids)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(id, head, snapshot, is_deleted)| {
                (
                    id,
                    ListHead {
                        head_seq: to_u64(head),
                        snapshot_seq: to_u64(snapshot),
                        is_deleted,
                    },
                )
            })
            .collect())
    }

    async fn updates_after(
        &self,
        list_id: Uuid,
        after_seq: u64,
    ) -> Result<Vec<StoredUpdate>, StoreError> {
        let rows: Vec<(i64, Vec<u8>)> = sqlx::query_as(
            "SELECT seq, update_v1 FROM doc_updates WHERE list_id = $1 AND seq > $2 ORDER BY seq",
        )
        .bind(list_id)
        .bind(to_i64(after_seq))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(seq, update)| StoredUpdate {
                seq: to_u64(seq),
                update,
            })
            .collect())
    }

    async fn append(&self, updates: Vec<NewUpdate>) -> Result<HashMap<Uuid, SeqRange>, StoreError> {
        if updates.is_empty() {
            return Ok(HashMap::new());
        }
        // How many updates each list gets, sorted by list id, and each
        // update's place among its list's (1-based, in submission order).
        let mut counts: BTreeMap<Uuid, i64> = BTreeMap::new();
        let mut places = Vec::with_capacity(updates.len());
        for u in &updates {
            let n = counts.entry(u.list_id).or_default();
            *n += 1;
            places.push(*n);
        }
        let ids: Vec<Uuid> = counts.keys().copied().collect();
        let ns: Vec<i64> = counts.values().copied().collect();
        let mut list_ids = Vec::with_capacity(updates.len());
        let mut bodies = Vec::with_capacity(updates.len());
        let mut origins = Vec::with_capacity(updates.len());
        let mut users = Vec::with_capacity(updates.len());
        for u in updates {
            list_ids.push(u.list_id);
            bodies.push(u.update);
            origins.push(u.origin);
            users.push(u.user_id);
        }
        // One statement, so one round trip and its own transaction: lock
        // the lists in id order (every writer does, so two replicas
        // committing overlapping batches cannot deadlock), advance each
        // live list's head by its count, and insert its updates numbered
        // up to the new head. A deleted list's updates are not written.
        let heads: Vec<(Uuid, i64, i64)> = sqlx::query_as(
            "WITH locked AS MATERIALIZED ( \
                 SELECT id FROM grocery_lists WHERE id = ANY($1) ORDER BY id FOR UPDATE), \
             heads AS ( \
                 UPDATE grocery_lists AS g SET head_seq = g.head_seq + v.n \
                 FROM UNNEST($1::uuid[], $2::bigint[]) AS v(id, n) JOIN locked AS l ON l.id = v.id \
                 WHERE g.id = v.id AND g.deleted_at IS NULL \
                 RETURNING g.id, g.head_seq, v.n), \
             inserted AS ( \
                 INSERT INTO doc_updates (list_id, seq, update_v1, origin, user_id) \
                 SELECT u.list_id, h.head_seq - h.n + u.place, u.update_v1, u.origin, u.user_id \
                 FROM UNNEST($3::uuid[], $4::bigint[], $5::bytea[], $6::text[], $7::uuid[]) \
                     AS u(list_id, place, update_v1, origin, user_id) \
                 JOIN heads AS h ON h.id = u.list_id) \
             SELECT id, head_seq, n FROM heads",
        )
        .bind(&ids)
        .bind(&ns)
        .bind(&list_ids)
        .bind(&places)
        .bind(&bodies)
        .bind(&origins)
        .bind(&users)
        .fetch_all(&self.pool)
        .await?;
        Ok(heads
            .into_iter()
            .map(|(id, head, n)| {
                let range = SeqRange {
                    first: to_u64(head - n + 1),
                    last: to_u64(head),
                };
                (id, range)
            })
            .collect())
    }

    async fn try_lease_compaction(
        &self,
        list_id: Uuid,
        lease: Duration,
    ) -> Result<bool, StoreError> {
        let row: Option<(Uuid,)> = sqlx::query_as(
            "UPDATE grocery_lists SET compaction_lease_until = now() + make_interval(secs => $2) \
             WHERE id = $1 AND (compaction_lease_until IS NULL OR compaction_lease_until < now()) \
             RETURNING id",
        )
        .bind(list_id)
        .bind(lease.as_secs_f64())
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.is_some())
    }

    async fn store_snapshot(&self, list_id: Uuid, snapshot: Snapshot) -> Result<(), StoreError> {
        let up_to = to_i64(snapshot.up_to_seq);
        let mut tx = self.pool.begin().await?;
        let updated = sqlx::query(
            "UPDATE grocery_lists SET snapshot_seq = GREATEST(snapshot_seq, $2), compaction_lease_until = NULL \
             WHERE id = $1 AND head_seq >= $2",
        )
        .bind(list_id)
        .bind(up_to)
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() == 0 {
            return Err(StoreError::ListNotFound(list_id));
        }
        sqlx::query(
            "INSERT INTO doc_snapshots (list_id, up_to_seq, state_v1) VALUES ($1, $2, $3) \
             ON CONFLICT (list_id, up_to_seq) DO NOTHING",
        )
        .bind(list_id)
        .bind(up_to)
        .bind(&snapshot.state)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM doc_snapshots WHERE list_id = $1 AND up_to_seq < $2")
            .bind(list_id)
            .bind(up_to)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM doc_updates WHERE list_id = $1 AND seq <= $2")
            .bind(list_id)
            .bind(up_to)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn release_compaction(&self, list_id: Uuid) -> Result<(), StoreError> {
        sqlx::query("UPDATE grocery_lists SET compaction_lease_until = NULL WHERE id = $1")
            .bind(list_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
