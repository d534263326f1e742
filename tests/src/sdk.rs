//! Helpers for tests of the offline-first SDK ([`larder_client::Client`])
//! against real servers.

use std::path::PathBuf;
use std::time::Duration;

use larder_client::{Client, Config, ListHandle, ListStatus, Status, SyncState};
use uuid::Uuid;

use crate::{Account, TEST_PASSWORD, TestApp};

/// A fresh data directory (removed when dropped).
#[derive(Debug)]
pub struct DataDir(pub PathBuf);

impl DataDir {
    pub fn new() -> DataDir {
        let dir = std::env::temp_dir().join(format!("larder-sdk-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("create a data directory");
        DataDir(dir)
    }
}

impl Default for DataDir {
    fn default() -> Self {
        DataDir::new()
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A client configuration for `dir` talking to `servers`, with short
/// backoffs so tests do not wait on long retries.
pub fn config(dir: &DataDir, servers: &[&TestApp]) -> Config {
    let mut config = Config::new(
        &dir.0,
        servers
            .iter()
            .map(|app| format!("http://{}", app.addr))
            .collect(),
    );
    config.backoff_initial = Duration::from_millis(100);
    config.backoff_max = Duration::from_secs(1);
    config
}

/// Opens a client on `config` and signs `account` in.
pub async fn signed_in(config: Config, account: &Account) -> Client {
    let client = Client::open(config).await.expect("open the client");
    client
        .sign_in(&account.email, TEST_PASSWORD)
        .await
        .expect("sign in");
    client
}

/// Waits until the list's status passes `check`.
pub async fn wait_list(list: &ListHandle, what: &str, check: impl FnMut(&ListStatus) -> bool) {
    let mut status = list.status();
    let waited = tokio::time::timeout(Duration::from_secs(30), status.wait_for(check))
        .await
        .map(|r| r.is_ok());
    assert!(
        waited == Ok(true),
        "timed out waiting for list {}: {what}; status {:?}",
        list.id(),
        *status.borrow()
    );
}

/// Waits until the client's status passes `check`.
pub async fn wait_client(client: &Client, what: &str, check: impl FnMut(&Status) -> bool) {
    let mut status = client.status();
    let waited = tokio::time::timeout(Duration::from_secs(30), status.wait_for(check))
        .await
        .map(|r| r.is_ok());
    assert!(
        waited == Ok(true),
        "timed out waiting for the client: {what}; status {:?}",
        *status.borrow()
    );
}

/// Waits until the list is synced with nothing left unstored.
pub async fn wait_durable(list: &ListHandle) {
    wait_list(list, "every edit stored", |s| {
        s.state == SyncState::Synced && s.undurable == 0
    })
    .await;
}

/// Item names of a list, sorted.
pub async fn item_names(list: &ListHandle) -> Vec<String> {
    let mut names: Vec<String> = list
        .snapshot()
        .await
        .expect("read the list")
        .items
        .into_iter()
        .map(|i| i.name)
        .collect();
    names.sort();
    names
}
