//! [`Client`]: the app's entry point. It opens the device's store, keeps
//! the session, runs the sync loop in the background, and hands out
//! [`ListHandle`]s whose edits are on disk before they return.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use larder_crdt::{ItemPatch, ItemStatus, ListDoc, ListSnapshot, NewItem, NewOrder};
use reqwest::Method;
use serde::Deserialize;
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinHandle;
use uuid::Uuid;
use yrs::TransactionMut;

use crate::config::Config;
use crate::lists::ListCell;
use crate::rest::Rest;
use crate::session::{Auth, AuthError, Session};
use crate::status::{Change, ListStatus, Status, SyncState};
use crate::store::LocalStore;
use crate::sync::{self, Command};
use crate::{Error, RestError};

/// What the client, its handles and its sync loop share.
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) store: LocalStore,
    pub(crate) rest: Rest,
    pub(crate) auth: Auth,
    pub(crate) cells: std::sync::Mutex<HashMap<Uuid, Arc<ListCell>>>,
    pub(crate) status: watch::Sender<Status>,
    pub(crate) events: broadcast::Sender<Change>,
    pub(crate) commands: mpsc::UnboundedSender<Command>,
}

/// An offline-first client of a Larder server.
pub struct Client {
    shared: Arc<Shared>,
    online: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("data_dir", &self.shared.config.data_dir)
            .field("servers", &self.shared.config.servers)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct Created {
    id: Uuid,
}

/// A family the user belongs to.
#[derive(Debug, Clone, Deserialize)]
pub struct Family {
    pub id: Uuid,
    pub name: String,
    pub role: String,
}

impl Client {
    /// Opens the client on `config.data_dir` (created when missing): the
    /// lists kept there are loaded as needed and synced in the background
    /// unless `config.offline`.
    pub async fn open(config: Config) -> Result<Client, Error> {
        let store = LocalStore::open(&config.data_dir).await?;
        let auth = Auth::open(&config.data_dir, config.refresh_margin).map_err(Error::Auth)?;
        let signed_in = auth.current().await.is_some();
        let (commands, receiver) = mpsc::unbounded_channel();
        let (online, online_rx) = watch::channel(!config.offline);
        let shared = Arc::new(Shared {
            rest: Rest::new(config.servers.clone()),
            config,
            store,
            auth,
            cells: std::sync::Mutex::default(),
            status: watch::channel(Status {
                signed_in,
                ..Status::default()
            })
            .0,
            events: broadcast::channel(1024).0,
            commands,
        });
        for (list, _) in shared.store.lists().await? {
            let cell = shared.cell(list);
            shared.recount(&cell).await?;
            let _ = shared.commands.send(Command::Sync(list));
        }
        let sync = tokio::spawn(sync::run(shared.clone(), receiver, online_rx));
        let sweeper = tokio::spawn(unload_idle(Arc::downgrade(&shared)));
        Ok(Client {
            shared,
            online,
            tasks: vec![sync, sweeper],
        })
    }

    /// Creates an account and signs in; the session is kept on the device.
    pub async fn sign_up(
        &self,
        email: &str,
        password: &str,
        display_name: &str,
    ) -> Result<Session, Error> {
        let session = self
            .shared
            .auth
            .sign_up(&self.shared.rest, email, password, display_name)
            .await?;
        self.signed_in();
        Ok(session)
    }

    /// Signs in; the session is kept on the device.
    pub async fn sign_in(&self, email: &str, password: &str) -> Result<Session, Error> {
        let session = self
            .shared
            .auth
            .sign_in(&self.shared.rest, email, password)
            .await?;
        self.signed_in();
        Ok(session)
    }

    fn signed_in(&self) {
        self.shared.status.send_modify(|s| {
            s.signed_in = true;
            s.last_error = None;
        });
        let _ = self.shared.commands.send(Command::SessionChanged);
    }

    /// Signs out on the server and the device. Lists and their unsent
    /// edits stay on the device.
    pub async fn sign_out(&self) {
        self.shared.auth.sign_out(&self.shared.rest).await;
        self.shared.status.send_modify(|s| s.signed_in = false);
        let _ = self.shared.commands.send(Command::SessionChanged);
    }

    /// The session kept on the device, if signed in.
    pub async fn session(&self) -> Option<Session> {
        self.shared.auth.current().await
    }

    /// Goes online (syncs) or offline (edits stay on the device).
    pub fn set_online(&self, online: bool) {
        self.online.send_replace(online);
    }

    /// The client's overall status.
    pub fn status(&self) -> watch::Receiver<Status> {
        self.shared.status.subscribe()
    }

    /// Changes to items as they happen, local and remote.
    pub fn changes(&self) -> broadcast::Receiver<Change> {
        self.shared.events.subscribe()
    }

    /// A list to read and edit, kept on the device and synced from now on.
    pub async fn list(&self, list: Uuid) -> Result<ListHandle, Error> {
        self.shared.store.ensure_list(list, None).await?;
        let cell = self.shared.cell(list);
        if cell.status.borrow().state != SyncState::Stopped {
            let _ = self.shared.commands.send(Command::Sync(list));
        }
        Ok(ListHandle::new(self.shared.clone(), cell))
    }

    /// The lists kept on the device.
    pub async fn lists(&self) -> Result<Vec<Uuid>, Error> {
        Ok(self
            .shared
            .store
            .lists()
            .await?
            .into_iter()
            .map(|(id, _)| id)
            .collect())
    }

    /// Keeps every list of `family` on the device and in sync over the one
    /// socket: lists created elsewhere appear, deleted ones are evicted
    /// (their unsent edits stay exportable through [`Client::unsent`]).
    pub async fn sync_family(&self, family: Uuid) -> Result<(), Error> {
        self.shared.store.add_family(family).await?;
        let _ = self.shared.commands.send(Command::Families);
        Ok(())
    }

    /// Re-reads the synced families' lists now (they are also re-read
    /// every `config.family_refresh`).
    pub fn refresh_families(&self) {
        let _ = self.shared.commands.send(Command::Families);
    }

    /// Syncs a stopped list again (after access was granted back).
    pub async fn resume(&self, list: Uuid) -> Result<(), Error> {
        self.shared.store.ensure_list(list, None).await?;
        let cell = self.shared.cell(list);
        cell.status.send_modify(|s| {
            s.stopped = None;
            s.state = SyncState::Offline;
        });
        let _ = self.shared.commands.send(Command::Sync(list));
        Ok(())
    }

    /// Stops keeping `list` on the device: it is no longer synced or
    /// listed; its unsent edits stay exportable through [`Client::unsent`].
    pub async fn forget(&self, list: Uuid) -> Result<(), Error> {
        self.shared.store.remove_list(list).await?;
        let _ = self.shared.commands.send(Command::Forget(list));
        Ok(())
    }

    /// The local edits of `list` the server never acknowledged as stored
    /// (updates v1, in the order they were made): what an app exports when
    /// a list was refused or deleted.
    pub async fn unsent(&self, list: Uuid) -> Result<Vec<Vec<u8>>, Error> {
        Ok(self.shared.store.undurable(list).await?)
    }

    /// Lists deleted on the server that still hold unsent local edits.
    pub async fn evicted_with_unsent(&self) -> Result<Vec<Uuid>, Error> {
        Ok(self.shared.store.removed_with_unsent().await?)
    }

    /// Lists whose document is in memory now.
    pub fn lists_in_memory(&self) -> usize {
        self.shared.cells().iter().filter(|c| c.is_loaded()).count()
    }

    /// The families the user belongs to (needs the network).
    pub async fn families(&self) -> Result<Vec<Family>, Error> {
        #[derive(Deserialize)]
        struct Families {
            families: Vec<Family>,
        }
        let found: Families = self.authorized(Method::GET, "/v1/families", None).await?;
        Ok(found.families)
    }

    /// Creates a family (needs the network).
    pub async fn create_family(&self, name: &str) -> Result<Uuid, Error> {
        let body = serde_json::json!({ "name": name });
        let created: Created = self
            .authorized(Method::POST, "/v1/families", Some(&body))
            .await?;
        Ok(created.id)
    }

    /// Creates a list in `family` (needs the network) and keeps it.
    pub async fn create_list(&self, family: Uuid, name: &str) -> Result<ListHandle, Error> {
        let body = serde_json::json!({ "name": name, "id": Uuid::now_v7() });
        let created: Created = self
            .authorized(
                Method::POST,
                &format!("/v1/families/{family}/lists"),
                Some(&body),
            )
            .await?;
        self.shared
            .store
            .ensure_list(created.id, Some(family))
            .await?;
        self.list(created.id).await
    }

    /// A REST call with the access token, refreshed once on a 401.
    async fn authorized<T: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<T, Error> {
        let shared = &self.shared;
        let session = shared.auth.access_token(&shared.rest).await?;
        let body = body.map(|b| b as &(dyn crate::rest::erased::Body + Sync));
        match shared
            .rest
            .call(method.clone(), path, Some(&session.access_token), body)
            .await
        {
            Err(RestError::Api { status: 401, .. }) => {
                let fresh = shared
                    .auth
                    .refresh(&shared.rest, &session.access_token)
                    .await?;
                Ok(shared
                    .rest
                    .call(method, path, Some(&fresh.access_token), body)
                    .await?)
            }
            other => Ok(other?),
        }
    }

    /// Stops syncing and closes the store: every edit made is on disk.
    pub async fn close(mut self) {
        for task in self.tasks.drain(..) {
            task.abort();
            let _ = task.await;
        }
        self.shared.store.close().await;
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl From<AuthError> for Error {
    fn from(e: AuthError) -> Error {
        Error::Auth(e)
    }
}

/// Drops documents nobody used for a while (they stay on disk).
async fn unload_idle(shared: std::sync::Weak<Shared>) {
    loop {
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let idle = shared.config.unload_after;
        for cell in shared.cells() {
            cell.unload_if_idle(idle);
        }
        drop(shared);
        tokio::time::sleep((idle / 4).clamp(Duration::from_millis(50), Duration::from_secs(30)))
            .await;
    }
}

/// One list: typed edits that work with or without a network and are on
/// the device's disk when they return.
pub struct ListHandle {
    shared: Arc<Shared>,
    cell: Arc<ListCell>,
}

impl std::fmt::Debug for ListHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListHandle")
            .field("id", &self.cell.id)
            .finish()
    }
}

impl Clone for ListHandle {
    fn clone(&self) -> Self {
        ListHandle::new(self.shared.clone(), self.cell.clone())
    }
}

impl Drop for ListHandle {
    fn drop(&mut self) {
        self.cell.handles.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A new item's details beyond its name.
#[derive(Debug, Clone, Default)]
pub struct ItemDetails {
    pub quantity: Option<String>,
    pub category: Option<String>,
    pub note: Option<String>,
}

impl ListHandle {
    fn new(shared: Arc<Shared>, cell: Arc<ListCell>) -> ListHandle {
        cell.handles.fetch_add(1, Ordering::Relaxed);
        ListHandle { shared, cell }
    }

    pub fn id(&self) -> Uuid {
        self.cell.id
    }

    /// The list's sync status.
    pub fn status(&self) -> watch::Receiver<ListStatus> {
        self.cell.status.subscribe()
    }

    /// The list as rows (items ordered by position).
    pub async fn snapshot(&self) -> Result<ListSnapshot, Error> {
        self.shared.read(self.cell.id).await
    }

    /// Any edit through the typed API, as one update.
    pub async fn edit<R>(
        &self,
        f: impl FnOnce(&ListDoc, &mut TransactionMut) -> Result<R, larder_crdt::CrdtError>,
    ) -> Result<R, Error> {
        self.shared.edit(self.cell.id, f).await
    }

    /// Adds an item at the end of the list; returns its id.
    pub async fn add_item(&self, name: &str, details: ItemDetails) -> Result<String, Error> {
        let id = Uuid::now_v7().to_string();
        let added_by = self
            .shared
            .auth
            .current()
            .await
            .map(|s| s.user_id.to_string());
        let last = self
            .snapshot()
            .await?
            .items
            .iter()
            .filter_map(|i| i.position.clone())
            .max();
        let item = NewItem {
            id: id.clone(),
            name: name.to_owned(),
            quantity: details.quantity,
            category: details.category,
            note: details.note,
            position: larder_crdt::position::between(last.as_deref(), None),
            added_by,
            added_at_ms: chrono::Utc::now().timestamp_millis(),
        };
        self.edit(|list, txn| list.add_item(txn, &item)).await?;
        Ok(id)
    }

    /// Changes some fields of an item (each merges on its own).
    pub async fn update_item(&self, id: &str, patch: ItemPatch) -> Result<(), Error> {
        self.edit(|list, txn| list.update_item(txn, id, &patch))
            .await
    }

    pub async fn rename_item(&self, id: &str, name: &str) -> Result<(), Error> {
        self.update_item(
            id,
            ItemPatch {
                name: Some(name.to_owned()),
                ..ItemPatch::default()
            },
        )
        .await
    }

    pub async fn set_quantity(&self, id: &str, quantity: Option<&str>) -> Result<(), Error> {
        self.update_item(
            id,
            ItemPatch {
                quantity: Some(quantity.map(str::to_owned)),
                ..ItemPatch::default()
            },
        )
        .await
    }

    /// Needed, in the cart, purchased.
    pub async fn set_status(&self, id: &str, status: ItemStatus) -> Result<(), Error> {
        self.update_item(
            id,
            ItemPatch {
                status: Some(status),
                ..ItemPatch::default()
            },
        )
        .await
    }

    /// Assigns an item to a member (a user id), or to nobody.
    pub async fn assign(&self, id: &str, assignee: Option<&str>) -> Result<(), Error> {
        self.update_item(
            id,
            ItemPatch {
                assignee: Some(assignee.map(str::to_owned)),
                ..ItemPatch::default()
            },
        )
        .await
    }

    /// Moves an item between two others (either may be absent: first or
    /// last place).
    pub async fn move_item(
        &self,
        id: &str,
        after: Option<&str>,
        before: Option<&str>,
    ) -> Result<(), Error> {
        let items = self.snapshot().await?.items;
        let position_of = |other: Option<&str>| -> Result<Option<String>, Error> {
            match other {
                None => Ok(None),
                Some(other) => items
                    .iter()
                    .find(|i| i.id == other)
                    .map(|i| i.position.clone())
                    .ok_or_else(|| {
                        Error::Crdt(larder_crdt::CrdtError::NotFound {
                            kind: "item",
                            id: other.to_owned(),
                        })
                    }),
            }
        };
        let low = position_of(after)?;
        let high = position_of(before)?;
        let position = larder_crdt::position::between(low.as_deref(), high.as_deref())
            .ok_or_else(|| Error::Invalid("cannot place the item there".into()))?;
        self.update_item(
            id,
            ItemPatch {
                position: Some(position),
                ..ItemPatch::default()
            },
        )
        .await
    }

    /// Removes an item; false when there was none.
    pub async fn remove_item(&self, id: &str) -> Result<bool, Error> {
        self.edit(|list, txn| Ok(list.remove_item(txn, id))).await
    }

    /// Places an order with a vendor.
    pub async fn place_order(&self, order: NewOrder) -> Result<(), Error> {
        self.edit(|list, txn| list.add_order(txn, &order)).await
    }

    /// Renames the list.
    pub async fn rename(&self, name: &str) -> Result<(), Error> {
        self.edit(|list, txn| list.set_name(txn, name)).await
    }
}
