//! The SDK's storage on the device: every list the app has, its document,
//! and which of its local edits the server has stored.
//!
//! SQLite through sqlx (the one SQLite library of the workspace), in WAL
//! mode with `synchronous=FULL`: an edit is committed to the file before
//! the call that made it returns, and SQLite's atomic commit means a
//! process killed mid-write leaves either the whole edit or none of it.
//! An append-only file of our own would have to re-create that.
//!
//! A list is stored as its folded state plus the updates since; local
//! updates stay listed until a durable acknowledgement from the server
//! covers them, so the SDK can say how many edits are not yet stored
//! there and can export them. Storage is compacted by bytes: once the
//! updates since the last fold outweigh the state (and 64 KiB), they are
//! folded in, so a list edited for a year takes about the size of its
//! state.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};
use uuid::Uuid;
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{StateVector, Update};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Updates since the last fold may reach this many bytes before a fold,
/// however small the state.
const MIN_FOLD_BYTES: i64 = 64 * 1024;

/// Why the device's storage failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the local store at {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: sqlx::Error,
    },
    #[error("local store: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("local store migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("a stored update of list {0} is damaged")]
    Damaged(Uuid),
}

/// Where an update came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Made on this device.
    Local,
    /// Received from the server.
    Remote,
}

impl Origin {
    fn as_str(self) -> &'static str {
        match self {
            Origin::Local => "local",
            Origin::Remote => "remote",
        }
    }
}

/// A list as stored on the device.
#[derive(Debug, Clone, Default)]
pub struct StoredList {
    /// The folded state, then the updates since, in order.
    pub updates: Vec<Vec<u8>>,
    /// The latest durable acknowledgement from the server.
    pub durable: Option<StateVector>,
}

/// The device's store: one SQLite file in the client's data directory.
#[derive(Debug, Clone)]
pub struct LocalStore {
    pool: SqlitePool,
}

impl LocalStore {
    /// Opens (creating it and `dir` if missing) the store in `dir`.
    pub async fn open(dir: &Path) -> Result<LocalStore, StoreError> {
        let path = dir.join("larder-client.db");
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Open {
            path: path.clone(),
            source: sqlx::Error::Io(e),
        })?;
        let options = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .foreign_keys(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10));
        // One connection: the store's writes are serial, and one writer
        // never waits on another.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .map_err(|source| StoreError::Open { path, source })?;
        MIGRATOR.run(&pool).await?;
        Ok(LocalStore { pool })
    }

    /// Closes the file.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Records that the device keeps `list` (of `family`, when known).
    pub async fn ensure_list(&self, list: Uuid, family: Option<Uuid>) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO lists (list_id, family_id) VALUES ($1, $2) \
             ON CONFLICT (list_id) DO UPDATE SET family_id = COALESCE(excluded.family_id, family_id), \
             removed_at = NULL",
        )
        .bind(list)
        .bind(family)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The lists the device keeps (not removed), with their family.
    pub async fn lists(&self) -> Result<Vec<(Uuid, Option<Uuid>)>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT list_id, family_id FROM lists WHERE removed_at IS NULL ORDER BY list_id",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// Keeps every list of `family` on the device from now on.
    pub async fn add_family(&self, family: Uuid) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO families (family_id) VALUES ($1) ON CONFLICT DO NOTHING")
            .bind(family)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Keeps `list` of `family` unless the device took it off before
    /// (deleted on the server, or forgotten by the app); whether it is kept.
    pub async fn keep_family_list(&self, list: Uuid, family: Uuid) -> Result<bool, StoreError> {
        sqlx::query(
            "INSERT INTO lists (list_id, family_id) VALUES ($1, $2) \
             ON CONFLICT (list_id) DO UPDATE SET family_id = excluded.family_id \
             WHERE lists.removed_at IS NULL",
        )
        .bind(list)
        .bind(family)
        .execute(&self.pool)
        .await?;
        let (kept,): (bool,) =
            sqlx::query_as("SELECT removed_at IS NULL FROM lists WHERE list_id = $1")
                .bind(list)
                .fetch_one(&self.pool)
                .await?;
        Ok(kept)
    }

    /// Stops keeping the lists of `family` (they stay on the device).
    pub async fn forget_family(&self, family: Uuid) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM families WHERE family_id = $1")
            .bind(family)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The families whose lists the device keeps.
    pub async fn families(&self) -> Result<Vec<Uuid>, StoreError> {
        let rows: Vec<(Uuid,)> =
            sqlx::query_as("SELECT family_id FROM families ORDER BY family_id")
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.into_iter().map(|(id,)| id).collect())
    }

    /// The kept (not removed) lists of `family`.
    pub async fn family_lists(&self, family: Uuid) -> Result<Vec<Uuid>, StoreError> {
        let rows: Vec<(Uuid,)> = sqlx::query_as(
            "SELECT list_id FROM lists WHERE family_id = $1 AND removed_at IS NULL ORDER BY list_id",
        )
        .bind(family)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|(id,)| id).collect())
    }

    /// The family of a kept list, when known.
    pub async fn family_of(&self, list: Uuid) -> Result<Option<Uuid>, StoreError> {
        let row: Option<(Option<Uuid>,)> =
            sqlx::query_as("SELECT family_id FROM lists WHERE list_id = $1")
                .bind(list)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.and_then(|(f,)| f))
    }

    /// Lists taken off the device (deleted on the server) that still hold
    /// local edits the server never stored.
    pub async fn removed_with_unsent(&self) -> Result<Vec<Uuid>, StoreError> {
        let rows: Vec<(Uuid,)> = sqlx::query_as(
            "SELECT list_id FROM lists WHERE removed_at IS NOT NULL \
             AND EXISTS (SELECT 1 FROM updates u WHERE u.list_id = lists.list_id AND u.origin = 'local') \
             ORDER BY list_id",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|(id,)| id).collect())
    }

    /// The list as stored, if the device keeps it.
    pub async fn load(&self, list: Uuid) -> Result<Option<StoredList>, StoreError> {
        let row = sqlx::query("SELECT state, durable_sv FROM lists WHERE list_id = $1")
            .bind(list)
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let state: Option<Vec<u8>> = row.try_get("state")?;
        let durable: Option<Vec<u8>> = row.try_get("durable_sv")?;
        let tail: Vec<(Vec<u8>,)> =
            sqlx::query_as("SELECT body FROM updates WHERE list_id = $1 ORDER BY id")
                .bind(list)
                .fetch_all(&self.pool)
                .await?;
        let mut updates: Vec<Vec<u8>> = state.into_iter().collect();
        updates.extend(tail.into_iter().map(|(body,)| body));
        let durable = match durable {
            Some(bytes) => {
                Some(StateVector::decode_v1(&bytes).map_err(|_| StoreError::Damaged(list))?)
            }
            None => None,
        };
        Ok(Some(StoredList { updates, durable }))
    }

    /// Appends an update; committed to the file when this returns.
    pub async fn append(
        &self,
        list: Uuid,
        origin: Origin,
        update: &[u8],
    ) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO updates (list_id, origin, body) VALUES ($1, $2, $3)")
            .bind(list)
            .bind(origin.as_str())
            .bind(update)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Records the server's latest durable acknowledgement of `list`.
    pub async fn set_durable(&self, list: Uuid, stored: &StateVector) -> Result<(), StoreError> {
        sqlx::query("UPDATE lists SET durable_sv = $2 WHERE list_id = $1")
            .bind(list)
            .bind(stored.encode_v1())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The local updates the server has not acknowledged as stored.
    pub async fn undurable(&self, list: Uuid) -> Result<Vec<Vec<u8>>, StoreError> {
        let durable: Option<(Option<Vec<u8>>,)> =
            sqlx::query_as("SELECT durable_sv FROM lists WHERE list_id = $1")
                .bind(list)
                .fetch_optional(&self.pool)
                .await?;
        let durable = match durable.and_then(|(sv,)| sv) {
            Some(bytes) => StateVector::decode_v1(&bytes).map_err(|_| StoreError::Damaged(list))?,
            None => StateVector::default(),
        };
        let local: Vec<(Vec<u8>,)> = sqlx::query_as(
            "SELECT body FROM updates WHERE list_id = $1 AND origin = 'local' ORDER BY id",
        )
        .bind(list)
        .fetch_all(&self.pool)
        .await?;
        let bodies: Vec<Vec<u8>> = local.into_iter().map(|(body,)| body).collect();
        let covered = covered(&bodies, &durable).ok_or(StoreError::Damaged(list))?;
        Ok(bodies
            .into_iter()
            .zip(covered)
            .filter(|(_, covered)| !covered)
            .map(|(body, _)| body)
            .collect())
    }

    /// Whether the updates since the last fold outweigh the state.
    pub async fn needs_fold(&self, list: Uuid) -> Result<bool, StoreError> {
        let (state, tail): (i64, i64) = sqlx::query_as(
            "SELECT COALESCE((SELECT length(state) FROM lists WHERE list_id = $1), 0), \
             COALESCE((SELECT SUM(length(body)) FROM updates WHERE list_id = $1), 0)",
        )
        .bind(list)
        .fetch_one(&self.pool)
        .await?;
        Ok(tail > state.max(MIN_FOLD_BYTES))
    }

    /// Folds the updates into `state` (the document's whole state, which
    /// holds them all): remote updates and local ones the server has
    /// stored go; local ones it has not stay listed, so they are counted
    /// and can be exported.
    pub async fn fold(&self, list: Uuid, state: &[u8]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let durable: Option<(Option<Vec<u8>>,)> =
            sqlx::query_as("SELECT durable_sv FROM lists WHERE list_id = $1")
                .bind(list)
                .fetch_optional(&mut *tx)
                .await?;
        let durable = match durable.and_then(|(sv,)| sv) {
            Some(bytes) => StateVector::decode_v1(&bytes).map_err(|_| StoreError::Damaged(list))?,
            None => StateVector::default(),
        };
        let rows: Vec<(i64, String, Vec<u8>)> =
            sqlx::query_as("SELECT id, origin, body FROM updates WHERE list_id = $1 ORDER BY id")
                .bind(list)
                .fetch_all(&mut *tx)
                .await?;
        let local: Vec<Vec<u8>> = rows
            .iter()
            .filter(|(_, origin, _)| origin == "local")
            .map(|(_, _, body)| body.clone())
            .collect();
        let mut covered = covered(&local, &durable)
            .ok_or(StoreError::Damaged(list))?
            .into_iter();
        for (id, origin, _) in rows {
            let keep = origin == "local" && !covered.next().unwrap_or(true);
            if !keep {
                sqlx::query("DELETE FROM updates WHERE id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        sqlx::query("UPDATE lists SET state = $2 WHERE list_id = $1")
            .bind(list)
            .bind(state)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Bytes the list takes on the device (state and updates).
    pub async fn stored_bytes(&self, list: Uuid) -> Result<i64, StoreError> {
        let (bytes,): (i64,) = sqlx::query_as(
            "SELECT COALESCE((SELECT length(state) FROM lists WHERE list_id = $1), 0) + \
             COALESCE((SELECT SUM(length(body)) FROM updates WHERE list_id = $1), 0)",
        )
        .bind(list)
        .fetch_one(&self.pool)
        .await?;
        Ok(bytes)
    }

    /// Marks `list` removed (deleted elsewhere): it is no longer listed,
    /// and its unsent edits stay readable through [`LocalStore::undurable`].
    pub async fn remove_list(&self, list: Uuid) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE lists SET removed_at = strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now') \
             WHERE list_id = $1",
        )
        .bind(list)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

/// For each of a device's local updates, in the order they were made,
/// whether the server's durable state `stored` holds it; `None` when one
/// does not decode. An update that inserts is held when every clock it
/// inserts is in `stored`. One that only deletes carries no clock, so it
/// counts as held once a later insert of the device is: the server commits
/// one connection's updates in the order they were sent.
fn covered(updates: &[Vec<u8>], stored: &StateVector) -> Option<Vec<bool>> {
    let mut held = Vec::with_capacity(updates.len());
    for body in updates {
        let update = Update::decode_v1(body).ok()?;
        let inserted = update.insertions(true);
        let mut any = false;
        let all = inserted.iter().all(|(client, ranges)| {
            ranges.iter().all(|range| {
                any = true;
                stored.get(client) >= range.end
            })
        });
        held.push(any.then_some(all));
    }
    // Deletions before a held insert are held too.
    let mut later_held = false;
    Some(
        held.into_iter()
            .rev()
            .map(|h| {
                let this = h.unwrap_or(later_held);
                later_held = later_held || h == Some(true);
                this
            })
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use larder_crdt::ListDoc;
    use yrs::{Doc, ReadTxn, Transact};

    use super::*;

    fn temp_dir() -> PathBuf {
        std::env::temp_dir().join(format!("larder-client-store-{}", Uuid::new_v4()))
    }

    fn item(name: &str) -> larder_crdt::NewItem {
        larder_crdt::NewItem {
            id: Uuid::new_v4().to_string(),
            name: name.into(),
            quantity: None,
            category: None,
            note: None,
            position: None,
            added_by: None,
            added_at_ms: 0,
        }
    }

    /// Adds an item to `doc`; the update it made.
    fn edit(doc: &Doc, list: &ListDoc, name: &str) -> Vec<u8> {
        let before = doc.transact().state_vector();
        list.add_item(&mut doc.transact_mut(), &item(name))
            .expect("valid item");
        doc.transact().encode_state_as_update_v1(&before)
    }

    fn restore(stored: &StoredList) -> Doc {
        let doc = Doc::new();
        larder_crdt::state::apply_stored(&doc, stored.updates.iter().map(Vec::as_slice))
            .expect("stored updates apply");
        doc
    }

    #[tokio::test]
    async fn edits_survive_a_reopen_and_count_until_acknowledged() {
        let dir = temp_dir();
        let list_id = Uuid::now_v7();
        let doc = Doc::new();
        let list = ListDoc::new(&doc);
        {
            let store = LocalStore::open(&dir).await.unwrap();
            store.ensure_list(list_id, None).await.unwrap();
            for name in ["Milk", "Bread", "Eggs"] {
                let update = edit(&doc, &list, name);
                store.append(list_id, Origin::Local, &update).await.unwrap();
            }
            // Dropped without closing, as a killed app would.
        }
        let store = LocalStore::open(&dir).await.unwrap();
        let stored = store.load(list_id).await.unwrap().expect("kept");
        let again = restore(&stored);
        let names: Vec<String> = ListDoc::new(&again)
            .read(&again.transact())
            .items
            .into_iter()
            .map(|i| i.name)
            .collect();
        assert_eq!(names.len(), 3);
        assert_eq!(store.undurable(list_id).await.unwrap().len(), 3);
        store
            .set_durable(list_id, &doc.transact().state_vector())
            .await
            .unwrap();
        assert!(store.undurable(list_id).await.unwrap().is_empty());
        assert_eq!(store.lists().await.unwrap(), vec![(list_id, None)]);
        store.remove_list(list_id).await.unwrap();
        assert!(store.lists().await.unwrap().is_empty());
        store.close().await;
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn a_list_edited_ten_thousand_times_takes_about_its_state() {
        let dir = temp_dir();
        let store = LocalStore::open(&dir).await.unwrap();
        let list_id = Uuid::now_v7();
        store.ensure_list(list_id, None).await.unwrap();
        let doc = Doc::new();
        let list = ListDoc::new(&doc);
        let mut ids = Vec::new();
        for n in 0..10_000 {
            // Add, rename and remove, as a year of shopping does.
            let before = doc.transact().state_vector();
            {
                let mut txn = doc.transact_mut();
                let new = item(&format!("Item {n}"));
                list.add_item(&mut txn, &new).expect("valid");
                ids.push(new.id);
                if ids.len() > 30 {
                    let gone = ids.remove(0);
                    assert!(list.remove_item(&mut txn, &gone));
                }
            }
            let update = doc.transact().encode_state_as_update_v1(&before);
            store.append(list_id, Origin::Local, &update).await.unwrap();
            if n % 100 == 0 {
                store
                    .set_durable(list_id, &doc.transact().state_vector())
                    .await
                    .unwrap();
            }
            if store.needs_fold(list_id).await.unwrap() {
                let state = doc
                    .transact()
                    .encode_state_as_update_v1(&StateVector::default());
                store.fold(list_id, &state).await.unwrap();
            }
        }
        let state_len = doc
            .transact()
            .encode_state_as_update_v1(&StateVector::default())
            .len() as i64;
        let stored = store.stored_bytes(list_id).await.unwrap();
        assert!(
            stored <= 3 * state_len.max(MIN_FOLD_BYTES),
            "{stored} bytes stored for a state of {state_len}"
        );
        // Nothing was lost in the folds.
        let again = restore(&store.load(list_id).await.unwrap().unwrap());
        assert_eq!(ListDoc::new(&again).read(&again.transact()).items.len(), 30);
        // Unacknowledged edits survive folds.
        assert!(!store.undurable(list_id).await.unwrap().is_empty());
        store.close().await;
        let _ = std::fs::remove_dir_all(dir);
    }
}
