//! The offline-first SDK (`larder_client::Client`) against real servers,
//! PostgreSQL or SQLite, and Redis: offline edits on two replicas, a
//! client dropped mid-write, a replica dying mid-sync, the undurable count
//! against the database, one socket for fifty lists, token expiry and a
//! removed member.

use std::collections::BTreeSet;
use std::time::Duration;

use larder_client::{Client, ItemDetails, SyncState};
use larder_crdt::ItemPatch;
use larder_server::Config;
use larder_tests::proxy::{TcpProxy, socket_addr_of};
use larder_tests::sdk::*;
use larder_tests::*;

fn relay_only(config: &mut Config) {
    config.relay.catchup_interval_ms = 600_000;
    config.database.db_max_connections = 4;
}

/// Ann, her family and its list "Weekly shop".
async fn shop(app: &TestApp) -> (Account, uuid::Uuid, uuid::Uuid) {
    let ann = app.signup("ann").await;
    let family = app.create_family(&ann, "Smiths").await;
    let list_id = app.create_list(&ann, family, "Weekly shop").await;
    (ann, family, list_id)
}

/// The list's items as the projection (REST) shows them, sorted by name.
async fn projected_names(app: &TestApp, account: &Account, list: uuid::Uuid) -> Vec<String> {
    let (status, body) = app
        .call(
            "GET",
            &format!("/v1/lists/{list}"),
            Some(&account.access_token),
            None,
        )
        .await;
    assert_eq!(status, 200, "list detail: {body}");
    let mut names: Vec<String> = body["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["name"].as_str().expect("name").to_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_edits_on_two_replicas_converge_and_are_stored() {
    let db = TestDatabase::create().await;
    let redis = redis_url().await;
    let one = TestApp::spawn_replica(db.url(), &redis, relay_only).await;
    let two = TestApp::spawn_replica(db.url(), &redis, relay_only).await;
    let ann = one.signup("ann").await;
    let bob = one.signup("bob").await;
    let family = one.create_family(&ann, "Smiths").await;
    one.add_member(&ann, family, &bob).await;
    let list_id = one.create_list(&ann, family, "Weekly shop").await;

    let (dir_a, dir_b) = (DataDir::new(), DataDir::new());
    let a = signed_in(config(&dir_a, &[&one]), &ann).await;
    let b = signed_in(config(&dir_b, &[&two]), &bob).await;
    let list_a = a.list(list_id).await.expect("list");
    let list_b = b.list(list_id).await.expect("list");
    let shared = list_a
        .add_item("Coffee", ItemDetails::default())
        .await
        .expect("add");
    wait_durable(&list_a).await;
    eventually(
        "bob's device has the shared item",
        Duration::from_secs(15),
        || async { item_names(&list_b).await == ["Coffee"] },
    )
    .await;

    // Both phones lose the network and keep editing, the same item too.
    a.set_online(false);
    b.set_online(false);
    wait_list(&list_a, "offline", |s| s.state == SyncState::Offline).await;
    wait_list(&list_b, "offline", |s| s.state == SyncState::Offline).await;
    for (who, list) in [("a", &list_a), ("b", &list_b)] {
        let mut mine = Vec::new();
        for n in 0..150 {
            let id = list
                .add_item(&format!("{who}-{n:03}"), ItemDetails::default())
                .await
                .expect("add offline");
            mine.push(id);
            let patch = ItemPatch {
                quantity: Some(Some(format!("{who} {n}"))),
                note: (n % 3 == 0).then(|| Some(format!("note from {who}"))),
                ..ItemPatch::default()
            };
            list.update_item(&shared, patch)
                .await
                .expect("edit the shared item");
        }
        // Removals are edits too (they insert nothing).
        for id in &mine[..10] {
            assert!(list.remove_item(id).await.expect("remove"));
        }
        assert_eq!(
            list.status().borrow().undurable,
            310,
            "{who}'s unsent edits"
        );
    }

    let mut changes_b = b.changes();
    a.set_online(true);
    b.set_online(true);
    wait_durable(&list_a).await;
    wait_durable(&list_b).await;
    eventually("both devices converge", Duration::from_secs(30), || async {
        list_a.snapshot().await.unwrap() == list_b.snapshot().await.unwrap()
    })
    .await;
    // Bob's app was told which items Ann's edits changed.
    let mut remote_items = BTreeSet::new();
    while let Ok(change) = changes_b.try_recv() {
        assert_eq!(change.list, list_id);
        if change.source == larder_client::Source::Remote {
            remote_items.extend(change.items);
        }
    }
    // Ann's 140 items arrived (the shared item counts only if her write won).
    assert!(
        remote_items.len() >= 140,
        "{} items reported",
        remote_items.len()
    );
    let merged = list_a.snapshot().await.unwrap();
    assert_eq!(merged.items.len(), 1 + 2 * 140);
    let coffee = merged
        .items
        .iter()
        .find(|i| i.id == shared)
        .expect("shared item");
    assert!(
        [Some("a 149"), Some("b 149")].contains(&coffee.quantity.as_deref()),
        "one writer's last quantity wins: {coffee:?}"
    );
    // The server's log replays to the same state, and the rows match.
    assert_eq!(stored_snapshot(db.url(), list_id).await, merged);
    let names: Vec<String> = {
        let mut n: Vec<String> = merged.items.iter().map(|i| i.name.clone()).collect();
        n.sort();
        n
    };
    eventually(
        "the projection matches",
        Duration::from_secs(20),
        || async { projected_names(&one, &ann, list_id).await == names },
    )
    .await;
    a.close().await;
    b.close().await;
    one.stop().await;
    two.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_outlive_a_client_dropped_mid_write_and_upload_later() {
    let db = TestDatabase::create().await;
    let app = TestApp::spawn(db.url()).await;
    let (ann, _, list_id) = shop(&app).await;
    let dir = DataDir::new();

    // An app on a runtime of its own, offline, killed while it writes: the
    // runtime is dropped with edits in flight, no shutdown of any kind.
    let mut offline = config(&dir, &[&app]);
    offline.offline = true;
    let account = ann.clone();
    let made = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let (done_tx, done_rx) = std::sync::mpsc::channel::<usize>();
        runtime.spawn(async move {
            let client = signed_in(offline, &account).await;
            let list = client.list(list_id).await.expect("list");
            for n in 0..40 {
                list.add_item(&format!("item {n:02}"), ItemDetails::default())
                    .await
                    .expect("add offline");
            }
            let _ = done_tx.send(40);
            // Keeps writing until the runtime dies under it.
            for n in 40.. {
                list.add_item(&format!("item {n:02}"), ItemDetails::default())
                    .await
                    .expect("add offline");
            }
            drop(client);
        });
        let made = done_rx.recv().expect("forty edits made");
        std::thread::sleep(Duration::from_millis(30));
        runtime.shutdown_timeout(Duration::ZERO);
        made
    })
    .join()
    .expect("the app thread");
    assert_eq!(made, 40);

    // The app starts again on the same directory and goes online.
    let client = Client::open(config(&dir, &[&app])).await.expect("reopen");
    let list = client.list(list_id).await.expect("list");
    let names = item_names(&list).await;
    assert!(names.len() >= 40, "only {} edits survived", names.len());
    let expected: Vec<String> = (0..names.len()).map(|n| format!("item {n:02}")).collect();
    assert_eq!(names, expected, "edits survive in order, none half-made");
    assert!(list.status().borrow().undurable >= 40);
    wait_durable(&list).await;
    let stored = stored_snapshot(db.url(), list_id).await;
    assert_eq!(stored, list.snapshot().await.unwrap());
    client.close().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_dying_mid_sync_loses_and_duplicates_nothing() {
    let db = TestDatabase::create().await;
    let redis = redis_url().await;
    let one = TestApp::spawn_replica(db.url(), &redis, relay_only).await;
    let two = TestApp::spawn_replica(db.url(), &redis, relay_only).await;
    let (ann, _, list_id) = shop(&one).await;
    let dir = DataDir::new();
    let client = signed_in(config(&dir, &[&one, &two]), &ann).await;
    let list = client.list(list_id).await.expect("list");
    for n in 0..20 {
        list.add_item(&format!("item {n:02}"), ItemDetails::default())
            .await
            .expect("add");
    }
    wait_durable(&list).await;
    assert_eq!(client.status().borrow().connects, 1);

    // The replica dies while edits are being made and sent.
    let writer = {
        let list = list.clone();
        tokio::spawn(async move {
            for n in 20..60 {
                list.add_item(&format!("item {n:02}"), ItemDetails::default())
                    .await
                    .expect("add");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(60)).await;
    one.kill();
    writer.await.expect("writer");
    wait_client(&client, "reconnected to the other replica", |s| {
        s.connects >= 2
    })
    .await;
    wait_durable(&list).await;
    let names = item_names(&list).await;
    let expected: Vec<String> = (0..60).map(|n| format!("item {n:02}")).collect();
    assert_eq!(names, expected);
    let stored = stored_snapshot(db.url(), list_id).await;
    assert_eq!(stored, list.snapshot().await.unwrap());
    let unique: BTreeSet<&str> = stored.items.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(unique.len(), stored.items.len(), "no item twice");
    client.close().await;
    two.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restart_mid_sync_loses_and_duplicates_nothing() {
    let db = TestDatabase::create().await;
    let app = TestApp::spawn(db.url()).await;
    let (ann, _, list_id) = shop(&app).await;
    let dir = DataDir::new();
    let client = signed_in(config(&dir, &[&app]), &ann).await;
    let list = client.list(list_id).await.expect("list");
    for n in 0..10 {
        list.add_item(&format!("item {n:02}"), ItemDetails::default())
            .await
            .expect("add");
    }
    wait_durable(&list).await;

    // The server restarts (drains, stops, starts again at the same
    // address) while edits are being made and sent.
    let writer = {
        let list = list.clone();
        tokio::spawn(async move {
            for n in 10..50 {
                list.add_item(&format!("item {n:02}"), ItemDetails::default())
                    .await
                    .expect("add");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(40)).await;
    let addr = app.addr;
    app.stop().await;
    let app = TestApp::spawn_at(addr, db.url(), |_| {}).await;
    writer.await.expect("writer");
    wait_client(&client, "reconnected after the restart", |s| {
        s.connects >= 2
    })
    .await;
    wait_durable(&list).await;
    let expected: Vec<String> = (0..50).map(|n| format!("item {n:02}")).collect();
    assert_eq!(item_names(&list).await, expected);
    let stored = stored_snapshot(db.url(), list_id).await;
    assert_eq!(stored, list.snapshot().await.unwrap());
    client.close().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_offline_backlog_uploads_in_pieces_under_the_message_limit() {
    let db = TestDatabase::create().await;
    let app = TestApp::spawn(db.url()).await;
    let (ann, _, list_id) = shop(&app).await;
    let dir = DataDir::new();
    let mut offline = config(&dir, &[&app]);
    offline.offline = true;
    let client = signed_in(offline, &ann).await;
    let list = client.list(list_id).await.expect("list");
    // About 1.6 MB of edits: one sync step 2 would pass the server's 1 MiB
    // message limit and close the socket.
    for n in 0..400 {
        let details = ItemDetails {
            note: Some(format!("{n:04}").repeat(1024)),
            ..ItemDetails::default()
        };
        list.add_item(&format!("item {n:03}"), details)
            .await
            .expect("add offline");
    }
    client.set_online(true);
    wait_durable(&list).await;
    assert_eq!(client.status().borrow().connects, 1, "no socket was closed");
    let stored = stored_snapshot(db.url(), list_id).await;
    assert_eq!(stored.items.len(), 400);
    assert_eq!(stored, list.snapshot().await.unwrap());
    client.close().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undurable_edits_reach_zero_only_once_in_the_database() {
    // PostgreSQL: the test cuts the database's connection with a proxy.
    let db = TestDatabase::postgres().await;
    let pg_proxy = TcpProxy::start(socket_addr_of(db.url())).await;
    let app = TestApp::spawn(&pg_proxy.rewrite_url(db.url())).await;
    let (ann, _, list_id) = shop(&app).await;
    let dir = DataDir::new();
    let client = signed_in(config(&dir, &[&app]), &ann).await;
    let list = client.list(list_id).await.expect("list");
    let bread = list
        .add_item("Bread", ItemDetails::default())
        .await
        .expect("add");
    wait_durable(&list).await;
    assert_eq!(item_names(&list).await, ["Bread"]);

    pg_proxy.cut();
    for name in ["Milk", "Eggs", "Butter"] {
        list.add_item(name, ItemDetails::default())
            .await
            .expect("add");
    }
    assert!(list.remove_item(&bread).await.expect("remove"));
    assert_eq!(list.status().borrow().undurable, 4);
    // While the database is cut, nothing is acknowledged.
    let mut status = list.status();
    let early = tokio::time::timeout(Duration::from_secs(3), status.wait_for(|s| s.undurable < 4))
        .await
        .is_ok();
    assert!(
        !early,
        "acknowledged while the database was cut: {:?}",
        *status.borrow()
    );
    assert_ne!(list.status().borrow().state, SyncState::Synced);

    pg_proxy.restore();
    wait_durable(&list).await;
    // At zero, everything, the removal too, is in the database.
    let stored = stored_snapshot(db.url(), list_id).await;
    let mut names: Vec<String> = stored.items.iter().map(|i| i.name.clone()).collect();
    names.sort();
    assert_eq!(names, ["Butter", "Eggs", "Milk"]);
    assert!(client.unsent(list_id).await.unwrap().is_empty());
    client.close().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_socket_carries_a_family_of_fifty_lists_and_a_deleted_one_leaves_alone() {
    let db = TestDatabase::create().await;
    let app = TestApp::spawn(db.url()).await;
    let ann = app.signup("ann").await;
    let family = app.create_family(&ann, "Smiths").await;
    let mut ids = Vec::new();
    for n in 0..50 {
        ids.push(app.create_list(&ann, family, &format!("List {n}")).await);
    }
    let dir = DataDir::new();
    let mut settings = config(&dir, &[&app]);
    settings.unload_after = Duration::from_millis(300);
    let client = signed_in(settings, &ann).await;
    client.sync_family(family).await.expect("sync the family");
    eventually(
        "every list of the family is kept",
        Duration::from_secs(20),
        || async { client.lists().await.unwrap().len() == 50 },
    )
    .await;
    wait_client(&client, "all fifty lists synced", |s| {
        s.state == SyncState::Synced
    })
    .await;
    for id in &ids {
        let list = client.list(*id).await.expect("list");
        list.add_item("Milk", ItemDetails::default())
            .await
            .expect("add");
    }
    for id in &ids {
        wait_durable(&client.list(*id).await.expect("list")).await;
    }
    assert_eq!(client.status().borrow().connects, 1, "one socket for all");
    assert_eq!(stored_snapshot(db.url(), ids[3]).await.items.len(), 1);
    // Lists nobody holds leave memory; they stay on disk.
    eventually(
        "idle lists leave memory",
        Duration::from_secs(10),
        || async { client.lists_in_memory() < 50 },
    )
    .await;

    // A list created elsewhere appears; one deleted elsewhere goes alone.
    let newer = app.create_list(&ann, family, "Party").await;
    let (status, body) = app
        .call(
            "DELETE",
            &format!("/v1/lists/{}", ids[7]),
            Some(&ann.access_token),
            None,
        )
        .await;
    assert_eq!(status, 204, "delete: {body}");
    let gone = client.list(ids[7]).await.expect("handle");
    wait_list(&gone, "the deleted list stopped", |s| {
        s.state == SyncState::Stopped
    })
    .await;
    assert_eq!(
        gone.status().borrow().stopped.as_ref().map(|s| s.code),
        Some(4404)
    );
    client.refresh_families();
    eventually(
        "the new list is kept, the deleted one evicted",
        Duration::from_secs(20),
        || async {
            let kept = client.lists().await.unwrap();
            kept.contains(&newer) && !kept.contains(&ids[7])
        },
    )
    .await;
    let other = client.list(ids[8]).await.expect("list");
    other
        .add_item("Eggs", ItemDetails::default())
        .await
        .expect("add");
    wait_durable(&other).await;
    assert_eq!(stored_snapshot(db.url(), ids[8]).await.items.len(), 2);
    assert_eq!(client.status().borrow().connects, 1);
    client.close().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_is_refreshed_and_offline_edits_upload() {
    let db = TestDatabase::create().await;
    let app = TestApp::spawn_with(db.url(), |c| c.auth.access_token_ttl_secs = 3).await;
    let (ann, _, list_id) = shop(&app).await;
    let dir = DataDir::new();
    let mut settings = config(&dir, &[&app]);
    settings.refresh_margin = Duration::from_millis(500);
    let client = signed_in(settings, &ann).await;
    let first = client.session().await.expect("session");
    let list = client.list(list_id).await.expect("list");
    list.add_item("Bread", ItemDetails::default())
        .await
        .expect("add");
    wait_durable(&list).await;

    // Offline past the token's expiry, editing.
    client.set_online(false);
    wait_list(&list, "offline", |s| s.state == SyncState::Offline).await;
    eventually(
        "the access token expired",
        Duration::from_secs(10),
        || async { first.access_token_expires_at < chrono::Utc::now() },
    )
    .await;
    list.add_item("Milk", ItemDetails::default())
        .await
        .expect("add");
    client.set_online(true);
    wait_durable(&list).await;
    let second = client.session().await.expect("session");
    assert_ne!(second.refresh_token, first.refresh_token, "refreshed");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.0.join("session.json"))
            .expect("session file")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    // Online across an expiry: the server closes with 4440, the client
    // refreshes and reconnects, and edits keep flowing.
    let connects = client.status().borrow().connects;
    wait_client(&client, "reconnected after the token expired", |s| {
        s.connects > connects
    })
    .await;
    list.add_item("Eggs", ItemDetails::default())
        .await
        .expect("add");
    wait_durable(&list).await;
    let stored = stored_snapshot(db.url(), list_id).await;
    let mut names: Vec<String> = stored.items.iter().map(|i| i.name.clone()).collect();
    names.sort();
    assert_eq!(names, ["Bread", "Eggs", "Milk"]);
    client.close().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_member_is_told_once_and_keeps_their_edits() {
    let db = TestDatabase::create().await;
    let app = TestApp::spawn(db.url()).await;
    let ann = app.signup("ann").await;
    let bob = app.signup("bob").await;
    let family = app.create_family(&ann, "Smiths").await;
    app.add_member(&ann, family, &bob).await;
    let list_id = app.create_list(&ann, family, "Weekly shop").await;
    let dir = DataDir::new();
    let client = signed_in(config(&dir, &[&app]), &bob).await;
    client.sync_family(family).await.expect("sync the family");
    eventually(
        "bob keeps the family's list",
        Duration::from_secs(20),
        || async { client.lists().await.unwrap() == [list_id] },
    )
    .await;
    let list = client.list(list_id).await.expect("list");
    wait_durable(&list).await;

    let (status, body) = app
        .call(
            "DELETE",
            &format!("/v1/families/{family}/members/{}", bob.user_id),
            Some(&ann.access_token),
            None,
        )
        .await;
    assert_eq!(status, 204, "remove bob: {body}");
    wait_list(&list, "refused", |s| s.state == SyncState::Stopped).await;
    let stopped = list.status().borrow().stopped.clone().expect("why");
    assert_eq!(stopped.code, 4403, "{stopped:?}");

    // Bob's later edit stays on his device, exportable; the list is not
    // asked for again.
    list.add_item("Chocolate", ItemDetails::default())
        .await
        .expect("add");
    let subscribes = list.status().borrow().subscribes;
    client.refresh_families();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        list.status().borrow().subscribes,
        subscribes,
        "no retry loop"
    );
    assert_eq!(list.status().borrow().state, SyncState::Stopped);
    assert_eq!(client.unsent(list_id).await.unwrap().len(), 1);
    let stored = stored_snapshot(db.url(), list_id).await;
    assert!(
        stored.items.is_empty(),
        "the refused edit never reached the server"
    );
    client.close().await;
    app.stop().await;
}
