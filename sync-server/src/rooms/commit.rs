//! Group commit across rooms: one task gathers the batches rooms hand it
//! over a commit window and writes them in one transaction, so PostgreSQL
//! sees far fewer transactions than edits under load.
//!
//! The window costs no latency between clients: rooms broadcast (and relay)
//! an update before it is stored. It delays only the durable acknowledgement.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use larder_storage::{NewUpdate, SeqRange, Store};
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

/// Most batches written in one transaction.
const MAX_BATCHES_PER_TRANSACTION: usize = 256;

/// Outcome of one room's batch.
#[derive(Debug)]
pub enum CommitOutcome {
    Stored(SeqRange),
    /// The list was deleted; nothing was written.
    ListGone,
    /// Storage failed; the room keeps the batch and retries.
    Failed(Arc<str>),
}

struct CommitRequest {
    update: NewUpdate,
    reply: Reply,
}

/// Where a batch's outcome goes.
enum Reply {
    /// A caller awaiting it.
    Once(oneshot::Sender<CommitOutcome>),
    /// A room's queue of outcomes (a room has one batch in flight at most).
    Room(mpsc::UnboundedSender<CommitOutcome>),
}

impl Reply {
    fn send(self, outcome: CommitOutcome) {
        // A caller or room that went away no longer needs the answer.
        match self {
            Reply::Once(tx) => {
                let _ = tx.send(outcome);
            }
            Reply::Room(tx) => {
                let _ = tx.send(outcome);
            }
        }
    }
}

/// Handle rooms use to submit batches.
#[derive(Clone)]
pub struct Committer {
    tx: mpsc::Sender<CommitRequest>,
}

impl Committer {
    /// Starts the commit task on `tracker`. A transaction gathers what
    /// arrives within `window` of its first batch. The task runs until every
    /// handle is dropped, so batches submitted during shutdown are written.
    pub fn spawn(
        store: Arc<dyn Store>,
        window: Duration,
        tracker: &tokio_util::task::TaskTracker,
    ) -> Committer {
        let (tx, rx) = mpsc::channel(4096);
        tracker.spawn(run(store, window, rx));
        Committer { tx }
    }

    /// Writes one batch; resolves when it is durable (or failed).
    pub async fn commit(&self, update: NewUpdate) -> CommitOutcome {
        let (reply, done) = oneshot::channel();
        let request = CommitRequest {
            update,
            reply: Reply::Once(reply),
        };
        if self.tx.send(request).await.is_err() {
            return CommitOutcome::Failed("committer stopped".into());
        }
        done.await
            .unwrap_or_else(|_| CommitOutcome::Failed("committer stopped".into()))
    }

    /// Hands a room's batch over without waiting: the outcome arrives on
    /// `reply`. A full queue (storage far behind) or a stopped committer
    /// answers `Failed` at once, and the room retries later.
    pub fn submit(&self, update: NewUpdate, reply: mpsc::UnboundedSender<CommitOutcome>) {
        let request = CommitRequest {
            update,
            reply: Reply::Room(reply),
        };
        if let Err(e) = self.tx.try_send(request) {
            let (request, why) = match e {
                mpsc::error::TrySendError::Full(r) => (r, "commit queue full"),
                mpsc::error::TrySendError::Closed(r) => (r, "committer stopped"),
            };
            request.reply.send(CommitOutcome::Failed(why.into()));
        }
    }
}

async fn run(store: Arc<dyn Store>, window: Duration, mut rx: mpsc::Receiver<CommitRequest>) {
    let mut batch = Vec::with_capacity(MAX_BATCHES_PER_TRANSACTION);
    while rx.recv_many(&mut batch, MAX_BATCHES_PER_TRANSACTION).await > 0 {
        gather(&mut rx, &mut batch, window).await;
        let (updates, replies): (Vec<NewUpdate>, Vec<Reply>) =
            batch.drain(..).map(|r| (r.update, r.reply)).unzip();
        let lists: Vec<Uuid> = updates.iter().map(|u| u.list_id).collect();
        let started = std::time::Instant::now();
        let result = store.append(updates).await;
        metrics::histogram!("larder_commit_seconds").record(started.elapsed().as_secs_f64());
        metrics::counter!("larder_commit_transactions_total").increment(1);
        metrics::counter!("larder_committed_batches_total").increment(lists.len() as u64);
        match result {
            Ok(ranges) => reply_each(lists, replies, &ranges),
            Err(e) => {
                tracing::warn!(error = %e, batches = lists.len(), "group commit failed");
                let e: Arc<str> = e.to_string().into();
                for reply in replies {
                    reply.send(CommitOutcome::Failed(e.clone()));
                }
            }
        }
    }
}

/// Adds what arrives within `window` to `batch`, up to a transaction's limit.
async fn gather(
    rx: &mut mpsc::Receiver<CommitRequest>,
    batch: &mut Vec<CommitRequest>,
    window: Duration,
) {
    let deadline = tokio::time::Instant::now() + window;
    while batch.len() < MAX_BATCHES_PER_TRANSACTION {
        let room = MAX_BATCHES_PER_TRANSACTION - batch.len();
        match tokio::time::timeout_at(deadline, rx.recv_many(batch, room)).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
}

/// Hands each room its range. A list with several batches in one
/// transaction got consecutive sequence numbers in submission order.
fn reply_each(lists: Vec<Uuid>, replies: Vec<Reply>, ranges: &HashMap<Uuid, SeqRange>) {
    let mut next: HashMap<Uuid, u64> = ranges.iter().map(|(id, r)| (*id, r.first)).collect();
    for (list_id, reply) in lists.into_iter().zip(replies) {
        let outcome = match next.get_mut(&list_id) {
            Some(seq) => {
                let range = SeqRange {
                    first: *seq,
                    last: *seq,
                };
                *seq += 1;
                CommitOutcome::Stored(range)
            }
            None => CommitOutcome::ListGone,
        };
        reply.send(outcome);
    }
}
