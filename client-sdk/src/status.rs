//! What the app can watch: each list's sync status, the client's overall
//! status, and a stream of changes to items.

use std::time::SystemTime;

use uuid::Uuid;

/// Where a list (or the whole client) stands with the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncState {
    /// Not connected: offline mode, no network, or waiting to retry.
    #[default]
    Offline,
    /// Opening the socket or waiting for the server to take the list.
    Connecting,
    /// Subscribed, exchanging state or waiting for edits to be stored.
    Syncing,
    /// The server's state is here and every local edit is in its database.
    Synced,
    /// The server refused the list for good (see [`ListStatus::stopped`]);
    /// its local edits stay on the device and can be exported.
    Stopped,
}

/// A permanent refusal of one list by the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stopped {
    /// The close code (4403: access revoked, 4404: no such list, or deleted).
    pub code: u16,
    pub reason: String,
}

/// One list's status.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListStatus {
    pub state: SyncState,
    /// Local edits the server has not acknowledged as stored in its database.
    pub undurable: usize,
    /// When the server last acknowledged everything of this list as stored.
    pub last_durable_at: Option<SystemTime>,
    /// The latest error about this list (cleared when it syncs again).
    pub last_error: Option<String>,
    /// Set when the server refused the list for good.
    pub stopped: Option<Stopped>,
    /// Subscriptions sent for this list since the client opened: lets an app
    /// (and the tests) see that a refused list is not retried in a loop.
    pub subscribes: u64,
}

/// The client's overall status: the socket's, with the lists' counts.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Status {
    /// Offline, connecting, syncing (some list is not synced), synced.
    pub state: SyncState,
    /// Local edits of all lists the server has not stored yet.
    pub undurable: usize,
    /// When every kept list was last fully acknowledged as stored.
    pub last_durable_at: Option<SystemTime>,
    /// The latest error of the connection or of signing in.
    pub last_error: Option<String>,
    /// Whether the client holds a session (signed in).
    pub signed_in: bool,
    /// Sockets opened since the client opened.
    pub connects: u64,
}

/// Who made a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// An edit made through this client.
    Local,
    /// Received from the server: another device or member. The y-websocket
    /// protocol does not say whose edit an update is.
    Remote,
}

/// Items of a list that changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub list: Uuid,
    pub source: Source,
    /// Ids of items added, changed or removed.
    pub items: Vec<String>,
    /// Whether the list's name, description or status changed.
    pub meta: bool,
    /// Ids of orders placed or changed.
    pub orders: Vec<String>,
}

impl Change {
    /// Compares two readings of a list.
    pub(crate) fn between(
        list: Uuid,
        source: Source,
        before: &larder_crdt::ListSnapshot,
        after: &larder_crdt::ListSnapshot,
    ) -> Option<Change> {
        fn diff<T: PartialEq>(before: &[T], after: &[T], id: impl Fn(&T) -> &str) -> Vec<String> {
            use std::collections::HashMap;
            let old: HashMap<&str, &T> = before.iter().map(|r| (id(r), r)).collect();
            let new: HashMap<&str, &T> = after.iter().map(|r| (id(r), r)).collect();
            let mut changed: Vec<String> = new
                .iter()
                .filter(|(k, v)| old.get(*k) != Some(*v))
                .map(|(k, _)| (*k).to_owned())
                .chain(
                    old.keys()
                        .filter(|k| !new.contains_key(*k))
                        .map(|k| (*k).to_owned()),
                )
                .collect();
            changed.sort();
            changed
        }
        let items = diff(&before.items, &after.items, |i| &i.id);
        let orders = diff(&before.orders, &after.orders, |o| &o.id);
        let meta = before.meta != after.meta;
        (meta || !items.is_empty() || !orders.is_empty()).then_some(Change {
            list,
            source,
            items,
            meta,
            orders,
        })
    }
}

#[cfg(test)]
mod tests {
    use larder_crdt::{ItemRow, ItemStatus, ListSnapshot};

    use super::*;

    fn item(id: &str, name: &str) -> ItemRow {
        ItemRow {
            id: id.into(),
            name: name.into(),
            quantity: None,
            status: ItemStatus::Needed,
            category: None,
            note: None,
            assignee: None,
            position: None,
            added_by: None,
            added_at_ms: None,
        }
    }

    #[test]
    fn a_change_names_the_items_added_changed_and_removed() {
        let list = Uuid::new_v4();
        let before = ListSnapshot {
            items: vec![item("a", "Milk"), item("b", "Bread"), item("c", "Eggs")],
            ..ListSnapshot::default()
        };
        let after = ListSnapshot {
            items: vec![item("a", "Milk"), item("b", "Rye bread"), item("d", "Tea")],
            ..ListSnapshot::default()
        };
        let change = Change::between(list, Source::Remote, &before, &after).expect("a change");
        assert_eq!(change.items, ["b", "c", "d"]);
        assert!(!change.meta);
        assert!(change.orders.is_empty());
        assert_eq!(change.source, Source::Remote);
        assert!(Change::between(list, Source::Local, &after, &after).is_none());
    }
}
