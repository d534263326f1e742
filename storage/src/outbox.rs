//! The outbox that sends shares over WhatsApp, and what WhatsApp reports
//! back. Jobs are claimed under a lease, with the vendor's number reserved
//! for the pacing interval; a job is marked before its request goes out,
//! so one found marked may have been sent. Statuses reported by webhooks
//! are stored once per (message, status) and move a share only forward
//! (`pending < sent < delivered < read`; `failed` is final), whatever
//! order they arrive in; replies open the number's 24-hour window.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::directory::DirResult;
use crate::vendors::{Reply, StatusEvent};

pub(crate) mod queries;
pub(crate) use queries::outbox_store;

/// What a status webhook did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusApplied {
    /// Stored and applied to this share (the share may not have moved if
    /// the status is older than the one it shows).
    Applied(Uuid),
    /// Seen before.
    Duplicate,
    /// Not about a message of ours.
    Unknown,
}

/// An outbox job claimed by a worker, with what sending it needs.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ClaimedJob {
    pub job_id: Uuid,
    pub share_id: Uuid,
    /// Attempts including this one.
    pub attempts: i32,
    /// Set when a request for this job went out and its outcome is not
    /// known (a timeout, or a worker that died mid-request).
    pub request_started_at: Option<DateTime<Utc>>,
    pub wa_number: String,
    pub window_open_until: Option<DateTime<Utc>>,
    pub vendor_deleted_at: Option<DateTime<Utc>>,
    pub share_status: String,
    pub rendered_text: Option<String>,
    pub snapshot: String,
    pub snapshot_seq: i64,
}

/// How a job ends, or when it runs again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobOutcome {
    /// The API accepted the message.
    Sent { wamid: String, kind: MessageKind },
    /// Try again at `at`.
    Retry { at: DateTime<Utc>, error: String },
    /// The request's outcome is unknown: wait for a status webhook until
    /// `until`, then send again.
    Unsure { until: DateTime<Utc>, error: String },
    /// Permanently failed: the share shows `code` and `message`.
    Failed { code: Option<i32>, message: String },
    /// Nothing left to send (a status webhook settled the share).
    Done,
}

/// The kind of message a share went out as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    Text,
    Template,
}

impl MessageKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageKind::Text => "text",
            MessageKind::Template => "template",
        }
    }
}

/// Jobs waiting to be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxDepth {
    pub jobs: i64,
    pub oldest: Option<DateTime<Utc>>,
}

/// Storage of the outbox and of WhatsApp's reports.
#[async_trait]
pub trait OutboxStore: Send + Sync + std::fmt::Debug + 'static {
    /// Stores a status webhook once and moves the share (found by message
    /// id, else by `share_id` from the callback data) forward.
    async fn record_status(
        &self,
        event: &StatusEvent,
        share_id: Option<Uuid>,
    ) -> DirResult<StatusApplied>;

    /// Stores an inbound message once and opens its number's 24-hour
    /// window. It is recorded on the share whose message it answers
    /// (`context`, the quoted message's id), else on the latest share sent
    /// to that number, when the number is a vendor of one family only (so
    /// no family sees another's replies). `false` when seen before.
    async fn record_reply(
        &self,
        reply: &Reply,
        context: Option<&str>,
        window: Duration,
    ) -> DirResult<bool>;

    /// Claims the next due job whose number may be sent to now, for
    /// `lease`, and reserves the number until `now + pacing`.
    async fn claim_job(
        &self,
        worker: &str,
        now: DateTime<Utc>,
        lease: Duration,
        pacing: Duration,
    ) -> DirResult<Option<ClaimedJob>>;

    /// Notes that the job's request is about to go out, and holds its
    /// number until `pacing` from now (so two sends to one number are
    /// `pacing` apart however long the first took to leave). `false` when
    /// the job is no longer this worker's.
    async fn start_request(
        &self,
        job: &ClaimedJob,
        worker: &str,
        pacing: Duration,
    ) -> DirResult<bool>;

    /// Ends or reschedules a claimed job.
    async fn finish_job(
        &self,
        job: &ClaimedJob,
        worker: &str,
        outcome: &JobOutcome,
    ) -> DirResult<()>;

    /// Jobs not done, and when the oldest was created.
    async fn outbox_depth(&self) -> DirResult<OutboxDepth>;
}

/// The outbox of whichever database the process uses.
#[derive(Clone, Debug)]
pub struct Outbox(Arc<dyn OutboxStore>);

impl Outbox {
    pub fn new(store: impl OutboxStore) -> Self {
        Outbox(Arc::new(store))
    }
}

impl std::ops::Deref for Outbox {
    type Target = dyn OutboxStore;

    fn deref(&self) -> &Self::Target {
        self.0.as_ref()
    }
}

/// `DateTime` plus a std duration, saturating at the largest time.
pub fn after(at: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(d)
        .ok()
        .and_then(|d| at.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}
