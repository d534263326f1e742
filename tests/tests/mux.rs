//! The multiplexed sync socket (`GET /v1/sync`): many lists of a family
//! over one WebSocket, per-list authorization, acknowledgements and
//! closes, against a real server and database.

use std::time::Duration;

use larder_tests::mux::MuxClient;
use larder_tests::*;
use uuid::Uuid;

fn mux_url(app: &TestApp, token: &str) -> String {
    format!("ws://{}/v1/sync?token={token}", app.addr)
}

async fn wait_synced_mux(client: &MuxClient, list: Uuid) {
    eventually(
        &format!("list {list} synced over the multiplexed socket"),
        Duration::from_secs(15),
        || async { client.is_synced(list) },
    )
    .await;
}

fn names(snapshot: &larder_crdt::ListSnapshot) -> Vec<String> {
    snapshot.items.iter().map(|i| i.name.clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_socket_carries_fifty_lists_and_a_deleted_one_closes_alone() {
    let db = TestDatabase::create().await;
    let app = TestApp::spawn(db.url()).await;
    let owner = app.signup("owner").await;
    let family = app.create_family(&owner, "Smiths").await;
    let mut lists = Vec::new();
    for n in 0..50 {
        lists.push(app.create_list(&owner, family, &format!("List {n}")).await);
    }
    let mux = MuxClient::connect(&mux_url(&app, &owner.access_token))
        .await
        .expect("connect");
    for list in &lists {
        mux.subscribe(*list, true);
    }
    for list in &lists {
        wait_synced_mux(&mux, *list).await;
    }

    // Edits over the multiplexed socket reach a plain per-list client, and
    // the other way round.
    let mut plain = larder_client::SyncClient::new();
    plain
        .connect(&app.sync_url_with(lists[7], Some(&owner.access_token)))
        .await
        .expect("connect");
    wait_synced(&plain).await;
    mux.edit(lists[7], |list, txn| list.add_item(txn, &new_item("Milk")))
        .expect("valid item");
    let mine = mux.state_vector(lists[7]);
    eventually(
        "the plain client sees the edit",
        Duration::from_secs(10),
        || async { names(&plain.snapshot()) == ["Milk"] },
    )
    .await;
    add_item(&plain, "Bread");
    eventually(
        "the multiplexed socket sees the edit",
        Duration::from_secs(10),
        || async { names(&mux.snapshot(lists[7])).contains(&"Bread".to_owned()) },
    )
    .await;
    // The durable acknowledgement is per list: it covers the edit made
    // over the multiplexed socket.
    eventually("list 7 acknowledged", Duration::from_secs(10), || async {
        mux.durable(lists[7]).is_some_and(|stored| {
            mine.iter()
                .all(|(client, clock)| stored.get(client) >= *clock)
        })
    })
    .await;

    // Deleting one list closes it on the socket with 4404; the others sync on.
    let (status, _) = app
        .call(
            "DELETE",
            &format!("/v1/lists/{}", lists[3]),
            Some(&owner.access_token),
            None,
        )
        .await;
    assert_eq!(status, 204);
    eventually("list 3 closed", Duration::from_secs(10), || async {
        mux.closed(lists[3]).is_some()
    })
    .await;
    assert_eq!(mux.closed(lists[3]).unwrap().0, 4404);
    mux.edit(lists[49], |list, txn| list.add_item(txn, &new_item("Tea")))
        .expect("valid item");
    let stored = lists[49];
    eventually("list 49 still syncs", Duration::from_secs(10), || async {
        names(&stored_snapshot(db.url(), stored).await) == ["Tea"]
    })
    .await;
    assert!(mux.socket_closed().is_none());
    assert!(
        lists
            .iter()
            .filter(|l| **l != lists[3])
            .all(|l| mux.closed(*l).is_none())
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_are_refused_and_closed_one_by_one_with_their_own_codes() {
    let db = TestDatabase::create().await;
    let app = TestApp::spawn_with(db.url(), |c| c.limits.max_lists_per_socket = 3).await;
    let owner = app.signup("owner").await;
    let family = app.create_family(&owner, "Smiths").await;
    let stranger = app.signup("stranger").await;
    let theirs = app
        .create_list(
            &stranger,
            app.create_family(&stranger, "Joneses").await,
            "Theirs",
        )
        .await;
    let a = app.create_list(&owner, family, "A").await;
    let b = app.create_list(&owner, family, "B").await;
    let c = app.create_list(&owner, family, "C").await;
    let d = app.create_list(&owner, family, "D").await;
    let mux = MuxClient::connect(&mux_url(&app, &owner.access_token))
        .await
        .expect("connect");

    mux.subscribe(theirs, false);
    eventually(
        "another family's list is refused",
        Duration::from_secs(10),
        || async { mux.closed(theirs).is_some() },
    )
    .await;
    assert_eq!(mux.closed(theirs).unwrap().0, 4404);
    let unknown = Uuid::now_v7();
    mux.subscribe(unknown, false);
    eventually(
        "an unknown list is refused",
        Duration::from_secs(10),
        || async { mux.closed(unknown).is_some() },
    )
    .await;

    // An unsubscribe is always confirmed, even of a list that was refused.
    mux.unsubscribe(unknown);
    eventually(
        "the unsubscribe is confirmed",
        Duration::from_secs(10),
        || async { mux.closed(unknown).is_some_and(|(code, _)| code == 1000) },
    )
    .await;

    for list in [a, b, c] {
        mux.subscribe(list, false);
        wait_synced_mux(&mux, list).await;
    }
    mux.subscribe(d, false);
    eventually(
        "a fourth list is one too many",
        Duration::from_secs(10),
        || async { mux.closed(d).is_some() },
    )
    .await;
    assert_eq!(mux.closed(d).unwrap().0, 4429);

    // Unsubscribing is confirmed with 1000 and frees a place.
    mux.unsubscribe(c);
    eventually("unsubscribed", Duration::from_secs(10), || async {
        mux.closed(c).is_some()
    })
    .await;
    assert_eq!(mux.closed(c).unwrap().0, 1000);
    mux.subscribe(d, false);
    wait_synced_mux(&mux, d).await;

    // A malformed message closes its list only.
    let garbage = larder_crdt::mux::MuxFrame::Data {
        list: a,
        payload: &[0, 2, 0xff, 0xff, 0xff],
    }
    .encode();
    mux.send_raw(garbage);
    eventually(
        "list A closed as malformed",
        Duration::from_secs(10),
        || async { mux.closed(a).is_some() },
    )
    .await;
    assert_eq!(mux.closed(a).unwrap().0, 4400);
    mux.edit(b, |list, txn| list.add_item(txn, &new_item("Eggs")))
        .expect("valid item");
    eventually("list B still syncs", Duration::from_secs(10), || async {
        names(&stored_snapshot(db.url(), b).await) == ["Eggs"]
    })
    .await;
    assert!(mux.socket_closed().is_none());

    // A frame that is not a frame closes the socket.
    mux.send_raw(vec![7; 3]);
    eventually("the socket closes", Duration::from_secs(10), || async {
        mux.socket_closed().is_some()
    })
    .await;
    assert_eq!(mux.socket_closed().unwrap().0, 4400);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_token_closes_the_socket_and_a_removed_member_loses_the_lists() {
    let db = TestDatabase::create().await;
    let app = TestApp::spawn(db.url()).await;
    let refused = MuxClient::connect(&mux_url(&app, "not-a-token"))
        .await
        .expect("connect");
    eventually("the socket closes", Duration::from_secs(10), || async {
        refused.socket_closed().is_some()
    })
    .await;
    assert_eq!(refused.socket_closed().unwrap().0, 4401);

    let owner = app.signup("owner").await;
    let member = app.signup("member").await;
    let family = app.create_family(&owner, "Smiths").await;
    app.add_member(&owner, family, &member).await;
    let list = app.create_list(&owner, family, "Weekly").await;
    let mux = MuxClient::connect(&mux_url(&app, &member.access_token))
        .await
        .expect("connect");
    mux.subscribe(list, false);
    wait_synced_mux(&mux, list).await;
    let (status, _) = app
        .call(
            "DELETE",
            &format!("/v1/families/{family}/members/{}", member.user_id),
            Some(&owner.access_token),
            None,
        )
        .await;
    assert_eq!(status, 204);
    eventually(
        "the list is closed for the removed member",
        Duration::from_secs(10),
        || async { mux.closed(list).is_some() },
    )
    .await;
    assert_eq!(mux.closed(list).unwrap().0, 4403);
    app.stop().await;
}
