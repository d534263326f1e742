//! `larder export` / `larder import` at the storage level: an installation
//! written from one backend and read into the other keeps every row, list
//! id, sequence, log and account; the table list covers the whole schema.

mod common;

use std::collections::BTreeSet;

use chrono::Utc;
use larder_storage::directory::{Created, IdempotencyRecord};
use larder_storage::portable::{TABLES, export, import};
use larder_storage::testing::TestDatabase;
use larder_storage::{Database, NewUpdate, Snapshot};
use uuid::Uuid;

on_both!(
    an_installation_moves_to_the_other_backend_whole,
    every_table_of_the_schema_is_exported
);

/// The key a client sent when creating the list `name`.
fn idempotency_key(user_id: Uuid, name: &str) -> IdempotencyRecord {
    IdempotencyRecord {
        user_id,
        key: format!("create-{name}"),
        method: "POST".into(),
        path: "/v1/families/f/lists".into(),
        request_hash: name.into(),
        response_status: 201,
        response_body: format!(r#"{{"name":"{name}","tags":null}}"#),
        expires_at: Utc::now() + chrono::Duration::hours(24),
    }
}

async fn populate(db: &Database) -> (Uuid, Vec<Uuid>) {
    let d = &db.directory;
    let ann = d
        .create_user("ann@larder.test", "Ann", "hash")
        .await
        .unwrap()
        .unwrap();
    let bob = d
        .create_user("bob@larder.test", "Bob", "hash")
        .await
        .unwrap()
        .unwrap();
    d.insert_refresh_token(ann.id, "t1", Utc::now() + chrono::Duration::hours(1))
        .await
        .unwrap();
    d.rotate_refresh_token(
        "t1",
        "t2",
        Utc::now() + chrono::Duration::hours(2),
        std::time::Duration::ZERO,
    )
    .await
    .unwrap();
    let family = Uuid::now_v7();
    d.create_family(family, "Home", ann.id, Utc::now(), None)
        .await
        .unwrap();
    d.create_invitation(
        family,
        "code",
        "member",
        ann.id,
        Utc::now() + chrono::Duration::hours(1),
    )
    .await
    .unwrap();
    d.accept_invitation("code", bob.id).await.unwrap();
    let mut lists = Vec::new();
    for name in ["Weekly", "Party"] {
        let id = Uuid::now_v7();
        let key = idempotency_key(ann.id, name);
        d.create_list(
            id,
            family,
            name,
            ann.id,
            Utc::now(),
            b"first",
            "test",
            Some(&key),
        )
        .await
        .unwrap();
        lists.push(id);
    }
    for i in 0..5u8 {
        db.store
            .append(vec![NewUpdate {
                list_id: lists[0],
                update: vec![i, 0, 255],
                origin: "test".into(),
                user_id: Some(bob.id),
            }])
            .await
            .unwrap();
    }
    db.store
        .try_lease_compaction(lists[0], std::time::Duration::from_secs(60))
        .await
        .unwrap();
    db.store
        .store_snapshot(
            lists[0],
            Snapshot {
                up_to_seq: 4,
                state: b"folded".to_vec(),
            },
        )
        .await
        .unwrap();
    d.create_read_only_link(lists[1], ann.id, Utc::now() + chrono::Duration::hours(1))
        .await
        .unwrap();
    d.set_list_deleted(lists[1], true).await.unwrap();
    (family, lists)
}

async fn an_installation_moves_to_the_other_backend_whole(source: TestDatabase) {
    let target = match source.backend() {
        larder_storage::Backend::Sqlite => TestDatabase::postgres().await,
        larder_storage::Backend::Postgres => TestDatabase::sqlite().await,
    };
    let (from, to) = (source.open(2).await, target.open(2).await);
    let (family, lists) = populate(&from).await;
    let mut file = Vec::new();
    let exported = export(&from, &mut file).await.expect("export");
    let imported = import(&to, file.as_slice()).await.expect("import");
    assert_eq!(exported, imported, "every row written is read");
    assert!(exported.total() >= 15, "{exported:?}");

    for list in &lists {
        assert_eq!(
            from.store.load_doc(*list).await.unwrap(),
            to.store.load_doc(*list).await.unwrap(),
            "same log, snapshot and sequences"
        );
    }
    let stored = to.store.load_doc(lists[0]).await.unwrap();
    assert_eq!(
        (stored.head_seq, stored.snapshot.unwrap().up_to_seq),
        (6, 4)
    );
    assert!(
        to.store
            .list_head(lists[1])
            .await
            .unwrap()
            .unwrap()
            .is_deleted
    );
    let ann = to
        .directory
        .user_by_email("ann@larder.test")
        .await
        .unwrap()
        .expect("ann moved");
    // PostgreSQL keeps times to the microsecond, SQLite as written.
    let micros = |members: Vec<larder_storage::directory::Member>| -> Vec<(Uuid, String, i64)> {
        members
            .into_iter()
            .map(|m| (m.user_id, m.role, m.joined_at.timestamp_micros()))
            .collect()
    };
    let members = micros(to.directory.members(family).await.unwrap());
    assert_eq!(
        members,
        micros(from.directory.members(family).await.unwrap())
    );
    assert_eq!(members.len(), 2);
    assert_eq!(
        to.directory
            .family_for(family, ann.id)
            .await
            .unwrap()
            .unwrap()
            .role,
        "admin"
    );
    assert_eq!(
        to.directory.read_only_links(lists[1]).await.unwrap().len(),
        1
    );
    // The session moved too: the live refresh token rotates on the target.
    assert!(matches!(
        to.directory
            .rotate_refresh_token("t2", "t3", Utc::now(), std::time::Duration::ZERO)
            .await
            .unwrap(),
        larder_storage::directory::Rotation::Rotated { .. }
    ));
    // A retried request replays the response stored before the move.
    let retried = to
        .directory
        .create_list(
            Uuid::now_v7(),
            family,
            "Weekly",
            ann.id,
            Utc::now(),
            b"again",
            "test",
            Some(&idempotency_key(ann.id, "Weekly")),
        )
        .await
        .unwrap();
    assert!(
        matches!(&retried, Created::Replay { status: 201, body } if body.replace(' ', "") == r#"{"name":"Weekly","tags":null}"#),
        "{retried:?}"
    );
    // Sequences go on from where they were.
    let next = to
        .store
        .append(vec![NewUpdate {
            list_id: lists[0],
            update: vec![9],
            origin: "test".into(),
            user_id: None,
        }])
        .await
        .unwrap();
    assert_eq!(next[&lists[0]].first, 7);

    // A second import into the now populated database is refused, whole.
    let refused = import(&to, file.as_slice()).await.unwrap_err().to_string();
    assert!(refused.contains("not empty"), "{refused}");
    // So is a damaged file, and nothing of it is written.
    let empty = match target.backend() {
        larder_storage::Backend::Sqlite => TestDatabase::sqlite().await,
        larder_storage::Backend::Postgres => TestDatabase::postgres().await,
    };
    let empty = empty.open(1).await;
    let mut damaged = String::from_utf8(file.clone()).unwrap();
    damaged.push_str("{\"row\": [\"not enough\"]}\n");
    let refused = import(&empty, damaged.as_bytes())
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("values for the"), "{refused}");
    assert!(
        empty
            .directory
            .user_by_email("ann@larder.test")
            .await
            .unwrap()
            .is_none()
    );
    // A log that passes its list's head would break every later append.
    let original = String::from_utf8(file.clone()).unwrap();
    let party = original
        .lines()
        .find(|l| l.contains(&lists[1].to_string()) && l.contains("\"Party\""))
        .expect("the list's row")
        .to_owned();
    let behind = original.replacen(&party, &party.replacen(",0,1,0,0,", ",0,0,0,0,", 1), 1);
    assert_ne!(behind, original, "the head was rewritten");
    let refused = import(&empty, behind.as_bytes())
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("past their head_seq"), "{refused}");
}

async fn every_table_of_the_schema_is_exported(db: TestDatabase) {
    let database = db.open(1).await;
    let sql = match db.backend() {
        larder_storage::Backend::Postgres => {
            "SELECT table_name::text FROM information_schema.tables \
             WHERE table_schema = 'public' AND table_name <> '_sqlx_migrations'"
        }
        larder_storage::Backend::Sqlite => {
            "SELECT name FROM sqlite_master WHERE type = 'table' \
             AND name NOT LIKE 'sqlite_%' AND name <> '_sqlx_migrations'"
        }
    };
    let tables: BTreeSet<String> = match &database.pools {
        larder_storage::database::Pools::Postgres(pool) => sqlx::query_scalar(sql)
            .fetch_all(pool)
            .await
            .unwrap()
            .into_iter()
            .collect(),
        larder_storage::database::Pools::Sqlite(_) => {
            let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(db.url())
                .await
                .unwrap();
            sqlx::query_scalar(sql)
                .fetch_all(&mut conn)
                .await
                .unwrap()
                .into_iter()
                .collect()
        }
    };
    let exported: BTreeSet<String> = TABLES.iter().map(|t| t.name.to_owned()).collect();
    assert_eq!(
        tables, exported,
        "a new table needs a place in portable::TABLES"
    );

    // And every column of every table.
    let columns_sql = match db.backend() {
        larder_storage::Backend::Postgres => {
            "SELECT table_name::text || '.' || column_name::text FROM information_schema.columns \
             WHERE table_schema = 'public' AND table_name <> '_sqlx_migrations'"
        }
        larder_storage::Backend::Sqlite => {
            "SELECT m.name || '.' || c.name FROM sqlite_master m, pragma_table_info(m.name) c \
             WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%' AND m.name <> '_sqlx_migrations'"
        }
    };
    let columns: BTreeSet<String> = match &database.pools {
        larder_storage::database::Pools::Postgres(pool) => sqlx::query_scalar(columns_sql)
            .fetch_all(pool)
            .await
            .unwrap()
            .into_iter()
            .collect(),
        larder_storage::database::Pools::Sqlite(_) => {
            let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(db.url())
                .await
                .unwrap();
            sqlx::query_scalar(columns_sql)
                .fetch_all(&mut conn)
                .await
                .unwrap()
                .into_iter()
                .collect()
        }
    };
    let exported: BTreeSet<String> = TABLES
        .iter()
        .flat_map(|t| {
            t.columns
                .iter()
                .map(move |(c, _)| format!("{}.{c}", t.name))
        })
        .collect();
    assert_eq!(
        columns, exported,
        "a new column needs a place in portable::TABLES"
    );
}
