//! The vendor store's contract, held against both backends: vendors,
//! shares made once per version, statuses applied once and only forward,
//! replies opening the window, and outbox claims with leases and pacing.

mod common;

use std::time::Duration;

use chrono::{DateTime, Utc};
use larder_storage::Database;
use larder_storage::outbox::{JobOutcome, MessageKind, StatusApplied};
use larder_storage::testing::TestDatabase;
use larder_storage::vendors::{
    NewShare, NewVendor, Reply, ShareCreated, StatusEvent, VendorPatch, VendorWrite,
};
use uuid::Uuid;

on_both!(
    vendors_are_written_and_soft_deleted,
    a_version_is_shared_once,
    statuses_apply_once_and_only_forward,
    replies_open_the_window_on_the_latest_share,
    claims_lease_pace_and_finish_jobs,
);

struct Fixture {
    /// Keeps the database alive.
    _test: TestDatabase,
    db: Database,
    user: Uuid,
    family: Uuid,
    list: Uuid,
}

async fn fixture(test: TestDatabase) -> Fixture {
    let db = test.open(4).await;
    let user = db
        .directory
        .create_user("ann@larder.test", "Ann", "hash")
        .await
        .unwrap()
        .unwrap()
        .id;
    let family = Uuid::now_v7();
    db.directory
        .create_family(family, "Home", user, Utc::now(), None)
        .await
        .unwrap();
    let list = Uuid::now_v7();
    db.directory
        .create_list(list, family, "Weekly", user, Utc::now(), b"x", "test", None)
        .await
        .unwrap();
    Fixture {
        _test: test,
        db,
        user,
        family,
        list,
    }
}

async fn vendor(f: &Fixture, name: &str, number: &str) -> Uuid {
    let id = Uuid::now_v7();
    let written =
        f.db.vendors
            .create_vendor(&NewVendor {
                id,
                family_id: f.family,
                name: name.to_owned(),
                whatsapp_number: number.to_owned(),
                notes: None,
                created_by: f.user,
            })
            .await
            .unwrap();
    assert!(matches!(written, VendorWrite::Done(_)), "{written:?}");
    id
}

fn new_share(f: &Fixture, vendor_id: Uuid, seq: i64) -> NewShare {
    NewShare {
        id: Uuid::now_v7(),
        list_id: f.list,
        vendor_id,
        shared_by: f.user,
        snapshot_seq: seq,
        snapshot: format!("{{\"version\":\"v{seq}\"}}"),
        rendered_text: format!("Weekly v{seq}"),
        note: None,
        page_token_hash: format!("hash-{}", Uuid::new_v4()),
        link_expires_at: Utc::now() + chrono::Duration::hours(1),
        detail: None,
    }
}

async fn share(f: &Fixture, vendor_id: Uuid, seq: i64) -> Uuid {
    match f
        .db
        .vendors
        .create_share(&new_share(f, vendor_id, seq))
        .await
        .unwrap()
    {
        ShareCreated::New(s) => s.id,
        other => panic!("expected a new share, got {other:?}"),
    }
}

fn status(wamid: &str, status: &str, at: DateTime<Utc>) -> StatusEvent {
    StatusEvent {
        wamid: wamid.to_owned(),
        status: status.to_owned(),
        occurred_at: at,
        error_code: None,
        error_title: None,
    }
}

async fn vendors_are_written_and_soft_deleted(db: TestDatabase) {
    let f = fixture(db).await;
    let v = &f.db.vendors;
    let shop = vendor(&f, "Corner shop", "447700900123").await;
    let greens = vendor(&f, "Greengrocer", "447700900456").await;
    let taken = v
        .create_vendor(&NewVendor {
            id: Uuid::now_v7(),
            family_id: f.family,
            name: "Same number".into(),
            whatsapp_number: "447700900123".into(),
            notes: None,
            created_by: f.user,
        })
        .await
        .unwrap();
    assert_eq!(taken, VendorWrite::NumberTaken);

    let VendorWrite::Done(renamed) = v
        .update_vendor(
            shop,
            &VendorPatch {
                name: Some("Corner shop (Raj)".into()),
                notes: Some(Some("closed on Sundays".into())),
                ..VendorPatch::default()
            },
        )
        .await
        .unwrap()
    else {
        panic!("update failed")
    };
    assert_eq!(renamed.name, "Corner shop (Raj)");
    assert_eq!(renamed.notes.as_deref(), Some("closed on Sundays"));
    assert_eq!(renamed.whatsapp_number, "447700900123");
    let clash = v
        .update_vendor(
            greens,
            &VendorPatch {
                whatsapp_number: Some("447700900123".into()),
                ..VendorPatch::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(clash, VendorWrite::NumberTaken);
    let VendorWrite::Done(cleared) = v
        .update_vendor(
            shop,
            &VendorPatch {
                notes: Some(None),
                ..VendorPatch::default()
            },
        )
        .await
        .unwrap()
    else {
        panic!("update failed")
    };
    assert_eq!(cleared.notes, None);

    let page = v.family_vendors(f.family, None, 1).await.unwrap();
    assert_eq!(page.iter().map(|v| v.id).collect::<Vec<_>>(), vec![shop]);
    let next = v.family_vendors(f.family, Some(shop), 10).await.unwrap();
    assert_eq!(next.iter().map(|v| v.id).collect::<Vec<_>>(), vec![greens]);

    let sent = share(&f, shop, 5).await;
    assert!(v.delete_vendor(shop).await.unwrap());
    assert!(!v.delete_vendor(shop).await.unwrap(), "deleted once");
    assert_eq!(
        v.update_vendor(shop, &VendorPatch::default())
            .await
            .unwrap(),
        VendorWrite::Missing
    );
    let listed = v.family_vendors(f.family, None, 10).await.unwrap();
    assert_eq!(
        listed.iter().map(|v| v.id).collect::<Vec<_>>(),
        vec![greens]
    );
    let kept = v.vendor(shop).await.unwrap().expect("still readable");
    assert!(kept.deleted_at.is_some());
    assert!(v.share(sent).await.unwrap().is_some(), "its share stays");
    // The number is free again for a new vendor.
    vendor(&f, "New corner shop", "447700900123").await;
}

async fn a_version_is_shared_once(db: TestDatabase) {
    let f = fixture(db).await;
    let v = &f.db.vendors;
    let o = &f.db.outbox;
    let shop = vendor(&f, "Corner shop", "447700900123").await;
    let first = new_share(&f, shop, 7);
    let ShareCreated::New(created) = v.create_share(&first).await.unwrap() else {
        panic!("first share is new")
    };
    assert_eq!(created.status, "pending");
    assert_eq!(created.snapshot_seq, 7);
    assert!(created.link_id.is_some() && created.link_revoked_at.is_none());
    let again = v.create_share(&new_share(&f, shop, 7)).await.unwrap();
    assert_eq!(again, ShareCreated::Exists(created.clone()));
    assert_eq!(
        o.outbox_depth().await.unwrap().jobs,
        1,
        "one job per version"
    );

    let newer = share(&f, shop, 9).await;
    assert_eq!(o.outbox_depth().await.unwrap().jobs, 2);
    let by_token = v
        .share_by_page_token(&first.page_token_hash)
        .await
        .unwrap()
        .expect("found by its page token");
    assert_eq!(by_token.id, created.id);
    let listed = v.list_shares(f.list, None, 10).await.unwrap();
    assert_eq!(
        listed.iter().map(|s| s.id).collect::<Vec<_>>(),
        vec![newer, created.id],
        "newest first"
    );
    let older = v.list_shares(f.list, Some(newer), 10).await.unwrap();
    assert_eq!(older.len(), 1);

    // A failed version shared again is tried again.
    let job =
        f.db.outbox
            .claim_job("w1", Utc::now(), Duration::from_secs(60), Duration::ZERO)
            .await
            .unwrap()
            .unwrap();
    f.db.outbox
        .finish_job(
            &job,
            "w1",
            &JobOutcome::Failed {
                code: Some(190),
                message: "token expired".into(),
            },
        )
        .await
        .unwrap();
    let failed = v.share(job.share_id).await.unwrap().unwrap();
    assert_eq!(failed.status, "failed");
    let again = v
        .create_share(&new_share(&f, shop, failed.snapshot_seq))
        .await
        .unwrap();
    let ShareCreated::Exists(retried) = again else {
        panic!("the same share")
    };
    assert_eq!(
        (retried.id, retried.status.as_str()),
        (failed.id, "pending")
    );
    assert_eq!(retried.error_code, None);
    assert_eq!(f.db.outbox.outbox_depth().await.unwrap().jobs, 2);

    // Revoking the link (as the links API does) shows on the share.
    f.db.directory
        .revoke_read_only_link(f.list, created.link_id.unwrap())
        .await
        .unwrap();
    let revoked = v.share(created.id).await.unwrap().unwrap();
    assert!(revoked.link_revoked_at.is_some());
}

async fn statuses_apply_once_and_only_forward(db: TestDatabase) {
    let f = fixture(db).await;
    let v = &f.db.vendors;
    let o = &f.db.outbox;
    let shop = vendor(&f, "Corner shop", "447700900123").await;
    let id = share(&f, shop, 3).await;
    let t0 = Utc::now();
    // `read` arrives first, then the older `sent` and `delivered`, twice.
    assert_eq!(
        o.record_status(&status("wamid.A", "read", t0), Some(id))
            .await
            .unwrap(),
        StatusApplied::Applied(id)
    );
    for s in ["sent", "delivered"] {
        assert_eq!(
            o.record_status(&status("wamid.A", s, t0), Some(id))
                .await
                .unwrap(),
            StatusApplied::Applied(id)
        );
        assert_eq!(
            o.record_status(&status("wamid.A", s, t0), Some(id))
                .await
                .unwrap(),
            StatusApplied::Duplicate
        );
    }
    let shown = v.share(id).await.unwrap().unwrap();
    assert_eq!(shown.status, "read", "older statuses do not move it back");
    assert_eq!(v.share_statuses(id).await.unwrap().len(), 3);
    // The status proves the message went out: the job is done.
    assert_eq!(o.outbox_depth().await.unwrap().jobs, 0);

    // Found by message id without callback data; failed is final.
    let other = share(&f, shop, 4).await;
    o.record_status(&status("wamid.B", "sent", t0), Some(other))
        .await
        .unwrap();
    let mut failed = status("wamid.B", "failed", t0);
    failed.error_code = Some(131026);
    failed.error_title = Some("Message undeliverable".into());
    assert_eq!(
        o.record_status(&failed, None).await.unwrap(),
        StatusApplied::Applied(other)
    );
    o.record_status(&status("wamid.B", "read", t0), None)
        .await
        .unwrap();
    let shown = v.share(other).await.unwrap().unwrap();
    assert_eq!(shown.status, "failed");
    assert_eq!(shown.error_code, Some(131026));
    assert_eq!(
        o.record_status(&status("wamid.unknown", "sent", t0), None)
            .await
            .unwrap(),
        StatusApplied::Unknown
    );
}

async fn replies_open_the_window_on_the_latest_share(db: TestDatabase) {
    let f = fixture(db).await;
    let v = &f.db.vendors;
    let o = &f.db.outbox;
    let shop = vendor(&f, "Corner shop", "447700900123").await;
    let older = share(&f, shop, 1).await;
    let latest = share(&f, shop, 2).await;
    let unsent = share(&f, shop, 3).await;
    let t0 = Utc::now();
    for (id, wamid) in [(older, "wamid.OUT1"), (latest, "wamid.OUT2")] {
        o.record_status(&status(wamid, "sent", t0), Some(id))
            .await
            .unwrap();
    }
    let reply = |wamid: &str, body: &str| Reply {
        id: Uuid::now_v7(),
        wamid: wamid.into(),
        wa_number: "447700900123".into(),
        share_id: None,
        kind: "text".into(),
        body: Some(body.into()),
        sender_name: Some("Raj".into()),
        received_at: Utc::now(),
    };
    let day = Duration::from_secs(24 * 3600);
    assert!(
        o.record_reply(&reply("wamid.IN1", "Ready at 5 🙂"), None, day)
            .await
            .unwrap()
    );
    assert!(
        !o.record_reply(&reply("wamid.IN1", "again"), None, day)
            .await
            .unwrap(),
        "once per message"
    );
    let replies = v.share_replies(latest).await.unwrap();
    assert_eq!(replies.len(), 1, "on the latest share that was sent");
    assert_eq!(replies[0].body.as_deref(), Some("Ready at 5 🙂"));
    assert_eq!(replies[0].share_id, Some(latest));
    assert!(v.share_replies(unsent).await.unwrap().is_empty());
    // A reply quoting a message lands on that message's share.
    o.record_reply(
        &reply("wamid.IN2", "about the first"),
        Some("wamid.OUT1"),
        day,
    )
    .await
    .unwrap();
    assert_eq!(v.share_replies(older).await.unwrap().len(), 1);

    // Once another family has the same number, replies that quote nothing
    // go to neither family's shares.
    let other_family = Uuid::now_v7();
    f.db.directory
        .create_family(other_family, "Neighbours", f.user, Utc::now(), None)
        .await
        .unwrap();
    v.create_vendor(&NewVendor {
        id: Uuid::now_v7(),
        family_id: other_family,
        name: "Same shop".into(),
        whatsapp_number: "447700900123".into(),
        notes: None,
        created_by: f.user,
    })
    .await
    .unwrap();
    o.record_reply(&reply("wamid.IN3", "for whom?"), None, day)
        .await
        .unwrap();
    assert_eq!(v.share_replies(latest).await.unwrap().len(), 1);

    // The window shows on the next claim of a job for that number.
    let job = o
        .claim_job("w1", Utc::now(), Duration::from_secs(60), Duration::ZERO)
        .await
        .unwrap()
        .expect("a job is due");
    assert_eq!(job.share_id, unsent);
    let open_until = job.window_open_until.expect("window open");
    assert!(open_until > Utc::now() + chrono::Duration::hours(23));
}

async fn claims_lease_pace_and_finish_jobs(db: TestDatabase) {
    let f = fixture(db).await;
    let v = &f.db.vendors;
    let o = &f.db.outbox;
    let shop = vendor(&f, "Corner shop", "447700900123").await;
    let greens = vendor(&f, "Greengrocer", "447700900456").await;
    let a = share(&f, shop, 1).await;
    let b = share(&f, shop, 2).await;
    let c = share(&f, greens, 1).await;
    let now = Utc::now();
    let lease = Duration::from_secs(60);
    let pacing = Duration::from_secs(6);

    let first = o
        .claim_job("w1", now, lease, pacing)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.share_id, a);
    assert_eq!(first.attempts, 1);
    // The shop's number is paced: the next claim is the greengrocer's.
    let second = o
        .claim_job("w2", now, lease, pacing)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(second.share_id, c);
    assert!(
        o.claim_job("w2", now, lease, pacing)
            .await
            .unwrap()
            .is_none()
    );
    // Six seconds later the shop's second job is due.
    let later = now + chrono::Duration::seconds(7);
    let third = o
        .claim_job("w2", later, lease, pacing)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(third.share_id, b);

    assert!(o.start_request(&first, "w1", pacing).await.unwrap());
    assert!(
        !o.start_request(&first, "w2", pacing).await.unwrap(),
        "not w2's"
    );
    o.finish_job(
        &first,
        "w1",
        &JobOutcome::Sent {
            wamid: "wamid.A".into(),
            kind: MessageKind::Template,
        },
    )
    .await
    .unwrap();
    assert_eq!(v.share(a).await.unwrap().unwrap().status, "sent");
    // A webhook for that message finds the share by its id alone.
    assert_eq!(
        o.record_status(&status("wamid.A", "delivered", now), None)
            .await
            .unwrap(),
        StatusApplied::Applied(a)
    );

    o.finish_job(
        &second,
        "w2",
        &JobOutcome::Failed {
            code: Some(131026),
            message: "not on WhatsApp".into(),
        },
    )
    .await
    .unwrap();
    let failed = v.share(c).await.unwrap().unwrap();
    assert_eq!(
        (failed.status.as_str(), failed.error_code),
        ("failed", Some(131026))
    );

    // A retry puts the job back, due later, with the reason on the share.
    let retry_at = later + chrono::Duration::seconds(30);
    o.finish_job(
        &third,
        "w2",
        &JobOutcome::Retry {
            at: retry_at,
            error: "rate limited".into(),
        },
    )
    .await
    .unwrap();
    assert_eq!(
        v.share(b).await.unwrap().unwrap().detail.as_deref(),
        Some("rate limited")
    );
    let too_soon = retry_at - chrono::Duration::seconds(1);
    assert!(
        o.claim_job("w1", too_soon, lease, pacing)
            .await
            .unwrap()
            .is_none()
    );
    let again = o
        .claim_job("w1", retry_at, lease, pacing)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((again.share_id, again.attempts), (b, 2));
    assert!(o.start_request(&again, "w1", pacing).await.unwrap());

    // A worker that dies mid-request leaves its lease to expire; the next
    // claim sees that a request may have gone out.
    let expired = retry_at + chrono::Duration::seconds(61);
    let reclaimed = o
        .claim_job("w2", expired, lease, pacing)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reclaimed.share_id, b);
    assert!(reclaimed.request_started_at.is_some());
    // The old worker's late answer no longer moves the job.
    o.finish_job(
        &again,
        "w1",
        &JobOutcome::Retry {
            at: expired,
            error: "late".into(),
        },
    )
    .await
    .unwrap();
    let until = expired + chrono::Duration::minutes(10);
    o.finish_job(
        &reclaimed,
        "w2",
        &JobOutcome::Unsure {
            until,
            error: "waiting for a status".into(),
        },
    )
    .await
    .unwrap();
    let after_wait = o
        .claim_job("w1", until, lease, pacing)
        .await
        .unwrap()
        .unwrap();
    assert!(
        after_wait.request_started_at.is_some(),
        "still unsure after waiting"
    );
    assert_eq!(o.outbox_depth().await.unwrap().jobs, 1);
}
