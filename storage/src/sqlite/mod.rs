//! SQLite: [`SqliteStore`], [`SqliteDirectory`] and [`SqliteProjections`]
//! over one database file, for a single process (the zero-configuration
//! default).
//!
//! How it stays correct and durable on one file:
//! - WAL journal with `synchronous=FULL`: a committed transaction survives
//!   a power cut (with NORMAL, WAL may lose the last commits);
//! - one writer connection (a pool of one) whose transactions begin with
//!   `BEGIN IMMEDIATE`: writers queue in the process instead of failing with
//!   `SQLITE_BUSY`, and everything PostgreSQL does with row locks
//!   (`FOR UPDATE`, per-list sequences, the last-admin check) is serialised
//!   by construction;
//! - a separate pool of read-only connections: reads run beside the writer
//!   and each read transaction sees one consistent snapshot.

pub mod directory;
mod links;
pub mod projection;
pub mod vendors;
mod write_tx;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqlitePool, Transaction};
use uuid::Uuid;

use crate::{
    ListHead, NewUpdate, SeqRange, Snapshot, Store, StoreError, StoredDoc, StoredUpdate, to_i64,
    to_u64,
};

pub use directory::SqliteDirectory;
pub use projection::SqliteProjections;
pub use vendors::SqliteVendors;

/// Migrations of `migrations/sqlite`, embedded in the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations/sqlite");

/// How long a writer waits for the write lock held by another process on
/// the same file (in this process writers queue on the pool instead).
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The two pools over one SQLite file; cheap to clone.
#[derive(Clone, Debug)]
pub struct SqliteDb {
    writer: SqlitePool,
    readers: SqlitePool,
    path: PathBuf,
}

/// The file named by a `sqlite:` URL: `sqlite://data/larder.db` (relative)
/// or `sqlite:///srv/larder.db` (absolute). In-memory databases are refused:
/// every pooled connection would get a database of its own.
pub fn path_of_url(url: &str) -> Result<PathBuf, String> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .ok_or_else(|| format!("not a sqlite: URL: {url}"))?;
    if rest.contains('?') {
        return Err("sqlite URLs take no options: give the path of the database file".into());
    }
    if rest.is_empty() || rest == ":memory:" || rest.starts_with(':') {
        return Err(
            "an in-memory SQLite database cannot be used: give the path of a database file".into(),
        );
    }
    Ok(PathBuf::from(rest))
}

impl SqliteDb {
    /// Opens (creating it and its folder if missing) the database at `path`,
    /// applies migrations, and opens `readers` read-only connections.
    pub async fn open(path: &Path, readers: u32) -> Result<SqliteDb, StoreError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| {
                StoreError::Task(format!(
                    "cannot create the folder {}: {e}",
                    parent.display()
                ))
            })?;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(60))
            // The writer lives as long as the process.
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(
                options
                    .clone()
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Full),
            )
            .await?;
        MIGRATOR.run(&writer).await?;
        let readers = SqlitePoolOptions::new()
            .max_connections(readers.max(1))
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options.read_only(true))
            .await?;
        Ok(SqliteDb {
            writer,
            readers,
            path: path.to_owned(),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A write transaction: `BEGIN IMMEDIATE` on the one writer connection.
    pub(crate) async fn write(&self) -> Result<Transaction<'static, Sqlite>, sqlx::Error> {
        self.writer.begin_with("BEGIN IMMEDIATE").await
    }

    /// The writer, for single statements (each its own transaction).
    pub(crate) fn writer(&self) -> &SqlitePool {
        &self.writer
    }

    /// The read-only pool.
    pub(crate) fn readers(&self) -> &SqlitePool {
        &self.readers
    }

    /// Closes both pools (checkpointing the WAL when the last one closes).
    pub async fn close(&self) {
        self.readers.close().await;
        self.writer.close().await;
    }
}

/// Now, as SQLite stores times (RFC 3339 text in UTC, which sorts as time does).
pub(crate) fn now() -> DateTime<Utc> {
    Utc::now()
}

/// The update log in SQLite.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    db: SqliteDb,
}

impl SqliteStore {
    pub fn new(db: SqliteDb) -> Self {
        SqliteStore { db }
    }
}

const HEAD_QUERY: &str =
    "SELECT head_seq, snapshot_seq, deleted_at IS NOT NULL FROM grocery_lists WHERE id = $1";

fn head((head, snapshot, is_deleted): (i64, i64, bool)) -> ListHead {
    ListHead {
        head_seq: to_u64(head),
        snapshot_seq: to_u64(snapshot),
        is_deleted,
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(self.db.readers()).await?;
        Ok(())
    }

    async fn ensure_list(&self, list_id: Uuid) -> Result<ListHead, StoreError> {
        sqlx::query("INSERT INTO grocery_lists (id) VALUES ($1) ON CONFLICT (id) DO NOTHING")
            .bind(list_id)
            .execute(self.db.writer())
            .await?;
        let row: Option<(i64, i64, bool)> = sqlx::query_as(HEAD_QUERY)
            .bind(list_id)
            .fetch_optional(self.db.writer())
            .await?;
        row.map(head).ok_or(StoreError::ListNotFound(list_id))
    }

    async fn list_head(&self, list_id: Uuid) -> Result<Option<ListHead>, StoreError> {
        let row: Option<(i64, i64, bool)> = sqlx::query_as(HEAD_QUERY)
            .bind(list_id)
            .fetch_optional(self.db.readers())
            .await?;
        Ok(row.map(head))
    }

    async fn load_since(&self, list_id: Uuid, after_seq: u64) -> Result<StoredDoc, StoreError> {
        // One read transaction: in WAL mode it reads one snapshot of the
        // file, so a compaction committing meanwhile cannot hide updates.
        let mut tx = self.db.readers().begin().await?;
        let row: Option<(i64, i64, bool)> = sqlx::query_as(HEAD_QUERY)
            .bind(list_id)
            .fetch_optional(&mut *tx)
            .await?;
        let Some((head_seq, snapshot_seq, is_deleted)) = row else {
            return Err(StoreError::ListNotFound(list_id));
        };
        let snapshot: Option<(i64, Vec<u8>)> = if snapshot_seq > to_i64(after_seq) {
            sqlx::query_as(
                "SELECT up_to_seq, state_v1 FROM doc_snapshots WHERE list_id = $1 \
                 ORDER BY up_to_seq DESC LIMIT 1",
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
        let mut heads = HashMap::with_capacity(list_ids.len());
        if list_ids.is_empty() {
            return Ok(heads);
        }
        let mut conn = self.db.readers().acquire().await?;
        for &id in list_ids {
            let row: Option<(i64, i64, bool)> = sqlx::query_as(HEAD_QUERY)
                .bind(id)
                .fetch_optional(&mut *conn)
                .await?;
            if let Some(row) = row {
                heads.insert(id, head(row));
            }
        }
        Ok(heads)
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
        .fetch_all(self.db.readers())
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
        let mut counts: BTreeMap<Uuid, i64> = BTreeMap::new();
        for u in &updates {
            *counts.entry(u.list_id).or_default() += 1;
        }
        // The write lock is held from BEGIN IMMEDIATE to COMMIT: reading the
        // head and writing head + n cannot interleave with another writer.
        let mut tx = self.db.write().await?;
        let mut ranges: HashMap<Uuid, SeqRange> = HashMap::with_capacity(counts.len());
        let mut next: HashMap<Uuid, i64> = HashMap::with_capacity(counts.len());
        for (&id, &n) in &counts {
            let head: Option<(i64,)> = sqlx::query_as(
                "UPDATE grocery_lists SET head_seq = head_seq + $2 \
                 WHERE id = $1 AND deleted_at IS NULL RETURNING head_seq",
            )
            .bind(id)
            .bind(n)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some((head,)) = head {
                next.insert(id, head - n + 1);
                ranges.insert(
                    id,
                    SeqRange {
                        first: to_u64(head - n + 1),
                        last: to_u64(head),
                    },
                );
            }
        }
        for u in updates {
            let Some(seq) = next.get_mut(&u.list_id) else {
                continue;
            };
            sqlx::query(
                "INSERT INTO doc_updates (list_id, seq, update_v1, origin, user_id, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(u.list_id)
            .bind(*seq)
            .bind(&u.update)
            .bind(&u.origin)
            .bind(u.user_id)
            .bind(now())
            .execute(&mut *tx)
            .await?;
            *seq += 1;
        }
        tx.commit().await?;
        Ok(ranges)
    }

    async fn try_lease_compaction(
        &self,
        list_id: Uuid,
        lease: Duration,
    ) -> Result<bool, StoreError> {
        let now = now();
        let until = now + chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::MAX);
        let row: Option<(Uuid,)> = sqlx::query_as(
            "UPDATE grocery_lists SET compaction_lease_until = $2 \
             WHERE id = $1 AND (compaction_lease_until IS NULL OR compaction_lease_until < $3) \
             RETURNING id",
        )
        .bind(list_id)
        .bind(until)
        .bind(now)
        .fetch_optional(self.db.writer())
        .await?;
        Ok(row.is_some())
    }

    async fn store_snapshot(&self, list_id: Uuid, snapshot: Snapshot) -> Result<(), StoreError> {
        let up_to = to_i64(snapshot.up_to_seq);
        let mut tx = self.db.write().await?;
        let updated = sqlx::query(
            "UPDATE grocery_lists SET snapshot_seq = MAX(snapshot_seq, $2), compaction_lease_until = NULL \
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
            .execute(self.db.writer())
            .await?;
        Ok(())
    }
}
