//! Vendors and the shares that send them a frozen list over WhatsApp,
//! with what WhatsApp reported about each (the sending itself is
//! [`crate::outbox`]).
//!
//! A share and its outbox job are created in one transaction, keyed by
//! (list, snapshot version, vendor): asking again for the same version
//! finds the first share and sends nothing more.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::directory::DirResult;

pub(crate) mod queries;
pub(crate) use queries::vendor_store;

/// A family's vendor.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Vendor {
    pub id: Uuid,
    pub family_id: Uuid,
    pub name: String,
    /// E.164 digits without `+`.
    pub whatsapp_number: String,
    pub notes: Option<String>,
    pub created_by: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub deleted_at: Option<DateTime<Utc>>,
}

/// A vendor to create.
#[derive(Debug, Clone)]
pub struct NewVendor {
    pub id: Uuid,
    pub family_id: Uuid,
    pub name: String,
    pub whatsapp_number: String,
    pub notes: Option<String>,
    pub created_by: Uuid,
}

/// Changes to a vendor; `None` leaves a field alone.
#[derive(Debug, Clone, Default)]
pub struct VendorPatch {
    pub name: Option<String>,
    pub whatsapp_number: Option<String>,
    /// `Some(None)` removes the notes.
    pub notes: Option<Option<String>>,
}

/// Why a vendor was not written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VendorWrite {
    Done(Vendor),
    /// Another vendor of the family has this number.
    NumberTaken,
    /// No such (live) vendor.
    Missing,
}

/// A share of a list with a vendor.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Share {
    pub id: Uuid,
    pub list_id: Uuid,
    pub vendor_id: Uuid,
    pub shared_by: Option<Uuid>,
    /// The log sequence the snapshot was frozen at: its version.
    pub snapshot_seq: i64,
    /// `pending` | `sent` | `delivered` | `read` | `failed`.
    pub status: String,
    /// The snapshot, as JSON text.
    pub snapshot: String,
    pub rendered_text: Option<String>,
    pub note: Option<String>,
    pub error_code: Option<i32>,
    pub error_message: Option<String>,
    /// Why a pending share waits (sends disabled, rate limits, ...).
    pub detail: Option<String>,
    pub link_id: Option<Uuid>,
    pub link_expires_at: Option<DateTime<Utc>>,
    pub link_revoked_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A share to create, with its vendor link and outbox job.
#[derive(Debug, Clone)]
pub struct NewShare {
    pub id: Uuid,
    pub list_id: Uuid,
    pub vendor_id: Uuid,
    pub shared_by: Uuid,
    pub snapshot_seq: i64,
    pub snapshot: String,
    pub rendered_text: String,
    pub note: Option<String>,
    /// SHA-256 (hex) of the page token.
    pub page_token_hash: String,
    pub link_expires_at: DateTime<Utc>,
    /// Why it will wait, known at creation (e.g. sends are disabled).
    pub detail: Option<String>,
}

/// What creating a share did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShareCreated {
    New(Share),
    /// This version was shared with this vendor already: nothing new is
    /// sent, unless that share had failed (it is then tried again).
    Exists(Share),
}

/// A status WhatsApp reported for a message of a share.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct StatusEvent {
    pub wamid: String,
    /// `sent` | `delivered` | `read` | `failed`.
    pub status: String,
    pub occurred_at: DateTime<Utc>,
    pub error_code: Option<i32>,
    pub error_title: Option<String>,
}

/// A message a vendor sent to the business number.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Reply {
    pub id: Uuid,
    pub wamid: String,
    pub wa_number: String,
    pub share_id: Option<Uuid>,
    /// `text`, `button` or the WhatsApp message type.
    pub kind: String,
    pub body: Option<String>,
    pub sender_name: Option<String>,
    pub received_at: DateTime<Utc>,
}

/// Storage of vendors and their shares.
#[async_trait]
pub trait VendorStore: Send + Sync + std::fmt::Debug + 'static {
    async fn create_vendor(&self, vendor: &NewVendor) -> DirResult<VendorWrite>;

    /// The family's live vendors by id after `after`.
    async fn family_vendors(
        &self,
        family_id: Uuid,
        after: Option<Uuid>,
        limit: i64,
    ) -> DirResult<Vec<Vendor>>;

    /// A vendor, deleted or not.
    async fn vendor(&self, id: Uuid) -> DirResult<Option<Vendor>>;

    async fn update_vendor(&self, id: Uuid, patch: &VendorPatch) -> DirResult<VendorWrite>;

    /// Marks a live vendor deleted; its shares and orders stay.
    async fn delete_vendor(&self, id: Uuid) -> DirResult<bool>;

    /// Creates the share, its read-only link and its outbox job in one
    /// transaction, unless this version was shared with this vendor before.
    async fn create_share(&self, share: &NewShare) -> DirResult<ShareCreated>;

    async fn share(&self, id: Uuid) -> DirResult<Option<Share>>;

    /// The share a page token opens.
    async fn share_by_page_token(&self, token_hash: &str) -> DirResult<Option<Share>>;

    /// The list's shares, newest first, ids before `before`.
    async fn list_shares(
        &self,
        list_id: Uuid,
        before: Option<Uuid>,
        limit: i64,
    ) -> DirResult<Vec<Share>>;

    /// How many shares the family's lists made since `since`, and when
    /// the first of them was made.
    async fn family_shares_since(
        &self,
        family_id: Uuid,
        since: DateTime<Utc>,
    ) -> DirResult<(i64, Option<DateTime<Utc>>)>;

    /// The statuses reported for the share's messages, oldest first.
    async fn share_statuses(&self, share_id: Uuid) -> DirResult<Vec<StatusEvent>>;

    /// The vendor's replies recorded on the share, oldest first.
    async fn share_replies(&self, share_id: Uuid) -> DirResult<Vec<Reply>>;
}

/// The vendor store of whichever database the process uses.
#[derive(Clone, Debug)]
pub struct Vendors(Arc<dyn VendorStore>);

impl Vendors {
    pub fn new(store: impl VendorStore) -> Self {
        Vendors(Arc::new(store))
    }
}

impl std::ops::Deref for Vendors {
    type Target = dyn VendorStore;

    fn deref(&self) -> &Self::Target {
        self.0.as_ref()
    }
}

/// Rank of a share or message status: statuses only move up.
pub fn status_rank(status: &str) -> u8 {
    match status {
        "pending" => 0,
        "sent" => 1,
        "delivered" => 2,
        "read" => 3,
        "failed" => 4,
        _ => 0,
    }
}
