//! The projector: turns a list's merged document into relational rows
//! (`larder_storage::projection`).
//!
//! Whoever stores an update tells the projector of its replica
//! ([`Projector::changed`]). A list is projected once it has been quiet for
//! the debounce, or at the latest the maximum delay after its first
//! unprojected change, so a busy list is still projected regularly. The
//! projection is read from the list's open room once everything the room
//! holds is stored, or else from the stored log (snapshot + tail), so it
//! never includes an update that is not durable ([`source`]). It is written
//! only if no newer projection is stored, and only what changed since the
//! projection this replica wrote before: replicas may project the same list
//! in any order. A periodic scan (and one at start-up) catches up
//! lists whose rows lag their log, e.g. because the replica that stored the
//! update died before projecting it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use larder_storage::projection::{Previous, Projected, Projections};
use larder_storage::{Store, StoreError};
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

mod rows;
mod source;

pub use rows::to_projection;
pub use source::{OpenLists, SettledList};
use source::{Recent, Source};

/// Projections running at once per process.
const CONCURRENCY: usize = 2;
/// Wait before projecting a list again after a failure.
const RETRY_AFTER: Duration = Duration::from_secs(5);
/// Lists read per catch-up scan.
const SCAN_BATCH: i64 = 500;

/// Timing of the projector.
#[derive(Debug, Clone, Copy)]
pub struct ProjectorSettings {
    /// Quiet time after a change before projecting.
    pub debounce: Duration,
    /// Longest a changed list waits, however busy it is.
    pub max_delay: Duration,
    /// Interval of the scan for lagging lists.
    pub scan_interval: Duration,
}

/// A handle to tell the projector a list changed.
#[derive(Clone)]
pub struct Projector {
    tx: mpsc::UnboundedSender<Uuid>,
    source: Source,
}

/// When a dirty list is due.
struct Dirty {
    first: Instant,
    last: Instant,
}

impl std::fmt::Debug for Projector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Projector")
            .field("reads_open_lists", &self.source.get().is_some())
            .finish()
    }
}

impl Projector {
    /// A projector that never projects (for servers without one, e.g. tests
    /// of rooms alone).
    pub fn disabled() -> Projector {
        let (tx, _) = mpsc::unbounded_channel();
        Projector {
            tx,
            source: Source::default(),
        }
    }

    /// Starts the projector task.
    pub fn spawn(
        store: Arc<dyn Store>,
        projections: Projections,
        settings: ProjectorSettings,
        shutdown: CancellationToken,
        tracker: &TaskTracker,
    ) -> Projector {
        let (tx, rx) = mpsc::unbounded_channel();
        let source = Source::default();
        let projector = Projector {
            tx: tx.clone(),
            source: source.clone(),
        };
        let worker = Worker {
            store,
            projections,
            source,
            recent: Recent::default(),
            settings,
            rx,
            requeue: tx,
            dirty: HashMap::new(),
            running: Arc::new(std::sync::Mutex::new(std::collections::HashSet::new())),
            slots: Arc::new(Semaphore::new(CONCURRENCY)),
            tracker: tracker.clone(),
        };
        tracker.spawn(worker.run(shutdown));
        projector
    }

    /// Reads lists open in `rooms` from their documents rather than from
    /// the log. Set once; later calls change nothing.
    pub fn read_open_lists_from(&self, rooms: Arc<dyn OpenLists>) {
        let _ = self.source.set(rooms);
    }

    /// `list_id` changed (an update was stored).
    pub fn changed(&self, list_id: Uuid) {
        let _ = self.tx.send(list_id);
    }
}

struct Worker {
    store: Arc<dyn Store>,
    projections: Projections,
    source: Source,
    recent: Recent,
    settings: ProjectorSettings,
    rx: mpsc::UnboundedReceiver<Uuid>,
    /// Lists changed again while being projected come back through here.
    requeue: mpsc::UnboundedSender<Uuid>,
    dirty: HashMap<Uuid, Dirty>,
    running: Arc<std::sync::Mutex<std::collections::HashSet<Uuid>>>,
    slots: Arc<Semaphore>,
    tracker: TaskTracker,
}

impl Worker {
    async fn run(mut self, shutdown: CancellationToken) {
        let mut scan = tokio::time::interval(self.settings.scan_interval);
        scan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let next_due = self.dirty.values().map(|d| self.due(d)).min();
            tokio::select! {
                _ = shutdown.cancelled() => return,
                changed = self.rx.recv() => match changed {
                    Some(list_id) => self.mark(list_id),
                    None => return,
                },
                _ = sleep_opt(next_due) => self.start_due(),
                _ = scan.tick() => self.scan().await,
            }
        }
    }

    fn due(&self, dirty: &Dirty) -> Instant {
        (dirty.last + self.settings.debounce).min(dirty.first + self.settings.max_delay)
    }

    fn mark(&mut self, list_id: Uuid) {
        let now = Instant::now();
        self.dirty
            .entry(list_id)
            .and_modify(|d| d.last = now)
            .or_insert(Dirty {
                first: now,
                last: now,
            });
    }

    /// Starts projecting every due list that is not being projected.
    fn start_due(&mut self) {
        let now = Instant::now();
        let due: Vec<Uuid> = self
            .dirty
            .iter()
            .filter(|(_, d)| self.due(d) <= now)
            .map(|(id, _)| *id)
            .collect();
        for list_id in due {
            {
                let mut running = self.running.lock().expect("projector lock poisoned");
                if running.contains(&list_id) {
                    // Still running: look again after another debounce.
                    if let Some(d) = self.dirty.get_mut(&list_id) {
                        d.first = now;
                        d.last = now;
                    }
                    continue;
                }
                running.insert(list_id);
            }
            self.dirty.remove(&list_id);
            let store = self.store.clone();
            let projections = self.projections.clone();
            let source = self.source.clone();
            let recent = self.recent.clone();
            let slots = self.slots.clone();
            let running = self.running.clone();
            let requeue = self.requeue.clone();
            self.tracker.spawn(async move {
                let result = {
                    let _slot = slots.acquire_owned().await;
                    project(store.as_ref(), &projections, &source, &recent, list_id).await
                };
                running
                    .lock()
                    .expect("projector lock poisoned")
                    .remove(&list_id);
                if let Err(e) = result {
                    tracing::warn!(%list_id, error = %e, "projection failed; will retry");
                    metrics::counter!("larder_projection_failures_total").increment(1);
                    tokio::time::sleep(RETRY_AFTER).await;
                    let _ = requeue.send(list_id);
                }
            });
        }
    }

    /// Marks lists whose rows lag their log, and records the lag.
    async fn scan(&mut self) {
        match self.projections.lag().await {
            Ok(lag) => {
                metrics::gauge!("larder_projection_lag_lists").set(lag.lists as f64);
                metrics::gauge!("larder_projection_lag_seqs").set(lag.seqs as f64);
            }
            Err(e) => tracing::debug!(error = %e, "cannot read projection lag"),
        }
        match self.projections.lagging(SCAN_BATCH).await {
            Ok(lists) => {
                for list_id in lists {
                    if !self.dirty.contains_key(&list_id) {
                        self.mark(list_id);
                    }
                }
            }
            Err(e) => tracing::debug!(error = %e, "cannot scan for lagging projections"),
        }
    }
}

async fn sleep_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Why a projection failed.
#[derive(Debug, thiserror::Error)]
pub enum ProjectError {
    #[error("cannot load the list: {0}")]
    Load(#[from] StoreError),
    #[error("the stored list does not load: {0}")]
    Damaged(#[from] larder_crdt::CrdtError),
    #[error("cannot write the projection: {0}")]
    Write(#[from] sqlx::Error),
    /// Reading the document made yrs panic; the projector goes on.
    #[error("reading the stored list panicked")]
    Panicked,
}

/// Projects `list_id` now, from its open room or its stored log.
async fn project(
    store: &dyn Store,
    projections: &Projections,
    source: &Source,
    recent: &Recent,
    list_id: Uuid,
) -> Result<Projected, ProjectError> {
    let started = std::time::Instant::now();
    let Some((seq, snapshot)) = source::read(source, store, list_id).await? else {
        recent.forget(list_id);
        return Ok(Projected::Gone);
    };
    let (projection, skipped) = to_projection(&snapshot);
    if skipped > 0 {
        tracing::debug!(%list_id, skipped, "parts of the document do not fit the schema; left out");
        metrics::counter!("larder_projection_skipped_total").increment(u64::from(skipped));
    }
    let previous = recent.get(list_id);
    let written = match &previous {
        Some(p) => {
            let since = Previous {
                seq: p.seq,
                projection: &p.projection,
            };
            projections
                .write_since(list_id, seq, &projection, since)
                .await
        }
        None => projections.write(list_id, seq, &projection).await,
    };
    let outcome = match written {
        Ok(outcome) => outcome,
        Err(e) => {
            recent.forget(list_id);
            return Err(e.into());
        }
    };
    match outcome {
        Projected::Applied { orders_skipped } => {
            if orders_skipped > 0 {
                tracing::debug!(%list_id, orders_skipped, "orders whose id another list holds were left out");
                metrics::counter!("larder_projection_skipped_total")
                    .increment(u64::from(orders_skipped));
            }
            recent.written(list_id, seq, projection, previous.as_ref());
            metrics::histogram!("larder_projection_seconds")
                .record(started.elapsed().as_secs_f64());
            metrics::counter!("larder_projections_total").increment(1);
        }
        Projected::Stale { .. } | Projected::Gone => recent.forget(list_id),
    }
    Ok(outcome)
}
