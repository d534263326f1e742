//! The WhatsApp outbox against a fake Graph API over real HTTP: retries
//! and backoff by error code, permanent failures, the template fallback,
//! the circuit breaker, unknown outcomes that must not send twice, pacing
//! per vendor, several replicas, and a replica that dies holding a job.

use std::collections::HashMap;
use std::time::Duration;

use larder_tests::whatsapp::{self, Answer, FakeGraph, Recorded, SharingFamily as Family};
use larder_tests::*;
use serde_json::json;
use uuid::Uuid;

fn gap(a: &Recorded, b: &Recorded) -> Duration {
    b.at.duration_since(a.at)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retryable_codes_back_off_exponentially_then_the_share_is_sent() {
    let fake = FakeGraph::start().await;
    fake.script([
        Answer::Error {
            http: 400,
            code: 130429,
        },
        Answer::Error { http: 500, code: 1 },
        Answer::Error { http: 400, code: 2 },
        Answer::Error {
            http: 500,
            code: 131000,
        },
        Answer::Error {
            http: 503,
            code: 99999,
        },
    ]);
    let f = Family::start(TestDatabase::create().await, |c| {
        whatsapp::configure(c, &fake);
        c.whatsapp.whatsapp_retry_base_ms = 80;
    })
    .await;
    f.item(json!({"name": "Milk"})).await;
    let shop = f.vendor("Shop", "+447700900123").await;
    let share = f.share(shop).await;
    let shown = f.wait_status(share, "sent").await;
    let sent = fake.requests();
    assert_eq!(sent.len(), 6, "five failures then success");
    assert!(sent.iter().all(|r| r.share_id() == share));
    for n in 1..sent.len() {
        // Attempt n waits at least half of base * 2^(n-1).
        let least = Duration::from_millis(80 * (1 << (n - 1)) / 2);
        assert!(
            gap(&sent[n - 1], &sent[n]) >= least,
            "attempt {n} came after {:?}, sooner than {least:?}",
            gap(&sent[n - 1], &sent[n])
        );
    }
    assert!(shown["detail"].is_null());
    assert_eq!(
        shown["statuses"].as_array().map(Vec::len),
        Some(0),
        "no webhook yet"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_codes_fail_the_share_at_once_with_a_reason() {
    let fake = FakeGraph::start().await;
    let codes = [131026, 100, 131008, 131009, 132001, 190, 0];
    fake.script(codes.iter().map(|&code| Answer::Error { http: 400, code }));
    let f = Family::start(TestDatabase::create().await, |c| {
        whatsapp::configure(c, &fake)
    })
    .await;
    f.item(json!({"name": "Milk"})).await;
    let mut shares = Vec::new();
    for n in 0..codes.len() {
        let vendor = f.vendor("Shop", &format!("+4477009001{n:02}")).await;
        shares.push(f.share(vendor).await);
    }
    let answered: HashMap<Uuid, i64> = fake
        .wait_requests(codes.len(), Duration::from_secs(20))
        .await
        .iter()
        .zip(codes)
        .map(|(r, code)| (r.share_id(), code))
        .collect();
    for share in &shares {
        let shown = f.wait_status(*share, "failed").await;
        assert_eq!(shown["error"]["code"], answered[share], "{shown}");
        assert!(
            shown["error"]["message"]
                .as_str()
                .is_some_and(|m| m.len() > 20),
            "a readable reason: {shown}"
        );
    }
    let before_marker = f.marker(&fake, "+447700900999").await;
    assert_eq!(before_marker.len(), codes.len(), "no retries");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_window_turns_the_text_into_the_template() {
    let fake = FakeGraph::start().await;
    fake.script([Answer::Error {
        http: 400,
        code: 131047,
    }]);
    let f = Family::start(TestDatabase::create().await, |c| {
        whatsapp::configure(c, &fake)
    })
    .await;
    f.item(json!({"name": "Milk"})).await;
    let shop = f.vendor("Shop", "+447700900123").await;
    // The vendor wrote, so the server believes the window is open.
    f.deliver(&whatsapp::message_delivery(
        "447700900123",
        "wamid.IN1",
        "hello",
        chrono::Utc::now().timestamp(),
    ))
    .await;
    let share = f.share(shop).await;
    f.wait_status(share, "sent").await;
    let sent = fake.requests();
    let kinds: Vec<&str> = sent.iter().map(Recorded::kind).collect();
    assert_eq!(kinds, vec!["text", "template"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_text_failed_later_for_a_closed_window_goes_again_as_the_template() {
    let fake = FakeGraph::start().await;
    let f = Family::start(TestDatabase::create().await, |c| {
        whatsapp::configure(c, &fake)
    })
    .await;
    f.item(json!({"name": "Milk"})).await;
    let shop = f.vendor("Shop", "+447700900123").await;
    f.deliver(&whatsapp::message_delivery(
        "447700900123",
        "wamid.IN1",
        "hello",
        chrono::Utc::now().timestamp(),
    ))
    .await;
    let share = f.share(shop).await;
    f.wait_status(share, "sent").await;
    let text = fake.requests()[0].clone();
    assert_eq!(text.kind(), "text");
    // WhatsApp accepted it, then reports it failed: the window had closed.
    let mut failed = whatsapp::status_delivery(
        text.wamid.as_deref().unwrap(),
        "failed",
        Some(share),
        chrono::Utc::now().timestamp(),
    );
    failed["entry"][0]["changes"][0]["value"]["statuses"][0]["errors"][0]["code"] = json!(131047);
    f.deliver(&failed).await;
    let sent = fake.wait_requests(2, Duration::from_secs(10)).await;
    assert_eq!(sent[1].kind(), "template");
    assert_eq!(sent[1].share_id(), share);
    let shown = f.wait_status(share, "sent").await;
    assert!(shown["error"].is_null(), "{shown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_breaker_stops_sending_while_the_api_fails_and_resumes_by_itself() {
    let fake = FakeGraph::start().await;
    fake.script([
        Answer::Error {
            http: 500,
            code: 99999,
        },
        Answer::Error {
            http: 502,
            code: 99999,
        },
        Answer::Error {
            http: 503,
            code: 99999,
        },
    ]);
    let cooldown = Duration::from_millis(1_500);
    let f = Family::start(TestDatabase::create().await, |c| {
        whatsapp::configure(c, &fake);
        c.whatsapp.whatsapp_retry_base_ms = 10;
        c.whatsapp.whatsapp_breaker_failures = 2;
        c.whatsapp.whatsapp_breaker_cooldown_ms = cooldown.as_millis() as u64;
    })
    .await;
    f.item(json!({"name": "Milk"})).await;
    let shop = f.vendor("Shop", "+447700900123").await;
    let share = f.share(shop).await;
    fake.wait_requests(2, Duration::from_secs(10)).await;
    eventually("the breaker shows open", Duration::from_secs(5), || async {
        metrics(&f.app)
            .await
            .contains("larder_whatsapp_breaker_state 1")
    })
    .await;
    f.wait_status(share, "sent").await;
    let sent = fake.requests();
    assert_eq!(sent.len(), 4);
    assert!(
        gap(&sent[1], &sent[2]) >= cooldown,
        "the trial waited for the cooldown: {:?}",
        gap(&sent[1], &sent[2])
    );
    assert!(
        gap(&sent[2], &sent[3]) >= cooldown,
        "a failed trial reopened it: {:?}",
        gap(&sent[2], &sent[3])
    );
    eventually(
        "the breaker shows closed",
        Duration::from_secs(5),
        || async {
            metrics(&f.app)
                .await
                .contains("larder_whatsapp_breaker_state 0")
        },
    )
    .await;
    let text = metrics(&f.app).await;
    assert!(text.contains("larder_whatsapp_sends_total"), "{text}");
    assert!(text.contains("larder_outbox_depth"), "{text}");
}

async fn metrics(app: &TestApp) -> String {
    app.http()
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics body")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_after_the_request_went_out_waits_for_the_webhook_instead_of_resending() {
    let fake = FakeGraph::start().await;
    fake.script([Answer::Slow(Duration::from_millis(1_200))]);
    let f = Family::start(TestDatabase::create().await, |c| {
        whatsapp::configure(c, &fake);
        c.whatsapp.whatsapp_request_timeout_ms = 300;
        c.whatsapp.whatsapp_unsure_wait_secs = 2;
    })
    .await;
    f.item(json!({"name": "Milk"})).await;
    let shop = f.vendor("Shop", "+447700900123").await;
    let share = f.share(shop).await;
    eventually("the send is unsure", Duration::from_secs(10), || async {
        f.get_share(share).await["detail"]
            .as_str()
            .is_some_and(|d| d.contains("waiting for WhatsApp"))
    })
    .await;
    // The slow answer carried a wamid the server never read; the status
    // webhook brings it, with the share id.
    eventually("the fake answered late", Duration::from_secs(5), || async {
        fake.requests()[0].wamid.is_some()
    })
    .await;
    let wamid = fake.requests()[0].wamid.clone().unwrap();
    let now = chrono::Utc::now().timestamp();
    f.deliver(&whatsapp::status_delivery(&wamid, "sent", Some(share), now))
        .await;
    let shown = f.wait_status(share, "sent").await;
    assert_eq!(shown["statuses"][0]["wamid"], wamid.as_str());
    // The status settled the job: nothing is left that could send again.
    let database = f.db.open(1).await;
    eventually("the job is done", Duration::from_secs(5), || async {
        database.outbox.outbox_depth().await.expect("depth").jobs == 0
    })
    .await;
    let before_marker = f.marker(&fake, "+447700900999").await;
    assert_eq!(before_marker.len(), 1, "not sent twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_answer_is_resent_once_no_status_came_in_time() {
    let fake = FakeGraph::start().await;
    fake.script([Answer::Drop]);
    let f = Family::start(TestDatabase::create().await, |c| {
        whatsapp::configure(c, &fake);
        c.whatsapp.whatsapp_unsure_wait_secs = 2;
    })
    .await;
    f.item(json!({"name": "Milk"})).await;
    let shop = f.vendor("Shop", "+447700900123").await;
    let share = f.share(shop).await;
    f.wait_status(share, "sent").await;
    let sent = fake.requests();
    assert_eq!(sent.len(), 2);
    assert!(
        gap(&sent[0], &sent[1]) >= Duration::from_secs(2),
        "it waited for a status first: {:?}",
        gap(&sent[0], &sent[1])
    );
    assert_eq!(sent[0].content(), sent[1].content(), "the same version");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_vendor_gets_at_most_one_message_every_six_seconds() {
    let fake = FakeGraph::start().await;
    let f = Family::start(TestDatabase::create().await, |c| {
        whatsapp::configure(c, &fake);
        c.whatsapp.whatsapp_vendor_interval_ms = 6_000;
    })
    .await;
    let shop = f.vendor("Shop", "+447700900123").await;
    let greengrocer = f.vendor("Shop", "+447700900456").await;
    f.item(json!({"name": "Milk"})).await;
    let first = f.share(shop).await;
    fake.wait_requests(1, Duration::from_secs(10)).await;
    f.item(json!({"name": "Bread"})).await;
    let second = f.share(shop).await;
    let other = f.share(greengrocer).await;
    f.wait_status(second, "sent").await;
    let sent = fake.requests();
    let at = |id: Uuid| sent.iter().find(|r| r.share_id() == id).expect("sent");
    assert!(
        gap(at(first), at(second)) >= Duration::from_secs(6),
        "{:?}",
        gap(at(first), at(second))
    );
    assert!(
        gap(at(first), at(other)) < Duration::from_secs(5),
        "another vendor is not held back"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_never_send_one_job_twice() {
    let fake = FakeGraph::start().await;
    fake.script((0..40).map(|_| Answer::Slow(Duration::from_millis(30))));
    let db = TestDatabase::postgres().await;
    let url = db.url().to_owned();
    let f = Family::start(db, |c| whatsapp::configure(c, &fake)).await;
    let other = TestApp::spawn_with(&url, |c| whatsapp::configure(c, &fake)).await;
    f.item(json!({"name": "Milk"})).await;
    let mut shares = Vec::new();
    for n in 0..20 {
        let vendor = f.vendor("Shop", &format!("+4477009002{n:02}")).await;
        let app = if n % 2 == 0 { &f.app } else { &other };
        shares.push(f.share_on(app, vendor).await);
    }
    for share in &shares {
        f.wait_status(*share, "sent").await;
    }
    let sent = f.marker(&fake, "+447700900999").await;
    let mut per_share: HashMap<Uuid, usize> = HashMap::new();
    for r in &sent {
        *per_share.entry(r.share_id()).or_default() += 1;
    }
    assert_eq!(per_share.len(), 20);
    assert!(per_share.values().all(|&n| n == 1), "{per_share:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_claimed_by_a_replica_that_died_is_sent_once_its_lease_runs_out() {
    let fake = FakeGraph::start().await;
    let db = TestDatabase::create().await;
    // This replica cannot send; it only queues the share.
    let f = Family::start(db, |_| {}).await;
    f.item(json!({"name": "Milk"})).await;
    let shop = f.vendor("Shop", "+447700900123").await;
    let share = f.share(shop).await;
    // A replica claims the job, then dies before sending.
    let database = f.db.open(2).await;
    let lease = Duration::from_secs(2);
    let claimed = database
        .outbox
        .claim_job(
            "replica-that-died",
            chrono::Utc::now(),
            lease,
            Duration::ZERO,
        )
        .await
        .expect("claim")
        .expect("the job is due");
    assert_eq!(claimed.share_id, share);
    let claimed_at = tokio::time::Instant::now();
    let sender = TestApp::spawn_with(f.db.url(), |c| whatsapp::configure(c, &fake)).await;
    f.wait_status(share, "sent").await;
    let sent = fake.requests();
    assert_eq!(sent.len(), 1);
    assert!(
        sent[0].at.duration_since(claimed_at) >= lease - Duration::from_millis(200),
        "not before the lease ran out"
    );
    sender.stop().await;
}
