//! Larder's offline-first client SDK.
//!
//! A [`Client`] keeps a family's lists on the device: every edit made
//! through a [`ListHandle`] is in the device's store ([`store`]) before the
//! call returns, with or without a network. In the background one socket
//! (`GET /v1/sync`, many lists) keeps every kept list in sync with the
//! server, reconnecting with backoff to whichever replica answers, and the
//! server's durable acknowledgements say which local edits are in its
//! database: [`ListStatus::undurable`] counts the rest.
//!
//! ```no_run
//! # async fn example() -> Result<(), larder_client::Error> {
//! use larder_client::{Client, Config, ItemDetails};
//! let client = Client::open(Config::new("./larder-phone", vec!["http://127.0.0.1:8080".into()])).await?;
//! client.sign_in("ann@example.com", "correct horse battery staple").await?;
//! let family = client.families().await?[0].id;
//! client.sync_family(family).await?;
//! let list = client.create_list(family, "Weekly shop").await?;
//! list.add_item("Milk", ItemDetails::default()).await?; // on disk now
//! let mut status = list.status();
//! status.wait_for(|s| s.undurable == 0).await.ok(); // in the server's database now
//! # Ok(()) }
//! ```
//!
//! [`SyncClient`] is the plain one-list y-websocket client the server's
//! tests use.
#![forbid(unsafe_code)]

mod client;
pub mod config;
mod family;
mod lists;
pub mod rest;
pub mod session;
pub mod single;
pub mod status;
pub mod store;
mod sync;

pub use client::{Client, Family, ItemDetails, ListHandle};
pub use config::Config;
pub use lists::RECEIPTS;
pub use rest::RestError;
pub use session::{AuthError, Session};
pub use single::{ClientError, SyncClient, SyncStatus};
pub use status::{Change, ListStatus, Source, Status, Stopped, SyncState};
pub use sync::MAX_LISTS_PER_SOCKET;
use uuid::Uuid;

/// Errors of the SDK.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The device's store failed: the edit was not made.
    #[error(transparent)]
    Store(#[from] store::StoreError),
    /// The stored document of a list does not load.
    #[error("the stored document of list {0} is damaged")]
    Damaged(Uuid),
    /// The edit does not fit the list's schema (bad name, unknown item).
    #[error(transparent)]
    Crdt(larder_crdt::CrdtError),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Auth(AuthError),
    #[error(transparent)]
    Rest(#[from] RestError),
    /// The server sent something that does not parse.
    #[error("protocol: {0}")]
    Protocol(String),
}
