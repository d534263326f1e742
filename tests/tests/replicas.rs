//! Several replicas sharing one PostgreSQL and one Redis: every edit reaches
//! every client whatever replica it entered through, also when Redis drops
//! messages or goes away, or a replica dies.

use std::collections::BTreeSet;
use std::time::Duration;

use larder_client::SyncClient;
use larder_crdt::ItemPatch;
use larder_server::Config;
use larder_tests::proxy::{TcpProxy, socket_addr_of};
use larder_tests::redis_server::RedisServer;
use larder_tests::*;
use uuid::Uuid;

/// Replicas that never run the periodic log check: what converges came
/// through the relay (or a gap the relay revealed).
fn relay_only(config: &mut Config) {
    config.relay.catchup_interval_ms = 600_000;
    config.database.db_max_connections = 4;
}

/// Replicas that also check the log every half second, as in production
/// (where it is every few seconds).
fn with_log_check(config: &mut Config) {
    config.relay.catchup_interval_ms = 500;
    config.database.db_max_connections = 4;
}

fn names(client: &SyncClient) -> BTreeSet<String> {
    client
        .snapshot()
        .items
        .into_iter()
        .map(|i| i.name)
        .collect()
}

fn expected_names(prefixes: &[&str], count: usize) -> BTreeSet<String> {
    prefixes
        .iter()
        .flat_map(|p| (0..count).map(move |i| format!("{p} {i}")))
        .collect()
}

/// The client is still on its first connection.
fn assert_still_connected(client: &SyncClient, who: &str) {
    let status = client.status().borrow().clone();
    assert!(
        status.is_connected && status.closed_with.is_none(),
        "{who} stayed connected: {status:?}"
    );
}

/// Adds `{prefix} {i}` for i in `range` through every (client, prefix),
/// round-robin, changing every third item afterwards; pauses `pause`
/// between rounds.
async fn write_rounds(
    writers: &[(&SyncClient, &str)],
    range: std::ops::Range<usize>,
    pause: Duration,
) {
    for i in range {
        for (client, prefix) in writers {
            let id = add_item(client, &format!("{prefix} {i}"));
            if i % 3 == 0 {
                patch_item(
                    client,
                    &id,
                    &ItemPatch {
                        quantity: Some(Some(format!("{i} kg"))),
                        ..ItemPatch::default()
                    },
                );
            }
        }
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        } else if i % 10 == 0 {
            tokio::task::yield_now().await;
        }
    }
}

async fn readyz_body(app: &TestApp) -> String {
    http_get(app.addr, "/readyz")
        .await
        .map(|(_, b)| b)
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_clients_on_three_replicas_converge_and_the_log_replays_to_the_same_state() {
    let redis = redis_url().await;
    let db = TestDatabase::create().await;
    let replicas = [
        TestApp::spawn_replica(db.url(), &redis, relay_only).await,
        TestApp::spawn_replica(db.url(), &redis, relay_only).await,
        TestApp::spawn_replica(db.url(), &redis, relay_only).await,
    ];
    let list = Uuid::new_v4();
    let a = replicas[0].connect(list).await;
    let b = replicas[1].connect(list).await;
    let c = replicas[2].connect(list).await;

    write_rounds(&[(&a, "a"), (&b, "b"), (&c, "c")], 0..100, Duration::ZERO).await;

    let merged = converge(&[&a, &b, &c]).await;
    assert_eq!(merged.items.len(), 300);
    assert_eq!(names(&a), expected_names(&["a", "b", "c"], 100));
    assert!(merged.skipped.is_clean(), "nothing malformed");
    wait_stored(db.url(), list, &merged).await;
    for client in [&a, &b, &c] {
        assert_still_connected(client, "every client");
    }
    let (status, metrics) = http_get(replicas[1].addr, "/metrics")
        .await
        .expect("/metrics answers");
    assert_eq!(status, 200);
    assert!(
        metrics.contains("larder_relay_lag_seconds_bucket"),
        "the relay lag is measured:\n{metrics}"
    );
    for replica in replicas {
        replica.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_edited_offline_reconnects_to_the_other_replica_and_everyone_converges() {
    let redis = redis_url().await;
    let db = TestDatabase::create().await;
    let first = TestApp::spawn_replica(db.url(), &redis, relay_only).await;
    let second = TestApp::spawn_replica(db.url(), &redis, relay_only).await;
    let list = Uuid::new_v4();
    let mut traveller = first.connect(list).await;
    let stay_first = first.connect(list).await;
    let stay_second = second.connect(list).await;
    write_rounds(&[(&traveller, "before")], 0..5, Duration::ZERO).await;
    converge(&[&traveller, &stay_first, &stay_second]).await;

    traveller.disconnect().await;
    write_rounds(
        &[(&traveller, "offline"), (&stay_second, "meanwhile")],
        0..30,
        Duration::ZERO,
    )
    .await;
    second.reconnect(&mut traveller, list).await;

    let merged = converge(&[&traveller, &stay_first, &stay_second]).await;
    assert_eq!(
        names(&stay_first),
        expected_names(&["before"], 5)
            .into_iter()
            .chain(expected_names(&["offline", "meanwhile"], 30))
            .collect()
    );
    wait_stored(db.url(), list, &merged).await;
    first.stop().await;
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_dies_mid_stream_and_its_clients_lose_nothing_on_the_other_one() {
    let redis = redis_url().await;
    let db = TestDatabase::create().await;
    let doomed = TestApp::spawn_replica(db.url(), &redis, relay_only).await;
    let survivor = TestApp::spawn_replica(db.url(), &redis, relay_only).await;
    let list = Uuid::new_v4();
    let mut x = doomed.connect(list).await;
    let mut y = doomed.connect(list).await;
    let z = survivor.connect(list).await;
    let writers = [(&x, "x"), (&y, "y"), (&z, "z")];

    write_rounds(&writers, 0..60, Duration::from_millis(2)).await;
    // Killed with edits in flight: some applied there and not yet stored.
    doomed.kill();
    write_rounds(&writers, 60..90, Duration::from_millis(2)).await;
    for client in [&x, &y] {
        let mut status = client.status();
        tokio::time::timeout(
            Duration::from_secs(10),
            status.wait_for(|s| !s.is_connected),
        )
        .await
        .expect("the dead replica's sockets are cut")
        .expect("status open");
    }
    survivor.reconnect(&mut x, list).await;
    survivor.reconnect(&mut y, list).await;
    let writers = [(&x, "x"), (&y, "y"), (&z, "z")];
    write_rounds(&writers, 90..120, Duration::from_millis(2)).await;

    let merged = converge(&[&x, &y, &z]).await;
    assert_eq!(names(&z), expected_names(&["x", "y", "z"], 120));
    wait_stored(db.url(), list, &merged).await;
    survivor.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_converge_without_reconnecting_after_their_link_to_redis_is_cut() {
    let redis = redis_url().await;
    let proxy = TcpProxy::start(socket_addr_of(&redis)).await;
    let db = TestDatabase::create().await;
    let behind_proxy =
        TestApp::spawn_replica(db.url(), &proxy.rewrite_url(&redis), with_log_check).await;
    let direct = TestApp::spawn_replica(db.url(), &redis, with_log_check).await;
    let list = Uuid::new_v4();
    let p1 = behind_proxy.connect(list).await;
    let p2 = behind_proxy.connect(list).await;
    let d = direct.connect(list).await;
    eventually("the relay connects", Duration::from_secs(10), || async {
        readyz_body(&behind_proxy).await.contains("\"connected\"")
    })
    .await;

    write_rounds(&[(&p1, "p1"), (&d, "d")], 0..10, Duration::ZERO).await;
    converge(&[&p1, &p2, &d]).await;

    proxy.cut();
    eventually(
        "the replica notices Redis is gone",
        Duration::from_secs(10),
        || async {
            readyz_body(&behind_proxy)
                .await
                .contains("\"disconnected\"")
        },
    )
    .await;
    write_rounds(&[(&p1, "p1"), (&d, "d")], 10..40, Duration::from_millis(50)).await;
    // Meanwhile each replica keeps serving its own clients.
    converge(&[&p1, &p2]).await;
    proxy.restore();
    write_rounds(&[(&p1, "p1"), (&d, "d")], 40..45, Duration::ZERO).await;

    let merged = converge(&[&p1, &p2, &d]).await;
    assert_eq!(names(&d), expected_names(&["p1", "d"], 45));
    for client in [&p1, &p2, &d] {
        assert_still_connected(client, "no client reconnected");
    }
    wait_stored(db.url(), list, &merged).await;
    eventually("the relay reconnects", Duration::from_secs(10), || async {
        readyz_body(&behind_proxy).await.contains("\"connected\"")
    })
    .await;
    behind_proxy.stop().await;
    direct.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_serve_their_own_clients_while_redis_is_down_and_catch_up_when_it_restarts() {
    let mut redis = RedisServer::start().await;
    let db = TestDatabase::create().await;
    let one = TestApp::spawn_replica(db.url(), &redis.url(), with_log_check).await;
    let two = TestApp::spawn_replica(db.url(), &redis.url(), with_log_check).await;
    let list = Uuid::new_v4();
    let one_a = one.connect(list).await;
    let one_b = one.connect(list).await;
    let two_a = two.connect(list).await;
    write_rounds(&[(&one_a, "one"), (&two_a, "two")], 0..10, Duration::ZERO).await;
    converge(&[&one_a, &one_b, &two_a]).await;

    redis.kill();
    write_rounds(
        &[(&one_a, "one"), (&two_a, "two")],
        10..30,
        Duration::from_millis(20),
    )
    .await;
    // Each replica serves its clients and stores their edits without Redis.
    converge(&[&one_a, &one_b]).await;
    eventually(
        "edits made during the outage are stored",
        Duration::from_secs(10),
        || async {
            let stored: BTreeSet<String> = stored_snapshot(db.url(), list)
                .await
                .items
                .into_iter()
                .map(|i| i.name)
                .collect();
            stored.is_superset(&expected_names(&["one", "two"], 30))
        },
    )
    .await;

    redis.start_again().await;
    write_rounds(&[(&one_a, "one"), (&two_a, "two")], 30..35, Duration::ZERO).await;
    let merged = converge(&[&one_a, &one_b, &two_a]).await;
    assert_eq!(names(&two_a), expected_names(&["one", "two"], 35));
    for client in [&one_a, &one_b, &two_a] {
        assert_still_connected(client, "no client reconnected");
    }
    wait_stored(db.url(), list, &merged).await;
    one.stop().await;
    two.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_opened_while_another_replica_writes_fast_misses_nothing() {
    let redis = redis_url().await;
    let db = TestDatabase::create().await;
    let writer_replica = TestApp::spawn_replica(db.url(), &redis, relay_only).await;
    let opener = TestApp::spawn_replica(db.url(), &redis, relay_only).await;
    for round in 0..4 {
        let list = Uuid::new_v4();
        let writer = writer_replica.connect(list).await;
        let mut late = Vec::new();
        for i in 0..200 {
            add_item(&writer, &format!("w {i}"));
            // The other replica opens the list in the middle of the stream.
            if i == 40 + round * 30 {
                let mut client = SyncClient::new();
                client
                    .connect(&opener.sync_url(list).await)
                    .await
                    .expect("connect");
                late.push(client);
            }
            if i % 20 == 0 {
                tokio::task::yield_now().await;
            }
        }
        for client in &late {
            wait_synced(client).await;
        }
        let clients: Vec<&SyncClient> = std::iter::once(&writer).chain(late.iter()).collect();
        converge(&clients).await;
        assert_eq!(names(&late[0]), expected_names(&["w"], 200));
    }
    writer_replica.stop().await;
    opener.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_replicas_still_converge_through_the_log() {
    let db = TestDatabase::create().await;
    // Nothing listens on this port: the relay never connects.
    let dead = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
        probe.local_addr().expect("address").port()
    };
    let dead_url = format!("redis://127.0.0.1:{dead}");
    let one = TestApp::spawn_replica(db.url(), &dead_url, with_log_check).await;
    let two = TestApp::spawn_replica(db.url(), &dead_url, with_log_check).await;
    assert!(readyz_body(&one).await.contains("\"disconnected\""));
    let list = Uuid::new_v4();
    let a = one.connect(list).await;
    let b = two.connect(list).await;
    write_rounds(&[(&a, "a"), (&b, "b")], 0..20, Duration::ZERO).await;
    let merged = converge(&[&a, &b]).await;
    assert_eq!(names(&a), expected_names(&["a", "b"], 20));
    wait_stored(db.url(), list, &merged).await;
    one.stop().await;
    two.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_postgresql_is_unreachable_edits_flow_unacknowledged_and_are_stored_after() {
    // PostgreSQL: the test cuts the database's connection with a proxy.
    let db = TestDatabase::postgres().await;
    let pg_proxy = TcpProxy::start(socket_addr_of(db.url())).await;
    let app = TestApp::spawn(&pg_proxy.rewrite_url(db.url())).await;
    let list = Uuid::new_v4();
    let mut acked = SyncClient::new();
    acked
        .connect(&format!("{}&ack=1", app.sync_url(list).await))
        .await
        .expect("connect");
    wait_synced(&acked).await;
    let other = app.connect(list).await;
    add_item(&acked, "before");
    converge(&[&acked, &other]).await;

    pg_proxy.cut();
    eventually(
        "/readyz reports not ready",
        Duration::from_secs(10),
        || async {
            http_get(app.addr, "/readyz")
                .await
                .is_some_and(|(status, _)| status == 503)
        },
    )
    .await;
    write_rounds(&[(&acked, "outage")], 0..20, Duration::ZERO).await;
    // Clients on the replica still see each other's edits live.
    converge(&[&acked, &other]).await;
    let during = yrs::ReadTxn::state_vector(&yrs::Transact::transact(acked.doc()));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_ne!(
        acked.status().borrow().durable.as_ref(),
        Some(&during),
        "nothing is acknowledged as stored while PostgreSQL is unreachable"
    );

    pg_proxy.restore();
    let mut status = acked.status();
    tokio::time::timeout(
        Duration::from_secs(30),
        status.wait_for(|s| s.durable.as_ref() == Some(&during)),
    )
    .await
    .expect("acknowledged once PostgreSQL is back")
    .expect("status open");
    assert_still_connected(&acked, "the writing client");
    assert_eq!(stored_snapshot(db.url(), list).await, acked.snapshot());
    eventually(
        "/readyz reports ready again",
        Duration::from_secs(10),
        || async {
            http_get(app.addr, "/readyz")
                .await
                .is_some_and(|(status, _)| status == 200)
        },
    )
    .await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_relayed_before_it_was_stored_is_stored_by_the_other_replica_when_its_origin_dies()
{
    let redis = redis_url().await;
    let db = TestDatabase::postgres().await;
    // The origin reaches PostgreSQL through a proxy the test cuts, so it
    // can relay edits but never store them.
    let pg_proxy = TcpProxy::start(socket_addr_of(db.url())).await;
    let origin = TestApp::spawn_replica(&pg_proxy.rewrite_url(db.url()), &redis, relay_only).await;
    let survivor = TestApp::spawn_replica(db.url(), &redis, relay_only).await;
    let list = Uuid::new_v4();
    let writer = origin.connect(list).await;
    let reader = survivor.connect(list).await;
    add_item(&writer, "stored");
    let before = converge(&[&writer, &reader]).await;
    wait_stored(db.url(), list, &before).await;

    pg_proxy.cut();
    let unstored = add_item(&writer, "relayed, never stored by its origin");
    // The survivor's client sees it at once, although nothing stored it.
    eventually(
        "the edit reaches the other replica's client",
        Duration::from_secs(5),
        || async { reader.snapshot().items.iter().any(|i| i.id == unstored) },
    )
    .await;
    assert_ne!(stored_snapshot(db.url(), list).await, reader.snapshot());
    origin.kill();

    // Neither client would upload it again (the survivor's document holds
    // it), so the survivor stores it once its origin stays silent.
    let expected = reader.snapshot();
    eventually(
        "the survivor stores the relayed edit",
        Duration::from_secs(20),
        || async { stored_snapshot(db.url(), list).await == expected },
    )
    .await;
    survivor.stop().await;
}
