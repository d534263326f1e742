//! The projector: merged list documents become relational rows that equal
//! what larder-crdt reads from the document, monotonically, whatever
//! clients wrote, and after a restart.

use std::time::Duration;

use larder_crdt::{ItemPatch, ItemStatus, ListSnapshot, NewOrder, OrderItemRow};
use larder_storage::Database;
use larder_storage::projection::{ItemFilter, Projected, Projection};
use larder_tests::*;
use proptest::prelude::*;
use uuid::Uuid;

/// An item row: id, name, quantity, status, category, note, assignee, position.
type ItemRow = (
    String,
    String,
    Option<String>,
    String,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);
/// An order line: item id, name, quantity.
type OrderLine = (Option<String>, String, Option<String>);
/// An order: id, status, lines.
type OrderRow = (String, String, Vec<OrderLine>);

/// The projected rows of a list in the order larder-crdt reads items.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rows {
    name: String,
    status: String,
    counts: (i32, i32, i32, i32),
    items: Vec<ItemRow>,
    orders: Vec<OrderRow>,
}

/// The same rows as read from a document snapshot.
fn expected_rows(snapshot: &ListSnapshot) -> Rows {
    let count = |s: ItemStatus| snapshot.items.iter().filter(|i| i.status == s).count() as i32;
    // Order ids are UUIDs in the relational schema: others are left out.
    let mut orders: Vec<_> = snapshot
        .orders
        .iter()
        .filter(|o| Uuid::parse_str(&o.id).is_ok())
        .map(|o| {
            (
                o.id.clone(),
                o.status.as_str().to_owned(),
                o.items
                    .iter()
                    .map(|l| (l.item_id.clone(), l.name.clone(), l.quantity.clone()))
                    .collect(),
            )
        })
        .collect();
    orders.sort();
    Rows {
        name: snapshot.meta.name.clone().unwrap_or_default(),
        status: snapshot
            .meta
            .status
            .map_or("active", |s| s.as_str())
            .to_owned(),
        counts: (
            snapshot.items.len() as i32,
            count(ItemStatus::Needed),
            count(ItemStatus::InCart),
            count(ItemStatus::Purchased),
        ),
        items: snapshot
            .items
            .iter()
            .map(|i| {
                (
                    i.id.clone(),
                    i.name.clone(),
                    i.quantity.clone(),
                    i.status.as_str().to_owned(),
                    i.category.clone(),
                    i.note.clone(),
                    i.assignee.clone(),
                    i.position.clone(),
                )
            })
            .collect(),
        orders,
    }
}

/// The rows as the REST API reads them (list row, items, orders).
async fn projected_rows(db: &Database, list: Uuid) -> Rows {
    let row = db
        .directory
        .list(list)
        .await
        .expect("list row")
        .expect("list");
    let items = db
        .projections
        .items(list, &ItemFilter::default())
        .await
        .expect("items");
    let mut orders: Vec<_> = db
        .projections
        .family_orders(row.family_id, None, None, 10_000)
        .await
        .expect("orders")
        .into_iter()
        .filter(|o| o.list_id == list)
        .map(|o| {
            (
                o.id.to_string(),
                o.status,
                o.items
                    .into_iter()
                    .map(|l| (l.item_id.map(|i| i.to_string()), l.name, l.quantity))
                    .collect::<Vec<_>>(),
            )
        })
        .collect();
    orders.sort();
    Rows {
        name: row.name,
        status: row.status,
        counts: (
            row.item_count,
            row.needed_count,
            row.in_cart_count,
            row.purchased_count,
        ),
        items: items
            .into_iter()
            .map(|i| {
                (
                    i.item_id.to_string(),
                    i.name,
                    i.quantity,
                    i.status,
                    i.category,
                    i.note,
                    i.assignee,
                    i.position,
                )
            })
            .collect(),
        orders,
    }
}

async fn seqs(db: &Database, list: Uuid) -> (i64, i64) {
    let row = db
        .directory
        .list(list)
        .await
        .expect("list row")
        .expect("list");
    (row.head_seq, row.projected_seq)
}

/// Waits until the rows equal the document `snapshot` and the projection
/// caught up with the log.
async fn wait_projected(pool: &Database, list: Uuid, snapshot: &ListSnapshot) {
    let expected = expected_rows(snapshot);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let rows = projected_rows(pool, list).await;
        let (head, projected) = seqs(pool, list).await;
        if rows == expected && head == projected {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            assert_eq!(
                rows, expected,
                "projected rows (head {head}, projected {projected})"
            );
            panic!("rows match but projected_seq {projected} lags head_seq {head}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn pool(db: &TestDatabase) -> Database {
    db.open(2).await
}

fn fast_projection(c: &mut larder_server::Config) {
    c.projector.projection_debounce_ms = 20;
    c.projector.projection_max_delay_ms = 200;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_edits_are_projected_into_rows_with_counts_and_orders() {
    let db = TestDatabase::create().await;
    let app = TestApp::spawn_with(db.url(), fast_projection).await;
    let pool = pool(&db).await;
    let list = Uuid::now_v7();
    let client = app.connect(list).await;
    let milk = add_item(&client, "Milk");
    let bread = add_item(&client, "Bread");
    add_item(&client, "Eggs");
    patch_item(
        &client,
        &milk,
        &ItemPatch {
            status: Some(ItemStatus::InCart),
            category: Some(Some("dairy".into())),
            ..Default::default()
        },
    );
    patch_item(
        &client,
        &bread,
        &ItemPatch {
            status: Some(ItemStatus::Purchased),
            ..Default::default()
        },
    );
    client.edit(|txn| {
        client
            .list()
            .add_order(
                txn,
                &NewOrder {
                    id: Uuid::new_v4().to_string(),
                    vendor_id: Uuid::new_v4().to_string(),
                    items: vec![OrderItemRow {
                        item_id: Some(milk.clone()),
                        name: "Milk".into(),
                        quantity: Some("2".into()),
                    }],
                    placed_by: Some("tester".into()),
                    placed_at_ms: 1_700_000_000_000,
                    note: None,
                    share_id: None,
                },
            )
            .expect("valid order")
    });
    wait_projected(&pool, list, &client.snapshot()).await;
    // A removed item vanishes from the rows.
    client.edit(|txn| client.list().remove_item(txn, &bread));
    wait_projected(&pool, list, &client.snapshot()).await;
    app.stop().await;
}

/// The value of `larder_projection_reads_total{from="..."}` on `app`.
async fn projection_reads(app: &TestApp, from: &str) -> u64 {
    let text = http_client()
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics body");
    let prefix = format!("larder_projection_reads_total{{from=\"{from}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0, |v| v.trim().parse().expect("a count"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_list_is_projected_from_its_room_change_by_change() {
    let db = TestDatabase::create().await;
    let app = TestApp::spawn_with(db.url(), fast_projection).await;
    let pool = pool(&db).await;
    let list = Uuid::now_v7();
    let client = app.connect(list).await;
    let mut ids = Vec::new();
    for round in 0..6 {
        // Each round adds, changes and removes items and changes an order,
        // so every kind of change goes through a projection written over
        // the one before it.
        ids.push(add_item(&client, &format!("item {round}")));
        ids.push(add_item(&client, &format!("extra {round}")));
        patch_item(
            &client,
            &ids[round],
            &ItemPatch {
                status: Some(ItemStatus::InCart),
                note: Some(Some(format!("round {round}"))),
                ..Default::default()
            },
        );
        if round % 2 == 1 {
            let gone = ids.remove(0);
            client.edit(|txn| client.list().remove_item(txn, &gone));
        }
        client.edit(|txn| {
            client
                .list()
                .add_order(
                    txn,
                    &NewOrder {
                        id: Uuid::new_v4().to_string(),
                        vendor_id: Uuid::new_v4().to_string(),
                        items: vec![OrderItemRow {
                            item_id: None,
                            name: format!("line {round}"),
                            quantity: None,
                        }],
                        placed_by: None,
                        placed_at_ms: 1_700_000_000_000,
                        note: None,
                        share_id: None,
                    },
                )
                .expect("valid order")
        });
        wait_projected(&pool, list, &client.snapshot()).await;
    }
    assert!(
        projection_reads(&app, "room").await >= 6,
        "an open list is read from its room, not from the log"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_projection_committed_after_a_newer_one_leaves_the_newer_in_place() {
    let db = TestDatabase::create().await;
    let app = TestApp::spawn_with(db.url(), |c| {
        // This test writes projections itself.
        c.projector.projection_debounce_ms = 600_000;
        c.projector.projection_max_delay_ms = 600_000;
        c.projector.projection_scan_ms = 600_000;
    })
    .await;
    let pool = pool(&db).await;
    let list = Uuid::now_v7();
    let client = app.connect(list).await;
    for name in ["a", "b", "c", "d"] {
        add_item(&client, name);
        wait_stored(db.url(), list, &client.snapshot()).await;
    }
    let (head, _) = seqs(&pool, list).await;
    assert!(head >= 3, "several batches stored: {head}");
    let projections = pool.projections.clone();
    let newer = Projection {
        name: "newer".into(),
        status: "active".into(),
        ..Default::default()
    };
    let older = Projection {
        name: "older".into(),
        status: "archived".into(),
        ..Default::default()
    };
    // The newer commits first, as a faster replica would.
    let head = head as u64;
    assert!(matches!(
        projections.write(list, head, &newer).await.expect("write"),
        Projected::Applied { .. }
    ));
    assert_eq!(
        projections
            .write(list, head - 1, &older)
            .await
            .expect("write"),
        Projected::Stale {
            projected_seq: head
        }
    );
    assert_eq!(
        projections.write(list, head, &older).await.expect("write"),
        Projected::Stale {
            projected_seq: head
        }
    );
    let rows = projected_rows(&pool, list).await;
    assert_eq!(
        (rows.name.as_str(), rows.status.as_str()),
        ("newer", "active")
    );
    assert_eq!(seqs(&pool, list).await.1, head as i64);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_written_by_a_foreign_client_is_skipped_and_valid_items_still_projected() {
    let db = TestDatabase::create().await;
    let app = TestApp::spawn_with(db.url(), fast_projection).await;
    let pool = pool(&db).await;
    let list = Uuid::now_v7();
    let client = app.connect(list).await;
    add_item(&client, "Valid");
    use yrs::{Map, MapPrelim};
    // Root maps are taken before the transaction (taking one opens its own).
    let items = client.doc().get_or_insert_map("items");
    let orders = client.doc().get_or_insert_map("orders");
    client.edit(|txn| {
        // Not a map at all.
        items.insert(txn, Uuid::new_v4().to_string(), 42);
        // No name.
        items.insert(
            txn,
            Uuid::new_v4().to_string(),
            MapPrelim::from([("status", "needed")]),
        );
        // A name of the wrong type.
        let wrong = items.insert(txn, Uuid::new_v4().to_string(), MapPrelim::default());
        wrong.insert(txn, "name", 7);
        // An id that is no UUID.
        items.insert(
            txn,
            "not-a-uuid",
            MapPrelim::from([("name", "x"), ("status", "needed")]),
        );
        // An unknown status.
        items.insert(
            txn,
            Uuid::new_v4().to_string(),
            MapPrelim::from([("name", "y"), ("status", "lost")]),
        );
        // An order with an id that is no UUID.
        orders.insert(txn, "order-1", MapPrelim::from([("status", "placed")]));
    });
    add_item(&client, "Also valid");
    let snapshot = client.snapshot();
    assert_eq!(
        snapshot.items.len(),
        2,
        "larder-crdt keeps the valid items only"
    );
    wait_projected(&pool, list, &snapshot).await;
    let stored = pool
        .projections
        .items(list, &ItemFilter::default())
        .await
        .expect("items");
    assert_eq!(stored.len(), 2);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_lagging_their_log_catch_up_when_a_replica_starts() {
    let db = TestDatabase::create().await;
    let pool = pool(&db).await;
    let list = Uuid::now_v7();
    let snapshot = {
        // A replica that never gets round to projecting.
        let app = TestApp::spawn_with(db.url(), |c| {
            c.projector.projection_debounce_ms = 600_000;
            c.projector.projection_max_delay_ms = 600_000;
            c.projector.projection_scan_ms = 600_000;
        })
        .await;
        let client = app.connect(list).await;
        add_item(&client, "Apples");
        add_item(&client, "Pears");
        let snapshot = client.snapshot();
        wait_stored(db.url(), list, &snapshot).await;
        app.stop().await;
        snapshot
    };
    let (head, projected) = seqs(&pool, list).await;
    assert!(
        projected < head,
        "rows lag: projected {projected}, head {head}"
    );
    let app = TestApp::spawn(db.url()).await;
    wait_projected(&pool, list, &snapshot).await;
    app.stop().await;
}

/// One edit of the property test.
#[derive(Debug, Clone)]
enum Op {
    Add {
        client: usize,
        name: String,
    },
    Status {
        client: usize,
        pick: usize,
        status: ItemStatus,
    },
    Rename {
        client: usize,
        pick: usize,
        name: String,
    },
    Remove {
        client: usize,
        pick: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let status = prop_oneof![
        Just(ItemStatus::Needed),
        Just(ItemStatus::InCart),
        Just(ItemStatus::Purchased)
    ];
    prop_oneof![
        3 => (0..4usize, "[a-z]{1,8}").prop_map(|(client, name)| Op::Add { client, name }),
        2 => (0..4usize, any::<usize>(), status).prop_map(|(client, pick, status)| Op::Status { client, pick, status }),
        1 => (0..4usize, any::<usize>(), "[a-z]{1,8}").prop_map(|(client, pick, name)| Op::Rename { client, pick, name }),
        1 => (0..4usize, any::<usize>()).prop_map(|(client, pick)| Op::Remove { client, pick }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6, ..ProptestConfig::default() })]

    /// Four clients on two replicas edit concurrently; once quiet, the
    /// projected rows equal what larder-crdt reads from the merged document.
    #[test]
    fn concurrent_histories_on_two_replicas_project_to_the_merged_document(ops in prop::collection::vec(op(), 1..40)) {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
        runtime.block_on(async move {
            let db = TestDatabase::create().await;
            let redis = redis_url().await;
            let a = TestApp::spawn_replica(db.url(), &redis, fast_projection).await;
            let b = TestApp::spawn_replica(db.url(), &redis, fast_projection).await;
            let pool = pool(&db).await;
            let list = Uuid::now_v7();
            let mut clients = Vec::new();
            for n in 0..4 {
                clients.push(if n % 2 == 0 { a.connect(list).await } else { b.connect(list).await });
            }
            for op in ops {
                match op {
                    Op::Add { client, name } => { add_item(&clients[client], &name); }
                    Op::Status { client, pick, status } => {
                        let c = &clients[client];
                        let items = c.snapshot().items;
                        if !items.is_empty() {
                            let id = items[pick % items.len()].id.clone();
                            patch_item(c, &id, &ItemPatch { status: Some(status), ..Default::default() });
                        }
                    }
                    Op::Rename { client, pick, name } => {
                        let c = &clients[client];
                        let items = c.snapshot().items;
                        if !items.is_empty() {
                            let id = items[pick % items.len()].id.clone();
                            patch_item(c, &id, &ItemPatch { name: Some(name), ..Default::default() });
                        }
                    }
                    Op::Remove { client, pick } => {
                        let c = &clients[client];
                        let items = c.snapshot().items;
                        if !items.is_empty() {
                            let id = items[pick % items.len()].id.clone();
                            c.edit(|txn| c.list().remove_item(txn, &id));
                        }
                    }
                }
            }
            let refs: Vec<&larder_client::SyncClient> = clients.iter().collect();
            let merged = converge(&refs).await;
            wait_stored(db.url(), list, &merged).await;
            wait_projected(&pool, list, &merged).await;
            pool.close().await;
            a.stop().await;
            b.stop().await;
        });
    }
}
