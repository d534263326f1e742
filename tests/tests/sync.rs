//! End-to-end sync on one replica against the real PostgreSQL.

use std::time::Duration;

use larder_crdt::{ItemPatch, ItemStatus};
use larder_tests::*;
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_clients_editing_concurrently_converge_and_the_log_replays_to_the_same_state() {
    let db = TestDatabase::create().await;
    let app = TestApp::spawn(db.url()).await;
    let list = Uuid::new_v4();
    let clients = [
        app.connect(list).await,
        app.connect(list).await,
        app.connect(list).await,
    ];
    let shared = add_item(&clients[0], "Milk");
    converge(&[&clients[0], &clients[1], &clients[2]]).await;

    for round in 0..200 {
        for (i, client) in clients.iter().enumerate() {
            if round % 4 == 0 {
                add_item(client, &format!("client {i} item {round}"));
            }
            // Conflicting edits of the same item's fields from everyone.
            let patch = ItemPatch {
                quantity: Some(Some(format!("{round} from {i}"))),
                status: Some(ItemStatus::ALL[(round + i) % 3]),
                ..Default::default()
            };
            patch_item(client, &shared, &patch);
        }
        if round % 50 == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let merged = converge(&[&clients[0], &clients[1], &clients[2]]).await;
    assert_eq!(merged.items.len(), 1 + 3 * 50);
    wait_stored(db.url(), list, &merged).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_edits_are_uploaded_when_the_client_reconnects() {
    let db = TestDatabase::create().await;
    let app = TestApp::spawn(db.url()).await;
    let list = Uuid::new_v4();
    let online = app.connect(list).await;
    let mut phone = app.connect(list).await;
    add_item(&online, "Bread");
    converge(&[&online, &phone]).await;

    phone.disconnect().await;
    for i in 0..200 {
        add_item(&phone, &format!("offline {i}"));
    }
    add_item(&online, "added while the phone was away");
    app.reconnect(&mut phone, list).await;

    let merged = converge(&[&online, &phone]).await;
    assert_eq!(merged.items.len(), 202);
    wait_stored(db.url(), list, &merged).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_restart_a_fresh_client_gets_the_full_state_from_snapshot_and_tail() {
    let db = TestDatabase::create().await;
    let small_compaction = |c: &mut larder_server::Config| c.rooms.compaction_max_updates = 20;
    let app = TestApp::spawn_with(db.url(), small_compaction).await;
    let list = Uuid::new_v4();
    let writer = app.connect(list).await;
    for i in 0..120 {
        add_item(&writer, &format!("item {i}"));
        // Separate batches, so the log grows past the compaction threshold.
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    let expected = writer.snapshot();
    let store = store(db.url()).await;
    eventually("compaction ran", Duration::from_secs(15), || async {
        store
            .list_head(list)
            .await
            .expect("head")
            .is_some_and(|h| h.snapshot_seq > 0)
    })
    .await;
    wait_stored(db.url(), list, &expected).await;
    drop(writer);
    app.stop().await;

    let restarted = TestApp::spawn(db.url()).await;
    let fresh = restarted.connect(list).await;
    assert_eq!(
        fresh.snapshot(),
        expected,
        "the first sync carries the whole list"
    );
    restarted.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_clients_connecting_at_once_to_a_closed_list_share_one_room() {
    let db = TestDatabase::create().await;
    let app = TestApp::spawn(db.url()).await;
    let list = Uuid::new_v4();
    let connects = (0..50).map(|_| app.connect(list));
    let clients = futures_util::future::join_all(connects).await;
    for (i, client) in clients.iter().enumerate() {
        add_item(client, &format!("from client {i}"));
    }
    // Were the clients split over two copies of the list, edits would not
    // cross between them.
    let refs: Vec<_> = clients.iter().collect();
    let merged = converge(&refs).await;
    assert_eq!(merged.items.len(), 50);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_acknowledgements_follow_stored_edits_only_when_asked_for() {
    let db = TestDatabase::create().await;
    let app = TestApp::spawn(db.url()).await;
    let list = Uuid::new_v4();
    let mut acked = larder_client::SyncClient::new();
    acked
        .connect(&format!("{}&ack=1", app.sync_url(list).await))
        .await
        .expect("connect");
    wait_synced(&acked).await;
    let plain = app.connect(list).await;
    add_item(&acked, "Eggs");
    let mut status = acked.status();
    let expected_sv = yrs::ReadTxn::state_vector(&yrs::Transact::transact(acked.doc()));
    tokio::time::timeout(
        Duration::from_secs(10),
        status.wait_for(|s| s.durable.as_ref() == Some(&expected_sv)),
    )
    .await
    .expect("ack within 10 s")
    .expect("status open");
    assert_eq!(
        stored_snapshot(db.url(), list).await,
        acked.snapshot(),
        "acknowledged means stored"
    );
    converge(&[&acked, &plain]).await;
    assert!(
        plain.status().borrow().durable.is_none(),
        "a plain client never gets the extension message"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_shutdown_stores_what_it_holds_and_closes_sockets_with_going_away() {
    let db = TestDatabase::create().await;
    let app = TestApp::spawn(db.url()).await;
    let list = Uuid::new_v4();
    let client = app.connect(list).await;
    for i in 0..50 {
        add_item(&client, &format!("item {i}"));
    }
    let expected = client.snapshot();
    // Let the edits reach the room, then stop at once.
    tokio::time::sleep(Duration::from_millis(100)).await;
    app.stop().await;
    let mut status = client.status();
    let closed = tokio::time::timeout(
        Duration::from_secs(5),
        status.wait_for(|s| s.closed_with.is_some()),
    )
    .await
    .expect("closed")
    .expect("status open")
    .closed_with
    .clone();
    assert_eq!(closed.map(|(code, _)| code), Some(1001));
    assert_eq!(stored_snapshot(db.url(), list).await, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_readiness_answer_and_bad_list_ids_are_refused_before_the_upgrade() {
    let db = TestDatabase::create().await;
    let app = TestApp::spawn(db.url()).await;
    assert_eq!(http_get(app.addr, "/healthz").await.map(|r| r.0), Some(200));
    assert_eq!(http_get(app.addr, "/readyz").await.map(|r| r.0), Some(200));
    let (status, body) = http_get(app.addr, "/v1/sync/not-a-uuid")
        .await
        .expect("answers");
    assert_eq!(status, 400);
    let body: serde_json::Value = serde_json::from_str(&body).expect("JSON error body");
    assert_eq!(body["error"]["code"], "invalid_list_id");
    match tokio_tungstenite::connect_async(format!("ws://{}/v1/sync/not-a-uuid", app.addr)).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 400)
        }
        other => panic!("expected a 400, got {:?}", other.map(|_| ())),
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_receives_keepalive_traffic() {
    use futures_util::StreamExt;
    let db = TestDatabase::create().await;
    let app = TestApp::spawn_with(db.url(), |c| c.rooms.keepalive_ms = 200).await;
    let (mut socket, _) = tokio_tungstenite::connect_async(app.sync_url(Uuid::new_v4()).await)
        .await
        .expect("connect");
    let mut keepalive_seen = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !keepalive_seen && tokio::time::Instant::now() < deadline {
        let frame = tokio::time::timeout(Duration::from_secs(2), socket.next())
            .await
            .expect("traffic")
            .expect("open")
            .expect("ok");
        if let tokio_tungstenite::tungstenite::Message::Binary(bytes) = frame {
            keepalive_seen = bytes.as_ref() == larder_crdt::protocol::encode_keepalive().as_slice();
        }
    }
    assert!(
        keepalive_seen,
        "an idle client hears from the server well inside 30 s"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_unloading_with_a_long_tail_is_compacted_so_the_next_load_reads_a_snapshot() {
    let db = TestDatabase::create().await;
    let app = TestApp::spawn_with(db.url(), |c| {
        c.rooms.linger_ms = 100;
        c.rooms.commit_window_ms = 0;
    })
    .await;
    let list = Uuid::new_v4();
    let mut client = app.connect(list).await;
    // One stored batch per edit: each waits until the one before is stored.
    for i in 0..40 {
        add_item(&client, &format!("item {i}"));
        wait_stored(db.url(), list, &client.snapshot()).await;
    }
    let store = store(db.url()).await;
    let before = store.load_doc(list).await.expect("load");
    assert!(
        before.tail.len() >= 32 && before.snapshot.is_none(),
        "below the compaction threshold and longer than the unload one: {} batches",
        before.tail.len()
    );
    let expected = client.snapshot();
    client.disconnect().await;

    eventually(
        "the unloaded list was compacted",
        Duration::from_secs(10),
        || async {
            let stored = store.load_doc(list).await.expect("load");
            stored.tail.is_empty()
                && stored
                    .snapshot
                    .is_some_and(|s| s.up_to_seq == before.head_seq)
        },
    )
    .await;
    assert_eq!(stored_snapshot(db.url(), list).await, expected);
    let fresh = app.connect(list).await;
    assert_eq!(fresh.snapshot(), expected);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_list_unloads_after_lingering_and_reloads_from_storage() {
    use larder_storage::NewUpdate;
    let db = TestDatabase::create().await;
    let app = TestApp::spawn_with(db.url(), |c| c.rooms.linger_ms = 100).await;
    let list = Uuid::new_v4();
    let mut client = app.connect(list).await;
    add_item(&client, "Apples");
    let expected_before = client.snapshot();
    wait_stored(db.url(), list, &expected_before).await;
    client.disconnect().await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    // Written to the log behind the server's back (as another replica would):
    // only a room loaded afresh from storage can know it.
    let other = larder_client::SyncClient::new();
    add_item(&other, "Pears");
    let update = larder_crdt::state::encode_full_state(other.doc());
    let store = store(db.url()).await;
    store
        .append(vec![NewUpdate {
            list_id: list,
            update,
            origin: "elsewhere".into(),
            user_id: None,
        }])
        .await
        .expect("append");

    let fresh = app.connect(list).await;
    let names: Vec<String> = fresh.snapshot().items.into_iter().map(|i| i.name).collect();
    assert_eq!(names.len(), 2, "reloaded from storage: {names:?}");
    assert!(names.contains(&"Apples".to_owned()) && names.contains(&"Pears".to_owned()));
    app.stop().await;
}

/// Replicas store what they commit in their own order, so the log can hold
/// an update before one it depends on. Compacting such a log must keep the
/// dependent update (yrs holds it aside as pending), so the list loads to
/// the same state after compaction as before, and the missing update,
/// stored after the snapshot, still completes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compacting_a_log_stored_out_of_causal_order_keeps_every_update() {
    use larder_storage::NewUpdate;
    use yrs::{Map, Transact};

    let db = TestDatabase::create().await;
    let store = store(db.url()).await;
    let list = Uuid::new_v4();
    store.ensure_list(list).await.expect("list row");

    let writer = yrs::Doc::with_client_id(77);
    let items = writer.get_or_insert_map("items");
    let edit = |key: &str, value: &str| {
        let mut txn = writer.transact_mut();
        items.insert(&mut txn, key, value);
        txn.encode_update_v1()
    };
    let first = edit("a", "milk");
    // Overwrites `a`: it names the first write as its origin.
    let second = edit("a", "oat milk");
    let third = edit("b", "eggs");
    let append = |update: Vec<u8>| {
        let store = store.clone();
        async move {
            store
                .append(vec![NewUpdate {
                    list_id: list,
                    update,
                    origin: "replica".into(),
                    user_id: None,
                }])
                .await
                .expect("append");
        }
    };
    // An independent update, then the dependent one; its dependency last.
    append(third.clone()).await;
    append(second.clone()).await;

    let read = |bytes: Vec<Vec<u8>>| {
        let doc = yrs::Doc::new();
        larder_crdt::state::apply_stored(&doc, bytes.iter().map(Vec::as_slice)).expect("applies");
        let items = doc.get_or_insert_map("items");
        let txn = doc.transact();
        let mut entries: Vec<String> = items
            .iter(&txn)
            .map(|(k, v)| format!("{k}={}", v.to_string(&txn)))
            .collect();
        entries.sort();
        (entries, larder_crdt::state::pending_bytes(&doc) > 0)
    };
    let before = store.load_doc(list).await.expect("load");
    let loaded_before = read(before.updates().map(<[u8]>::to_vec).collect());
    assert_eq!(
        loaded_before,
        (vec!["b=eggs".to_owned()], true),
        "the overwrite waits for the first write"
    );

    // The second update waits for its dependency: the fold stops before it.
    let up_to = larder_server::rooms::compaction::compact(store.clone(), list)
        .await
        .expect("compacts");
    assert_eq!(
        up_to,
        Some(before.head_seq - 1),
        "the independent update folds"
    );
    let after = store.load_doc(list).await.expect("load");
    assert_eq!(after.tail.len(), 1, "the waiting update stays in the log");
    assert_eq!(
        read(after.updates().map(<[u8]>::to_vec).collect()),
        loaded_before
    );

    append(first.clone()).await;
    let complete = store.load_doc(list).await.expect("load");
    assert_eq!(
        read(complete.updates().map(<[u8]>::to_vec).collect()),
        (vec!["a=oat milk".to_owned(), "b=eggs".to_owned()], false),
        "the dependency completes the list"
    );
    // Now everything folds, and the snapshot loads to what the log did.
    let up_to = larder_server::rooms::compaction::compact(store.clone(), list)
        .await
        .expect("compacts");
    assert_eq!(up_to, Some(complete.head_seq));
    let folded = store.load_doc(list).await.expect("load");
    assert!(folded.tail.is_empty());
    assert_eq!(
        read(folded.updates().map(<[u8]>::to_vec).collect()),
        (vec!["a=oat milk".to_owned(), "b=eggs".to_owned()], false)
    );
}
