//! The Larder list document on top of [`yrs`], and helpers around `yrs::sync`.
//!
//! Every grocery list is one Yjs document with three root maps (`meta`,
//! `items`, `orders`); the layout is the contract with every client and is
//! documented in the README. This crate knows no I/O: it reads and writes
//! documents and encodes protocol messages, nothing more.
//!
//! - [`schema`]: field names and the closed value sets (statuses).
//! - [`list`]: [`ListDoc`], a typed read/write API over one list document,
//!   and the plain row structs the projector and tests read merged state into.
//!   Foreign clients may write anything: reading skips and counts what does
//!   not fit, it never panics.
//! - [`position`]: fractional indexes for the `position` field.
//! - [`protocol`]: splitting and encoding y-websocket messages with
//!   `yrs::sync`, plus Larder's durable-acknowledgement extension.
//! - [`validate`]: bounded, iterative checks of what clients send, run
//!   before yrs decodes it.
//! - [`state`]: loading a document from a snapshot plus log tail and merging
//!   update logs.
#![forbid(unsafe_code)]

pub mod list;
pub mod mux;
pub mod nesting;
pub mod position;
pub mod protocol;
pub mod schema;
pub mod state;
pub mod validate;

pub use list::{
    ItemPatch, ItemRow, ListDoc, ListMeta, ListSnapshot, NewItem, NewOrder, OrderItemRow, OrderRow,
    SkipCounts,
};
pub use schema::{ItemStatus, ListStatus, OrderStatus};

/// Errors of the typed document API.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CrdtError {
    /// The item or order does not exist in the document.
    #[error("{kind} {id} does not exist")]
    NotFound { kind: &'static str, id: String },
    /// A value does not fit the document schema.
    #[error("invalid {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    /// Bytes that should hold an update could not be decoded.
    #[error("update does not decode: {0}")]
    Decode(String),
}
