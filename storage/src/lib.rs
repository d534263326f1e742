//! Larder's storage: the [`Store`] trait, the [`directory::Directory`] and
//! the [`projection::Projections`], each on PostgreSQL (many replicas) and
//! on SQLite (one process, the default), chosen by the URL ([`Database`]).
//!
//! Storage moves opaque update bytes; it knows nothing of HTTP or of the
//! document schema. What it guarantees:
//!
//! - per-list sequence numbers without holes or duplicates, even with many
//!   writers, because they are taken from the list's row under its lock in
//!   the same transaction that inserts the updates ([`Store::append`]);
//! - a consistent view of snapshot + log tail when loading
//!   ([`Store::load_doc`]), whatever compaction does meanwhile;
//! - compaction by one process at a time per list (a lease on the list's
//!   row), never deleting an update the new snapshot does not cover.
//!
//! Modules: [`directory`] (accounts, families, list rows, idempotency
//! keys), [`projection`] (relational rows of list documents), [`postgres`]
//! and [`sqlite`] (the implementations, migrations embedded from
//! `migrations/postgres` and `migrations/sqlite`), [`database`] (opening
//! either by URL), [`testing`] (a throw-away database per test).
#![forbid(unsafe_code)]

pub mod database;
pub mod directory;
pub mod outbox;
pub mod portable;
pub mod postgres;
pub mod projection;
pub mod sqlite;
pub mod testing;
pub mod vendors;

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use uuid::Uuid;

pub use database::{Backend, Database};
pub use postgres::PgStore;
pub use sqlite::SqliteStore;

/// Errors of a [`Store`].
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The list does not exist (or is deleted).
    #[error("list {0} not found")]
    ListNotFound(Uuid),
    /// The database could not be reached or failed.
    #[error("database error")]
    Database(#[from] sqlx::Error),
    /// Migrations could not be applied.
    #[error("migration failed")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The task doing the work failed (e.g. panicked).
    #[error("storage task failed: {0}")]
    Task(String),
    /// The database could not be opened; the message says why, for people.
    #[error("{0}")]
    Open(String),
}

impl StoreError {
    /// True for failures worth retrying later (connection trouble,
    /// serialization conflicts) as opposed to a refusal.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::ListNotFound(_) => false,
            StoreError::Migrate(_) | StoreError::Open(_) => false,
            StoreError::Task(_) => true,
            StoreError::Database(e) => {
                !matches!(e, sqlx::Error::RowNotFound | sqlx::Error::ColumnNotFound(_))
            }
        }
    }
}

/// A sequence number as stored (`bigint`, never negative) for the API.
pub(crate) fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// A sequence number for a `bigint` column.
pub(crate) fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// What a list's row says about its log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListHead {
    pub head_seq: u64,
    pub snapshot_seq: u64,
    pub is_deleted: bool,
}

/// One stored update of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredUpdate {
    pub seq: u64,
    pub update: Vec<u8>,
}

/// A snapshot folding the log up to `up_to_seq`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub up_to_seq: u64,
    pub state: Vec<u8>,
}

/// Everything needed to rebuild a list's document, read consistently.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StoredDoc {
    pub head_seq: u64,
    /// The list was deleted (its log is still readable).
    pub is_deleted: bool,
    pub snapshot: Option<Snapshot>,
    /// Updates after the snapshot, in sequence order.
    pub tail: Vec<StoredUpdate>,
}

impl StoredDoc {
    /// The snapshot then the tail, in the order they must be applied.
    pub fn updates(&self) -> impl Iterator<Item = &[u8]> {
        self.snapshot
            .iter()
            .map(|s| s.state.as_slice())
            .chain(self.tail.iter().map(|u| u.update.as_slice()))
    }

    /// Bytes in the tail (what compaction would fold).
    pub fn tail_bytes(&self) -> u64 {
        self.tail.iter().map(|u| u.update.len() as u64).sum()
    }
}

/// One update to append to a list's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewUpdate {
    pub list_id: Uuid,
    pub update: Vec<u8>,
    /// Replica that commits it.
    pub origin: String,
    pub user_id: Option<Uuid>,
}

/// Sequence numbers given to one list's updates by one [`Store::append`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeqRange {
    pub first: u64,
    pub last: u64,
}

/// Storage of list documents and relational data.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Whether the database answers.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Creates the list's row if it does not exist yet and returns its head.
    async fn ensure_list(&self, list_id: Uuid) -> Result<ListHead, StoreError>;

    /// The list's head, `None` when there is no such list.
    async fn list_head(&self, list_id: Uuid) -> Result<Option<ListHead>, StoreError>;

    /// Latest snapshot plus the log after it, read in one consistent view.
    async fn load_doc(&self, list_id: Uuid) -> Result<StoredDoc, StoreError> {
        self.load_since(list_id, 0).await
    }

    /// What a reader holding the log up to `after_seq` is missing, read in
    /// one consistent view: the updates after `after_seq`, or, when
    /// compaction folded some of those away, the latest snapshot and the
    /// updates after it.
    async fn load_since(&self, list_id: Uuid, after_seq: u64) -> Result<StoredDoc, StoreError>;

    /// The heads of the lists among `list_ids` that exist.
    async fn list_heads(&self, list_ids: &[Uuid]) -> Result<HashMap<Uuid, ListHead>, StoreError>;

    /// Updates with `seq > after_seq` (for catching up).
    async fn updates_after(
        &self,
        list_id: Uuid,
        after_seq: u64,
    ) -> Result<Vec<StoredUpdate>, StoreError>;

    /// Appends updates of possibly many lists in one transaction (group
    /// commit). Each list's updates get consecutive sequence numbers in the
    /// order given. Lists that do not exist or are deleted are left out of
    /// the result and nothing is written for them; the others commit.
    async fn append(&self, updates: Vec<NewUpdate>) -> Result<HashMap<Uuid, SeqRange>, StoreError>;

    /// Takes the list's compaction lease for `lease`; false when another
    /// process holds it.
    async fn try_lease_compaction(
        &self,
        list_id: Uuid,
        lease: Duration,
    ) -> Result<bool, StoreError>;

    /// Stores a snapshot covering the log up to `up_to_seq`, deletes what it
    /// covers, and releases the lease, in one transaction.
    async fn store_snapshot(&self, list_id: Uuid, snapshot: Snapshot) -> Result<(), StoreError>;

    /// Releases the compaction lease without storing anything.
    async fn release_compaction(&self, list_id: Uuid) -> Result<(), StoreError>;
}
