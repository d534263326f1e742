//! Replicas whose relay loses a third of the envelopes and delivers the rest
//! late and out of order: every edit still reaches every client (what the
//! relay lost is read from the log) and the log replays to the same state.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use larder_client::SyncClient;
use larder_relay::{Envelope, InProcessRelay, Relay, RelayError, RelayEvent};
use larder_tests::*;
use rand::Rng;
use tokio::sync::broadcast;
use uuid::Uuid;

/// An in-process relay that drops `loss_percent` of the envelopes and delays
/// each of the others by up to `max_delay`, so they overtake each other.
struct LossyRelay {
    inner: InProcessRelay,
    loss_percent: u32,
    max_delay: Duration,
    dropped: AtomicU64,
    delivered: Arc<AtomicU64>,
}

#[async_trait]
impl Relay for LossyRelay {
    fn publish(&self, envelope: Envelope) {
        let mut rng = rand::rng();
        if rng.random_range(0..100) < self.loss_percent {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let delay = rng.random_range(Duration::ZERO..=self.max_delay);
        let inner = self.inner.clone();
        let delivered = self.delivered.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            inner.publish(envelope);
            delivered.fetch_add(1, Ordering::Relaxed);
        });
    }

    async fn subscribe(&self, _list_id: Uuid) -> Result<(), RelayError> {
        Ok(())
    }

    fn unsubscribe(&self, _list_id: Uuid) {}

    fn events(&self) -> broadcast::Receiver<RelayEvent> {
        self.inner.events()
    }

    fn is_connected(&self) -> bool {
        true
    }
}

/// Re-adds the client's pinned item under the same id: a pattern sensitive
/// to the order in which one client's updates are applied.
fn re_add_pinned(client: &SyncClient, id: &str, round: usize) {
    let mut item = new_item(&format!("pinned {round}"));
    item.id = id.to_owned();
    item.quantity = Some(round.to_string());
    client.edit(|txn| client.list().add_item(txn, &item).expect("valid item"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_that_loses_and_reorders_envelopes_delays_edits_but_loses_none() {
    let db = TestDatabase::create().await;
    let relay = Arc::new(LossyRelay {
        inner: InProcessRelay::new(65_536),
        loss_percent: 33,
        max_delay: Duration::from_millis(15),
        dropped: AtomicU64::new(0),
        delivered: Arc::new(AtomicU64::new(0)),
    });
    let configure = |config: &mut larder_server::Config| {
        config.relay.catchup_interval_ms = 500;
        config.relay.gap_grace_ms = 20;
        config.database.db_max_connections = 4;
    };
    let replicas = [
        TestApp::spawn_with_relay(db.url(), relay.clone(), configure).await,
        TestApp::spawn_with_relay(db.url(), relay.clone(), configure).await,
        TestApp::spawn_with_relay(db.url(), relay.clone(), configure).await,
    ];
    let list = Uuid::new_v4();
    let clients = [
        replicas[0].connect(list).await,
        replicas[1].connect(list).await,
        replicas[2].connect(list).await,
    ];
    let pinned: Vec<String> = (0..3).map(|_| Uuid::new_v4().to_string()).collect();

    for round in 0..120 {
        for (n, client) in clients.iter().enumerate() {
            add_item(client, &format!("{n} {round}"));
            if round % 8 == 0 {
                re_add_pinned(client, &pinned[n], round);
            }
        }
        if round % 5 == 0 {
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
    }

    let refs: Vec<&SyncClient> = clients.iter().collect();
    let merged = converge(&refs).await;
    assert!(
        relay.dropped.load(Ordering::Relaxed) > 0 && relay.delivered.load(Ordering::Relaxed) > 0,
        "the relay lost some envelopes and delivered others"
    );
    // 3 × 120 items plus each client's pinned item, with its last value.
    assert_eq!(merged.items.len(), 3 * 120 + 3);
    for id in &pinned {
        let item = merged
            .items
            .iter()
            .find(|i| &i.id == id)
            .expect("the pinned item survives");
        assert_eq!(item.quantity.as_deref(), Some("112"));
    }
    wait_stored(db.url(), list, &merged).await;
    for replica in replicas {
        replica.stop().await;
    }
}
