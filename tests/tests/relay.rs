//! The Redis relay on its own, against real Redis servers: delivery by list
//! subscription, and reconnection (with a resync) after Redis restarts.

use std::time::Duration;

use larder_relay::{Envelope, Payload, RedisRelay, RedisRelayConfig, Relay, RelayEvent};
use larder_tests::redis_server::RedisServer;
use larder_tests::*;
use tokio::sync::broadcast;
use uuid::Uuid;

fn update(origin: Uuid, list_id: Uuid, seq: u64) -> Envelope {
    Envelope::new(
        origin,
        list_id,
        Payload::Update {
            first_seq: seq,
            last_seq: seq,
            update: vec![0, 0],
            live_through: 0,
        },
    )
}

/// The next envelope (skipping resyncs), or `None` after `limit`.
async fn next_envelope(
    events: &mut broadcast::Receiver<RelayEvent>,
    limit: Duration,
) -> Option<Envelope> {
    tokio::time::timeout(limit, async {
        loop {
            match events.recv().await.expect("relay events open") {
                RelayEvent::Envelope(envelope) => return envelope,
                RelayEvent::Resync => {}
            }
        }
    })
    .await
    .ok()
}

async fn wait_resync(events: &mut broadcast::Receiver<RelayEvent>) {
    tokio::time::timeout(Duration::from_secs(15), async {
        while events.recv().await.expect("relay events open") != RelayEvent::Resync {}
    })
    .await
    .expect("a resync within 15 s");
}

async fn wait_connected(relay: &RedisRelay) {
    eventually("the relay connects", Duration::from_secs(10), || async {
        relay.is_connected()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envelopes_reach_the_replicas_subscribed_to_their_list_only() {
    let url = redis_url().await;
    let sender = RedisRelay::start(RedisRelayConfig::new(url.as_str())).expect("relay");
    let receiver = RedisRelay::start(RedisRelayConfig::new(url.as_str())).expect("relay");
    let mut events = receiver.events();
    wait_connected(&receiver).await;
    let (watched, other) = (Uuid::new_v4(), Uuid::new_v4());
    receiver.subscribe(watched).await.expect("subscribed");
    // Counted: two subscriptions need two unsubscribes.
    receiver.subscribe(watched).await.expect("subscribed");
    let origin = Uuid::new_v4();

    sender.publish(update(origin, other, 1));
    sender.publish(update(origin, watched, 1));
    let got = next_envelope(&mut events, Duration::from_secs(5))
        .await
        .expect("the watched list's envelope");
    assert_eq!(
        got.list_id, watched,
        "other lists' envelopes are not received"
    );
    assert_eq!(got.origin, origin);

    receiver.unsubscribe(watched);
    sender.publish(update(origin, watched, 2));
    let got = next_envelope(&mut events, Duration::from_secs(5))
        .await
        .expect("still subscribed once");
    assert_eq!(got.payload, update(origin, watched, 2).payload);

    receiver.unsubscribe(watched);
    // Unsubscribing is ordered before this publish on the subscriber side
    // only once Redis processed it; give it a moment.
    tokio::time::sleep(Duration::from_millis(200)).await;
    sender.publish(update(origin, watched, 3));
    assert!(
        next_envelope(&mut events, Duration::from_millis(500))
            .await
            .is_none(),
        "nothing arrives after the last unsubscribe"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_reconnects_resubscribes_and_announces_a_resync_after_redis_restarts() {
    let mut redis = RedisServer::start().await;
    let sender = RedisRelay::start(RedisRelayConfig::new(redis.url())).expect("relay");
    let receiver = RedisRelay::start(RedisRelayConfig::new(redis.url())).expect("relay");
    let mut events = receiver.events();
    wait_connected(&receiver).await;
    let list = Uuid::new_v4();
    receiver.subscribe(list).await.expect("subscribed");
    let origin = Uuid::new_v4();
    sender.publish(update(origin, list, 1));
    assert!(
        next_envelope(&mut events, Duration::from_secs(5))
            .await
            .is_some()
    );

    redis.kill();
    eventually("the relay notices", Duration::from_secs(10), || async {
        !receiver.is_connected()
    })
    .await;
    let another = Uuid::new_v4();
    assert!(
        receiver.subscribe(another).await.is_err(),
        "subscribing while Redis is away reports it"
    );

    redis.start_again().await;
    wait_resync(&mut events).await;
    assert!(receiver.is_connected());
    // Both subscriptions, old and made while away, stand again.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        // The sender's own connection may still be reconnecting: retry.
        sender.publish(update(origin, another, 2));
        let got = next_envelope(&mut events, Duration::from_millis(200)).await;
        if got.is_some_and(|e| e.list_id == another) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "envelopes flow again within 10 s"
        );
    }
    sender.publish(update(origin, list, 3));
    assert_eq!(
        next_envelope(&mut events, Duration::from_secs(5))
            .await
            .map(|e| e.list_id),
        Some(list)
    );
}
