//! Group commit across rooms: one task gathers the batches of every room
//! that are ready and writes them in one transaction, so PostgreSQL sees far
//! fewer transactions than edits under load.

use std::collections::HashMap;
use std::sync::Arc;

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
    reply: oneshot::Sender<CommitOutcome>,
}

/// Handle rooms use to submit batches.
#[derive(Clone)]
pub struct Committer {
    tx: mpsc::Sender<CommitRequest>,
}

impl Committer {
    /// Starts the commit task on `tracker`. It runs until every handle is
    /// dropped, so batches submitted during shutdown are still written.
    pub fn spawn(store: Arc<dyn Store>, tracker: &tokio_util::task::TaskTracker) -> Committer {
        let (tx, rx) = mpsc::channel(4096);
        tracker.spawn(run(store, rx));
        Committer { tx }
    }

    /// Writes one batch; resolves when it is durable (or failed).
    pub async fn commit(&self, update: NewUpdate) -> CommitOutcome {
        let (reply, done) = oneshot::channel();
        if self.tx.send(CommitRequest { update, reply }).await.is_err() {
            return CommitOutcome::Failed("committer stopped".into());
        }
        done.await
            .unwrap_or_else(|_| CommitOutcome::Failed("committer stopped".into()))
    }
}

async fn run(store: Arc<dyn Store>, mut rx: mpsc::Receiver<CommitRequest>) {
    let mut batch = Vec::with_capacity(MAX_BATCHES_PER_TRANSACTION);
    while rx.recv_many(&mut batch, MAX_BATCHES_PER_TRANSACTION).await > 0 {
        let (updates, replies): (Vec<NewUpdate>, Vec<oneshot::Sender<CommitOutcome>>) =
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
                    let _ = reply.send(CommitOutcome::Failed(e.clone()));
                }
            }
        }
    }
}

/// Hands each room its range. A list with several batches in one
/// transaction got consecutive sequence numbers in submission order.
fn reply_each(
    lists: Vec<Uuid>,
    replies: Vec<oneshot::Sender<CommitOutcome>>,
    ranges: &HashMap<Uuid, SeqRange>,
) {
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
        let _ = reply.send(outcome);
    }
}
