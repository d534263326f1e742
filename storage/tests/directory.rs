//! The directory and projection contracts, held against both backends:
//! accounts, refresh-token rotation, families, the last admin,
//! invitations, lists with idempotency keys, read-only links and the
//! projection's rows.

mod common;

use std::time::Duration;

use chrono::{DateTime, Utc};
use larder_storage::directory::{Acceptance, Created, IdempotencyRecord, MemberChange, Rotation};
use larder_storage::projection::{
    ItemFilter, Projected, ProjectedItem, ProjectedOrder, ProjectedOrderItem, Projection,
};
use larder_storage::testing::TestDatabase;
use uuid::Uuid;

on_both!(
    accounts_and_refresh_tokens,
    families_members_and_the_last_admin,
    invitations_are_spent_once,
    lists_and_idempotency_keys,
    read_only_links_expire_and_are_revoked,
    projections_are_written_incrementally_and_read_back,
);

fn in_hours(hours: i64) -> DateTime<Utc> {
    Utc::now() + chrono::Duration::hours(hours)
}

async fn user(db: &larder_storage::Database, name: &str) -> Uuid {
    db.directory
        .create_user(&format!("{name}@larder.test"), name, "hash")
        .await
        .expect("create user")
        .expect("email free")
        .id
}

async fn accounts_and_refresh_tokens(db: TestDatabase) {
    let db = db.open(4).await;
    let d = &db.directory;
    let ann = d
        .create_user("Ann@larder.test", "Ann", "h1")
        .await
        .expect("create")
        .expect("new");
    assert!(
        d.create_user("ann@LARDER.test", "Other", "h2")
            .await
            .expect("create")
            .is_none(),
        "emails are unique case-insensitively"
    );
    assert_eq!(
        d.user_by_email("ANN@larder.test")
            .await
            .unwrap()
            .unwrap()
            .id,
        ann.id
    );
    assert_eq!(
        d.user_by_id(ann.id).await.unwrap().unwrap().email,
        "Ann@larder.test"
    );

    d.insert_refresh_token(ann.id, "t1", in_hours(1))
        .await
        .expect("insert");
    let grace = Duration::from_secs(30);
    assert_eq!(
        d.rotate_refresh_token("t1", "t2", in_hours(2), grace)
            .await
            .unwrap(),
        Rotation::Rotated { user_id: ann.id }
    );
    // A retry of the same refresh within the grace period replays it.
    assert!(matches!(
        d.rotate_refresh_token("t1", "t2", in_hours(2), grace).await.unwrap(),
        Rotation::Replayed { user_id, .. } if user_id == ann.id
    ));
    // Spending t1 for another successor is reuse: the chain is revoked.
    assert_eq!(
        d.rotate_refresh_token("t1", "t3", in_hours(2), grace)
            .await
            .unwrap(),
        Rotation::Reused
    );
    assert_eq!(
        d.rotate_refresh_token("t2", "t4", in_hours(2), grace)
            .await
            .unwrap(),
        Rotation::Reused,
        "the successor went with its chain"
    );
    assert_eq!(
        d.rotate_refresh_token("nope", "t5", in_hours(2), grace)
            .await
            .unwrap(),
        Rotation::Unknown
    );
    d.insert_refresh_token(ann.id, "old", Utc::now() - chrono::Duration::seconds(1))
        .await
        .unwrap();
    assert_eq!(
        d.rotate_refresh_token("old", "t6", in_hours(2), grace)
            .await
            .unwrap(),
        Rotation::Expired
    );
    d.insert_refresh_token(ann.id, "s1", in_hours(1))
        .await
        .unwrap();
    assert_eq!(d.revoke_refresh_token("s1").await.unwrap(), Some(ann.id));
    assert_eq!(
        d.rotate_refresh_token("s1", "s2", in_hours(2), grace)
            .await
            .unwrap(),
        Rotation::Reused,
        "a logged-out token is spent"
    );
}

async fn families_members_and_the_last_admin(db: TestDatabase) {
    let db = db.open(4).await;
    let d = &db.directory;
    let (ann, bob) = (user(&db, "ann").await, user(&db, "bob").await);
    let family = Uuid::now_v7();
    let created = d
        .create_family(family, "Home", ann, Utc::now(), None)
        .await
        .unwrap();
    assert!(matches!(created, Created::New(ref f) if f.role == "admin"));
    d.rename_family(family, "The Home").await.unwrap();
    assert_eq!(d.families_of(ann).await.unwrap()[0].name, "The Home");
    assert!(d.family_for(family, bob).await.unwrap().is_none());

    let code = Uuid::new_v4().to_string();
    d.create_invitation(family, &code, "member", ann, in_hours(1))
        .await
        .unwrap()
        .expect("an admin invites");
    assert_eq!(
        d.accept_invitation(&code, bob).await.unwrap(),
        Acceptance::Joined {
            family_id: family,
            role: "member".into()
        }
    );
    let members = d.members(family).await.unwrap();
    assert_eq!(
        members.iter().map(|m| m.user_id).collect::<Vec<_>>(),
        vec![ann, bob],
        "in the order they joined"
    );
    assert_eq!(
        d.set_member_role(family, ann, "member", bob).await.unwrap(),
        MemberChange::NotAdmin
    );
    assert_eq!(
        d.set_member_role(family, ann, "member", ann).await.unwrap(),
        MemberChange::LastAdmin
    );
    assert_eq!(
        d.remove_member(family, ann, ann).await.unwrap(),
        MemberChange::LastAdmin
    );
    let promoted = d.set_member_role(family, bob, "admin", ann).await.unwrap();
    assert!(matches!(promoted, MemberChange::Done(Some(ref m)) if m.role == "admin"));

    // Two admins demoting each other at once: one of them stays admin.
    let (a, b) = tokio::join!(
        d.set_member_role(family, ann, "member", bob),
        d.set_member_role(family, bob, "member", ann)
    );
    let outcomes = [a.unwrap(), b.unwrap()];
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| matches!(o, MemberChange::Done(_)))
            .count(),
        1,
        "{outcomes:?}"
    );
    let admins = d
        .members(family)
        .await
        .unwrap()
        .into_iter()
        .filter(|m| m.role == "admin")
        .count();
    assert_eq!(admins, 1);

    // A member leaving revokes the links and codes they handed out.
    let list = Uuid::now_v7();
    let admin = if d.family_for(family, ann).await.unwrap().unwrap().role == "admin" {
        ann
    } else {
        bob
    };
    let other = if admin == ann { bob } else { ann };
    d.create_list(
        list,
        family,
        "Weekly",
        admin,
        Utc::now(),
        b"\0\0",
        "test",
        None,
    )
    .await
    .unwrap();
    let link = d
        .create_read_only_link(list, other, in_hours(1))
        .await
        .unwrap();
    assert!(d.read_only_link_is_live(list, link.id).await.unwrap());
    assert_eq!(
        d.remove_member(family, other, other).await.unwrap(),
        MemberChange::Done(None)
    );
    assert!(!d.read_only_link_is_live(list, link.id).await.unwrap());
    assert_eq!(d.family_list_ids(family).await.unwrap(), vec![list]);
    assert!(d.list_access(list, other).await.unwrap().is_none());
    assert_eq!(
        d.list_access(list, admin).await.unwrap().unwrap().role,
        "admin"
    );
}

async fn invitations_are_spent_once(db: TestDatabase) {
    let db = db.open(4).await;
    let d = &db.directory;
    let (ann, bob, cy) = (
        user(&db, "ann").await,
        user(&db, "bob").await,
        user(&db, "cy").await,
    );
    let family = Uuid::now_v7();
    d.create_family(family, "Home", ann, Utc::now(), None)
        .await
        .unwrap();
    assert!(
        d.create_invitation(family, "by-bob", "member", bob, in_hours(1))
            .await
            .unwrap()
            .is_none(),
        "only an admin invites"
    );
    d.create_invitation(family, "once", "admin", ann, in_hours(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        d.accept_invitation("once", ann).await.unwrap(),
        Acceptance::AlreadyMember { family_id: family }
    );
    // Two people racing for one code: exactly one joins.
    let (x, y) = tokio::join!(
        d.accept_invitation("once", bob),
        d.accept_invitation("once", cy)
    );
    let joined = [x.unwrap(), y.unwrap()]
        .into_iter()
        .filter(|a| matches!(a, Acceptance::Joined { .. }))
        .count();
    assert_eq!(joined, 1);
    d.create_invitation(
        family,
        "late",
        "member",
        ann,
        Utc::now() - chrono::Duration::seconds(1),
    )
    .await
    .unwrap()
    .unwrap();
    let outsider = user(&db, "dee").await;
    assert_eq!(
        d.accept_invitation("late", outsider).await.unwrap(),
        Acceptance::Expired
    );
    assert_eq!(
        d.accept_invitation("never", outsider).await.unwrap(),
        Acceptance::Unknown
    );
}

fn key(user_id: Uuid, key: &str, body_hash: &str) -> IdempotencyRecord {
    IdempotencyRecord {
        user_id,
        key: key.into(),
        method: "POST".into(),
        path: "/v1/families/x/lists".into(),
        request_hash: body_hash.into(),
        response_status: 201,
        response_body: r#"{"ok":true}"#.into(),
        expires_at: in_hours(24),
    }
}

async fn lists_and_idempotency_keys(db: TestDatabase) {
    let db = db.open(4).await;
    let d = &db.directory;
    let ann = user(&db, "ann").await;
    let family = Uuid::now_v7();
    d.create_family(family, "Home", ann, Utc::now(), None)
        .await
        .unwrap();
    let first = Uuid::now_v7();
    let k = key(ann, "k1", "h");
    let created = d
        .create_list(
            first,
            family,
            "Weekly",
            ann,
            Utc::now(),
            b"first",
            "test",
            Some(&k),
        )
        .await
        .unwrap();
    let Created::New(row) = created else {
        panic!("created: {created:?}")
    };
    assert_eq!((row.head_seq, row.name.as_str()), (1, "Weekly"));
    assert_eq!(
        db.store.load_doc(first).await.unwrap().tail[0].update,
        b"first".to_vec(),
        "the first update is sequence 1"
    );
    // The same key replays; with another body it is refused; nothing new.
    let again = d
        .create_list(
            Uuid::now_v7(),
            family,
            "Weekly",
            ann,
            Utc::now(),
            b"x",
            "test",
            Some(&k),
        )
        .await
        .unwrap();
    // PostgreSQL stores the body as jsonb, which respaces it.
    assert!(
        matches!(again, Created::Replay { status: 201, ref body } if body.replace(' ', "") == r#"{"ok":true}"#),
        "{again:?}"
    );
    let reused = d
        .create_list(
            Uuid::now_v7(),
            family,
            "Weekly",
            ann,
            Utc::now(),
            b"x",
            "test",
            Some(&key(ann, "k1", "other")),
        )
        .await
        .unwrap();
    assert!(matches!(reused, Created::KeyReused));
    let exists = d
        .create_list(first, family, "Twice", ann, Utc::now(), b"x", "test", None)
        .await
        .unwrap();
    assert!(matches!(exists, Created::Exists));

    for name in ["b", "c", "d"] {
        d.create_list(
            Uuid::now_v7(),
            family,
            name,
            ann,
            Utc::now(),
            b"x",
            "test",
            None,
        )
        .await
        .unwrap();
    }
    let page = d.family_lists(family, false, None, 2).await.unwrap();
    assert_eq!(page.len(), 2);
    let rest = d
        .family_lists(family, false, Some(page[1].id), 10)
        .await
        .unwrap();
    assert_eq!(rest.len(), 2);
    assert!(rest.iter().all(|l| l.id > page[1].id));
    let deleted = d
        .set_list_deleted(first, true)
        .await
        .unwrap()
        .expect("deleted");
    assert!(deleted.deleted_at.is_some());
    assert!(d.set_list_deleted(first, true).await.unwrap().is_none());
    assert_eq!(
        d.family_lists(family, true, None, 10).await.unwrap().len(),
        1
    );
    assert!(d.list_access(first, ann).await.unwrap().unwrap().is_deleted);
    let restored = d
        .set_list_deleted(first, false)
        .await
        .unwrap()
        .expect("restored");
    assert!(restored.deleted_at.is_none());
    assert_eq!(
        d.purge_idempotency_keys().await.unwrap(),
        0,
        "k1 has not expired"
    );
}

async fn read_only_links_expire_and_are_revoked(db: TestDatabase) {
    let db = db.open(4).await;
    let d = &db.directory;
    let ann = user(&db, "ann").await;
    let family = Uuid::now_v7();
    d.create_family(family, "Home", ann, Utc::now(), None)
        .await
        .unwrap();
    let list = Uuid::now_v7();
    d.create_list(list, family, "Weekly", ann, Utc::now(), b"x", "test", None)
        .await
        .unwrap();
    let live = d
        .create_read_only_link(list, ann, in_hours(1))
        .await
        .unwrap();
    let expired = d
        .create_read_only_link(list, ann, Utc::now() - chrono::Duration::seconds(1))
        .await
        .unwrap();
    assert!(d.read_only_link_is_live(list, live.id).await.unwrap());
    assert!(!d.read_only_link_is_live(list, expired.id).await.unwrap());
    assert_eq!(
        d.read_only_links(list)
            .await
            .unwrap()
            .iter()
            .map(|l| l.id)
            .collect::<Vec<_>>(),
        vec![live.id]
    );
    assert!(
        d.revoke_read_only_link(Uuid::now_v7(), live.id)
            .await
            .unwrap()
            .is_none(),
        "a link is revoked through its own list"
    );
    let revoked = d
        .revoke_read_only_link(list, live.id)
        .await
        .unwrap()
        .unwrap();
    let again = d
        .revoke_read_only_link(list, live.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        revoked.revoked_at, again.revoked_at,
        "revoking twice is harmless"
    );
    assert!(!d.read_only_link_is_live(list, live.id).await.unwrap());
    assert!(d.read_only_links(list).await.unwrap().is_empty());
}

fn item(id: Uuid, name: &str, status: &str, position: &str) -> ProjectedItem {
    ProjectedItem {
        item_id: id,
        name: name.into(),
        quantity: Some("1".into()),
        status: status.into(),
        category: Some("dairy".into()),
        note: None,
        assignee: None,
        position: Some(position.into()),
        added_by: None,
        added_at: Some(Utc::now()),
    }
}

async fn projections_are_written_incrementally_and_read_back(db: TestDatabase) {
    let db = db.open(4).await;
    let (d, p) = (&db.directory, &db.projections);
    let ann = user(&db, "ann").await;
    let family = Uuid::now_v7();
    d.create_family(family, "Home", ann, Utc::now(), None)
        .await
        .unwrap();
    let list = Uuid::now_v7();
    d.create_list(list, family, "Weekly", ann, Utc::now(), b"x", "test", None)
        .await
        .unwrap();
    db.store
        .append(vec![larder_storage::NewUpdate {
            list_id: list,
            update: b"y".to_vec(),
            origin: "test".into(),
            user_id: None,
        }])
        .await
        .unwrap();
    assert_eq!(p.lag().await.unwrap().lists, 1);
    assert_eq!(p.lagging(10).await.unwrap(), vec![list]);

    let (milk, bread) = (Uuid::now_v7(), Uuid::now_v7());
    let order = Uuid::now_v7();
    let mut projection = Projection {
        name: "Weekly shop".into(),
        status: "active".into(),
        items: vec![
            item(milk, "Oat Milk", "needed", "b"),
            item(bread, "Brötchen", "in_cart", "a"),
        ],
        orders: vec![ProjectedOrder {
            order_id: order,
            vendor_id: Some(Uuid::now_v7()),
            status: "placed".into(),
            placed_by: Some(ann.to_string()),
            placed_at: Some(Utc::now()),
            note: None,
            share_id: Some(Uuid::now_v7()),
            items: vec![ProjectedOrderItem {
                item_id: Some(milk),
                name: "Oat Milk".into(),
                quantity: Some("1".into()),
            }],
        }],
    };
    assert_eq!(
        p.write(list, 1, &projection).await.unwrap(),
        Projected::Applied { orders_skipped: 0 }
    );
    assert_eq!(
        p.write(list, 1, &projection).await.unwrap(),
        Projected::Stale { projected_seq: 1 }
    );
    let items = p.items(list, &ItemFilter::default()).await.unwrap();
    assert_eq!(
        items.iter().map(|i| i.name.as_str()).collect::<Vec<_>>(),
        vec!["Brötchen", "Oat Milk"],
        "by position"
    );
    let needed = ItemFilter {
        status: Some("needed".into()),
        ..ItemFilter::default()
    };
    assert_eq!(p.items(list, &needed).await.unwrap().len(), 1);
    let found = p.search_items(family, "MILK", None, 10).await.unwrap();
    assert_eq!(found.len(), 1);
    let found = p.search_items(family, "BRÖT", None, 10).await.unwrap();
    assert_eq!(found.len(), 1, "case folds beyond ASCII");
    assert!(
        p.search_items(family, "%", None, 10)
            .await
            .unwrap()
            .is_empty(),
        "wildcards are literal"
    );
    let stored = p.order(order).await.unwrap().expect("order");
    assert_eq!(stored.vendor_id, None, "an unknown vendor is dropped");
    assert_eq!(stored.share_id, None, "an unknown share is dropped");
    assert_eq!(stored.items.len(), 1);
    assert_eq!(
        p.family_orders(family, Some("placed"), None, 10)
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(
        p.family_orders(family, Some("delivered"), None, 10)
            .await
            .unwrap()
            .is_empty()
    );

    // The next projection removes an item and rewrites the order's lines.
    projection.items.retain(|i| i.item_id != bread);
    projection.orders[0].items.push(ProjectedOrderItem {
        item_id: None,
        name: "Eggs".into(),
        quantity: None,
    });
    p.write(list, 2, &projection).await.unwrap();
    let items = p.items(list, &ItemFilter::default()).await.unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].projected_seq, 1, "an unchanged row is left alone");
    assert_eq!(p.order(order).await.unwrap().unwrap().items.len(), 2);
    let row = d.list(list).await.unwrap().unwrap();
    assert_eq!(
        (
            row.name.as_str(),
            row.item_count,
            row.needed_count,
            row.in_cart_count,
            row.projected_seq
        ),
        ("Weekly shop", 1, 1, 0, 2)
    );
    assert_eq!(p.projected_seq(list).await.unwrap(), Some(2));
    assert_eq!(p.lag().await.unwrap().lists, 0);

    // An order id another list owns is not taken over.
    let other = Uuid::now_v7();
    d.create_list(other, family, "Other", ann, Utc::now(), b"x", "test", None)
        .await
        .unwrap();
    let thief = Projection {
        name: "Other".into(),
        status: "active".into(),
        items: vec![],
        orders: projection.orders.clone(),
    };
    assert_eq!(
        p.write(other, 1, &thief).await.unwrap(),
        Projected::Applied { orders_skipped: 1 }
    );
    assert_eq!(p.order(order).await.unwrap().unwrap().list_id, list);
    assert_eq!(
        p.write(Uuid::now_v7(), 1, &thief).await.unwrap(),
        Projected::Gone
    );
    assert!(!p.is_family_vendor(family, Uuid::now_v7()).await.unwrap());
}
