//! The Store contract, held against both backends: every test runs on
//! PostgreSQL and on SQLite (`on_both!` in `common`).

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use larder_storage::testing::TestDatabase;
use larder_storage::{NewUpdate, Snapshot, Store, StoreError};
use uuid::Uuid;

async fn store(db: &TestDatabase) -> Arc<dyn Store> {
    db.open(8).await.store
}

on_both!(
    sequences_have_no_holes_or_duplicates_with_many_concurrent_writers,
    an_update_committed_during_compaction_is_kept,
    deleted_and_unknown_lists_take_no_updates,
    ensuring_a_list_twice_keeps_one_row_and_its_log,
    catching_up_reads_the_missing_updates_or_falls_back_to_the_snapshot,
    an_append_abandoned_half_way_leaves_nothing_behind,
);

fn update(list_id: Uuid, body: &[u8]) -> NewUpdate {
    NewUpdate {
        list_id,
        update: body.to_vec(),
        origin: "test".into(),
        user_id: None,
    }
}

async fn sequences_have_no_holes_or_duplicates_with_many_concurrent_writers(db: TestDatabase) {
    let lists = [Uuid::new_v4(), Uuid::new_v4()];
    let setup = store(&db).await;
    for list in lists {
        setup.ensure_list(list).await.expect("list");
    }
    // Four stores with pools of their own act as four server processes
    // (with SQLite, four writers on one file: the busy timeout queues them).
    let mut writers = Vec::new();
    for w in 0..4u8 {
        let s = store(&db).await;
        writers.push(tokio::spawn(async move {
            for i in 0..40u8 {
                // Batches touching both lists, in both orders, to provoke lock-order trouble.
                let batch = if i % 2 == 0 {
                    vec![
                        update(lists[0], &[w, i]),
                        update(lists[1], &[w, i]),
                        update(lists[0], &[w, i, 1]),
                    ]
                } else {
                    vec![update(lists[1], &[w, i]), update(lists[0], &[w, i])]
                };
                s.append(batch).await.expect("append");
            }
        }));
    }
    for w in writers {
        w.await.expect("writer");
    }
    for (list, expected) in [(lists[0], 4 * 60), (lists[1], 4 * 40)] {
        let stored = setup.load_doc(list).await.expect("load");
        let seqs: Vec<u64> = stored.tail.iter().map(|u| u.seq).collect();
        assert_eq!(
            seqs,
            (1..=expected).collect::<Vec<u64>>(),
            "gapless, unique, ordered"
        );
        assert_eq!(stored.head_seq, expected);
        let bodies: BTreeSet<Vec<u8>> = stored.tail.iter().map(|u| u.update.clone()).collect();
        assert_eq!(bodies.len() as u64, expected, "every update stored once");
    }
}

async fn an_update_committed_during_compaction_is_kept(db: TestDatabase) {
    let s = store(&db).await;
    let list = Uuid::new_v4();
    s.ensure_list(list).await.expect("list");
    for i in 0..10u8 {
        s.append(vec![update(list, &[i])]).await.expect("append");
    }
    assert!(
        s.try_lease_compaction(list, Duration::from_secs(60))
            .await
            .expect("lease")
    );
    assert!(
        !s.try_lease_compaction(list, Duration::from_secs(60))
            .await
            .expect("lease"),
        "one compactor at a time"
    );
    let read = s.load_doc(list).await.expect("load");
    let up_to = read.tail.last().expect("tail").seq;
    // Another process commits while the compactor folds.
    s.append(vec![update(list, b"late")]).await.expect("append");
    s.store_snapshot(
        list,
        Snapshot {
            up_to_seq: up_to,
            state: b"folded".to_vec(),
        },
    )
    .await
    .expect("snapshot");

    let after = s.load_doc(list).await.expect("load");
    assert_eq!(
        after.snapshot,
        Some(Snapshot {
            up_to_seq: 10,
            state: b"folded".to_vec()
        })
    );
    assert_eq!(after.tail.len(), 1);
    assert_eq!(after.tail[0].seq, 11);
    assert_eq!(after.tail[0].update, b"late".to_vec());
    let head = s.list_head(list).await.expect("head").expect("exists");
    assert_eq!((head.head_seq, head.snapshot_seq), (11, 10));
    assert!(
        s.try_lease_compaction(list, Duration::from_secs(60))
            .await
            .expect("lease"),
        "storing released the lease"
    );
}

async fn deleted_and_unknown_lists_take_no_updates(db: TestDatabase) {
    let database = db.open(4).await;
    let s = database.store.clone();
    let live = Uuid::new_v4();
    let deleted = Uuid::now_v7();
    let unknown = Uuid::new_v4();
    s.ensure_list(live).await.expect("list");
    // A family's list, created with its first update, then deleted.
    let d = &database.directory;
    let owner = d
        .create_user("owner@larder.test", "Owner", "hash")
        .await
        .expect("user")
        .expect("new");
    let family = Uuid::now_v7();
    d.create_family(family, "Home", owner.id, chrono::Utc::now(), None)
        .await
        .expect("family");
    d.create_list(
        deleted,
        family,
        "Gone",
        owner.id,
        chrono::Utc::now(),
        b"first",
        "test",
        None,
    )
    .await
    .expect("list");
    d.set_list_deleted(deleted, true)
        .await
        .expect("soft delete")
        .expect("was live");
    let ranges = s
        .append(vec![
            update(live, b"a"),
            update(deleted, b"b"),
            update(unknown, b"c"),
        ])
        .await
        .expect("append");
    assert_eq!(ranges.len(), 1);
    assert_eq!(ranges[&live].first, 1);
    assert!(s.ensure_list(deleted).await.expect("head").is_deleted);
    assert_eq!(
        s.load_doc(deleted).await.expect("load").tail.len(),
        1,
        "only the first update"
    );
    assert!(matches!(
        s.load_doc(unknown).await,
        Err(StoreError::ListNotFound(_))
    ));
    assert!(s.list_head(unknown).await.expect("query").is_none());
}

async fn ensuring_a_list_twice_keeps_one_row_and_its_log(db: TestDatabase) {
    let s = store(&db).await;
    let list = Uuid::new_v4();
    s.ensure_list(list).await.expect("list");
    s.append(vec![update(list, b"x")]).await.expect("append");
    let head = s.ensure_list(list).await.expect("again");
    assert_eq!(head.head_seq, 1);
    assert_eq!(s.updates_after(list, 0).await.expect("read").len(), 1);
    assert!(s.updates_after(list, 1).await.expect("read").is_empty());
}

async fn catching_up_reads_the_missing_updates_or_falls_back_to_the_snapshot(db: TestDatabase) {
    let s = store(&db).await;
    let list = Uuid::new_v4();
    s.ensure_list(list).await.expect("list");
    for i in 1..=6u8 {
        s.append(vec![update(list, &[i])]).await.expect("append");
    }
    // A reader at 4 gets 5 and 6, no snapshot.
    let missing = s.load_since(list, 4).await.expect("load since");
    assert_eq!(missing.head_seq, 6);
    assert!(missing.snapshot.is_none());
    assert_eq!(
        missing.tail.iter().map(|u| u.seq).collect::<Vec<_>>(),
        vec![5, 6]
    );
    assert!(s.load_since(list, 6).await.expect("load").tail.is_empty());

    // Compaction folds 1..=5 away; a reader at 2 lacks rows that no longer
    // exist, so it gets the snapshot and what follows it.
    assert!(
        s.try_lease_compaction(list, Duration::from_secs(60))
            .await
            .expect("lease")
    );
    s.store_snapshot(
        list,
        Snapshot {
            up_to_seq: 5,
            state: b"folded".to_vec(),
        },
    )
    .await
    .expect("snapshot");
    let behind = s.load_since(list, 2).await.expect("load since");
    assert_eq!(behind.snapshot.as_ref().map(|s| s.up_to_seq), Some(5));
    assert_eq!(
        behind.tail.iter().map(|u| u.seq).collect::<Vec<_>>(),
        vec![6]
    );
    // A reader already past the snapshot needs no snapshot.
    let ahead = s.load_since(list, 5).await.expect("load since");
    assert!(ahead.snapshot.is_none());
    assert_eq!(
        ahead.tail.iter().map(|u| u.seq).collect::<Vec<_>>(),
        vec![6]
    );

    let unknown = Uuid::new_v4();
    assert!(matches!(
        s.load_since(unknown, 0).await,
        Err(StoreError::ListNotFound(id)) if id == unknown
    ));
    let heads = s.list_heads(&[list, unknown]).await.expect("heads");
    assert_eq!(heads.len(), 1);
    assert_eq!(heads[&list].head_seq, 6);
    assert_eq!(heads[&list].snapshot_seq, 5);
    assert!(!heads[&list].is_deleted);
}

async fn an_append_abandoned_half_way_leaves_nothing_behind(db: TestDatabase) {
    let s = store(&db).await;
    let lists = [Uuid::new_v4(), Uuid::new_v4()];
    for list in lists {
        s.ensure_list(list).await.expect("list");
    }
    // Appends of two lists each, dropped after more and more polls: each
    // either committed whole or left nothing, and the store keeps working.
    let mut committed = 0u64;
    for polls in 1..40 {
        let batch = vec![
            update(lists[0], &[polls]),
            update(lists[1], &[polls]),
            update(lists[0], &[polls, 1]),
        ];
        // Cut after 0.1 ms, 0.2 ms, ... 3.9 ms: before, during and after
        // the transaction.
        let cut = Duration::from_micros(100 * u64::from(polls));
        if tokio::time::timeout(cut, s.append(batch)).await.is_ok() {
            committed += 1;
        }
        // A cut commit may still land a moment later (the database got
        // COMMIT before the cut), so the two lists are read until they agree;
        // a half-applied batch would never let them.
        let mut settled = false;
        for _ in 0..200 {
            let first = s.load_doc(lists[0]).await.expect("load");
            let second = s.load_doc(lists[1]).await.expect("load");
            assert_eq!(first.tail.len() as u64, first.head_seq, "no holes");
            assert_eq!(second.tail.len() as u64, second.head_seq, "no holes");
            if first.head_seq == 2 * second.head_seq {
                settled = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(settled, "a batch commits whole or not at all");
    }
    let ranges = s
        .append(vec![update(lists[1], b"after")])
        .await
        .expect("the store still takes writes");
    assert!(committed >= 1, "some appends finished before their cut");
    assert_eq!(
        ranges[&lists[1]].first,
        s.list_head(lists[1]).await.unwrap().unwrap().head_seq
    );
}
