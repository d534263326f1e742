//! The projector: turns a list's merged document into relational rows
//! (`larder_storage::projection`).
//!
//! Whoever stores an update tells the projector of its replica
//! ([`Projector::changed`]). A list is projected once it has been quiet for
//! the debounce, or at the latest the maximum delay after its first
//! unprojected change, so a busy list is still projected regularly. The
//! projection is read from the stored log (snapshot + tail) at its head
//! sequence, so it never includes an update that is not durable, and is
//! written only if no newer projection is stored: replicas may project the
//! same list in any order. A periodic scan (and one at start-up) catches up
//! lists whose rows lag their log, e.g. because the replica that stored the
//! update died before projecting it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use larder_crdt::ListSnapshot;
use larder_crdt::list::ListDoc;
use larder_storage::projection::{
    Projected, ProjectedItem, ProjectedOrder, ProjectedOrderItem, Projection, Projections,
};
use larder_storage::{Store, StoreError};
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;
use yrs::{Doc, Transact};

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
#[derive(Clone, Debug)]
pub struct Projector {
    tx: mpsc::UnboundedSender<Uuid>,
}

/// When a dirty list is due.
struct Dirty {
    first: Instant,
    last: Instant,
}

impl Projector {
    /// A projector that never projects (for servers without one, e.g. tests
    /// of rooms alone).
    pub fn disabled() -> Projector {
        let (tx, _) = mpsc::unbounded_channel();
        Projector { tx }
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
        let projector = Projector { tx: tx.clone() };
        let worker = Worker {
            store,
            projections,
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

    /// `list_id` changed (an update was stored).
    pub fn changed(&self, list_id: Uuid) {
        let _ = self.tx.send(list_id);
    }
}

struct Worker {
    store: Arc<dyn Store>,
    projections: Projections,
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
            let slots = self.slots.clone();
            let running = self.running.clone();
            let requeue = self.requeue.clone();
            self.tracker.spawn(async move {
                let result = {
                    let _slot = slots.acquire_owned().await;
                    project(store.as_ref(), &projections, list_id).await
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

/// Projects `list_id` from its stored state now.
pub async fn project(
    store: &dyn Store,
    projections: &Projections,
    list_id: Uuid,
) -> Result<Projected, ProjectError> {
    let started = std::time::Instant::now();
    let stored = match store.load_doc(list_id).await {
        Ok(stored) => stored,
        Err(StoreError::ListNotFound(_)) => return Ok(Projected::Gone),
        Err(e) => return Err(e.into()),
    };
    // A document yrs cannot read must not take the projector down.
    let read = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let doc = Doc::new();
        larder_crdt::state::apply_stored(&doc, stored.updates())?;
        Ok::<_, larder_crdt::CrdtError>(ListDoc::new(&doc).read(&doc.transact()))
    }));
    let snapshot = match read {
        Ok(snapshot) => snapshot?,
        Err(_) => {
            tracing::error!(%list_id, "reading the stored list panicked; its rows are left as they are");
            return Err(ProjectError::Panicked);
        }
    };
    let (projection, skipped) = to_projection(&snapshot);
    if skipped > 0 {
        tracing::debug!(%list_id, skipped, "parts of the document do not fit the schema; left out");
        metrics::counter!("larder_projection_skipped_total").increment(u64::from(skipped));
    }
    let outcome = projections
        .write(list_id, stored.head_seq, &projection)
        .await?;
    if let Projected::Applied { orders_skipped } = outcome {
        if orders_skipped > 0 {
            tracing::debug!(%list_id, orders_skipped, "orders whose id another list holds were left out");
            metrics::counter!("larder_projection_skipped_total")
                .increment(u64::from(orders_skipped));
        }
        metrics::histogram!("larder_projection_seconds").record(started.elapsed().as_secs_f64());
        metrics::counter!("larder_projections_total").increment(1);
    }
    Ok(outcome)
}

/// Counts what a projection leaves out.
struct Skips(u32);

impl Skips {
    /// A timestamp PostgreSQL can store (years 1 to 9999), else nothing.
    fn millis(&mut self, ms: Option<i64>) -> Option<DateTime<Utc>> {
        let ms = ms?;
        let at = DateTime::from_timestamp_millis(ms).filter(|at| {
            use chrono::Datelike;
            (1..=9999).contains(&at.year())
        });
        if at.is_none() {
            self.0 += 1;
        }
        at
    }

    /// Text PostgreSQL can store (no NUL), else nothing.
    fn text(&mut self, value: &Option<String>) -> Option<String> {
        match value {
            Some(v) if v.contains('\0') => {
                self.0 += 1;
                None
            }
            other => other.clone(),
        }
    }

    /// An id in canonical form (lower-case, hyphenated), so two keys of a
    /// document can never name one row.
    fn id(&mut self, text: &str) -> Option<Uuid> {
        let id = Uuid::parse_str(text)
            .ok()
            .filter(|id| id.hyphenated().to_string() == text);
        if id.is_none() {
            self.0 += 1;
        }
        id
    }

    fn optional_id(&mut self, text: &Option<String>) -> Option<Uuid> {
        text.as_deref().and_then(|t| self.id(t))
    }
}

/// The rows of a snapshot, and how much of the document was left out
/// (counted by larder-crdt, plus what PostgreSQL could not store: ids not in
/// canonical UUID form, text with NUL, dates out of range).
pub fn to_projection(snapshot: &ListSnapshot) -> (Projection, u32) {
    let mut skips =
        Skips(snapshot.skipped.items + snapshot.skipped.orders + snapshot.skipped.fields);
    let mut items = Vec::with_capacity(snapshot.items.len());
    for item in &snapshot.items {
        let Some(item_id) = skips.id(&item.id) else {
            continue;
        };
        let Some(name) = skips.text(&Some(item.name.clone())) else {
            continue;
        };
        items.push(ProjectedItem {
            item_id,
            name,
            quantity: skips.text(&item.quantity),
            status: item.status.as_str().to_owned(),
            category: skips.text(&item.category),
            note: skips.text(&item.note),
            assignee: skips.text(&item.assignee),
            position: skips.text(&item.position),
            added_by: skips.text(&item.added_by),
            added_at: skips.millis(item.added_at_ms),
        });
    }
    let mut orders = Vec::with_capacity(snapshot.orders.len());
    for order in &snapshot.orders {
        let Some(order_id) = skips.id(&order.id) else {
            continue;
        };
        let mut lines = Vec::with_capacity(order.items.len());
        for line in &order.items {
            let Some(name) = skips.text(&Some(line.name.clone())) else {
                continue;
            };
            lines.push(ProjectedOrderItem {
                item_id: skips.optional_id(&line.item_id),
                name,
                quantity: skips.text(&line.quantity),
            });
        }
        orders.push(ProjectedOrder {
            order_id,
            vendor_id: skips.optional_id(&order.vendor_id),
            status: order.status.as_str().to_owned(),
            placed_by: skips.text(&order.placed_by),
            placed_at: skips.millis(order.placed_at_ms),
            note: skips.text(&order.note),
            share_id: skips.optional_id(&order.share_id),
            items: lines,
        });
    }
    let projection = Projection {
        name: skips.text(&snapshot.meta.name).unwrap_or_default(),
        status: snapshot
            .meta
            .status
            .unwrap_or(larder_crdt::ListStatus::Active)
            .as_str()
            .to_owned(),
        items,
        orders,
    };
    (projection, skips.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use larder_crdt::list::{ItemRow, ListMeta, OrderRow};
    use larder_crdt::{ItemStatus, OrderStatus};

    fn item(id: &str, name: &str) -> ItemRow {
        ItemRow {
            id: id.to_owned(),
            name: name.to_owned(),
            quantity: None,
            status: ItemStatus::Needed,
            category: None,
            note: Some("ok".into()),
            assignee: None,
            position: None,
            added_by: None,
            added_at_ms: Some(-1_000_000_000_000_000),
        }
    }

    #[test]
    fn what_postgresql_cannot_store_is_left_out_and_counted() {
        let id = Uuid::new_v4().to_string();
        let upper = Uuid::new_v4().to_string().to_uppercase();
        let snapshot = ListSnapshot {
            meta: ListMeta {
                name: Some("Weekly".into()),
                ..ListMeta::default()
            },
            items: vec![
                item(&id, "Milk"),
                item(&upper, "Shouting"),
                item(&Uuid::new_v4().to_string(), "nul\0name"),
            ],
            orders: vec![OrderRow {
                id: format!("{{{}}}", Uuid::new_v4()),
                vendor_id: None,
                status: OrderStatus::Placed,
                items: vec![],
                placed_by: None,
                placed_at_ms: None,
                note: None,
                share_id: None,
            }],
            skipped: Default::default(),
        };
        let (projection, skipped) = to_projection(&snapshot);
        assert_eq!(
            projection.items.len(),
            1,
            "only the canonical, storable item"
        );
        assert_eq!(
            projection.items[0].added_at, None,
            "a date out of range is dropped"
        );
        assert_eq!(projection.items[0].note.as_deref(), Some("ok"));
        assert!(
            projection.orders.is_empty(),
            "a braced order id is not canonical"
        );
        // Upper-case id, NUL name, braced order id, the out-of-range date.
        assert_eq!(skipped, 4);
    }
}
