//! Accounts, families and authorization, end to end: who may read and edit
//! which list, on the REST API and the sync socket, on every replica.

use std::time::Duration;

use larder_client::SyncClient;
use larder_server::auth::tokens::{Scope, TokenKeys};
use larder_tests::*;
use serde_json::{Value, json};
use uuid::Uuid;

/// Waits until the server closed `client`'s socket; returns code and reason.
async fn closed_with(client: &SyncClient, limit: Duration, what: &str) -> (u16, String) {
    let mut status = client.status();
    tokio::time::timeout(limit, status.wait_for(|s| s.closed_with.is_some()))
        .await
        .unwrap_or_else(|_| panic!("{what}: the server closes the socket within {limit:?}"))
        .expect("status open")
        .closed_with
        .clone()
        .expect("a close frame")
}

/// Connects a client with `token` (or none); does not wait for sync.
async fn open_socket(app: &TestApp, list: Uuid, token: Option<&str>) -> SyncClient {
    let mut client = SyncClient::new();
    client
        .connect(&app.sync_url_with(list, token))
        .await
        .expect("connect");
    client
}

fn expired_token(user: Uuid) -> String {
    let keys = TokenKeys::from_secret(TEST_JWT_SECRET.as_bytes()).expect("keys");
    keys.sign(
        user,
        Scope::Full,
        None,
        chrono::Utc::now() - chrono::Duration::seconds(5),
    )
    .0
}

async fn read_only_token(app: &TestApp, account: &Account, list: Uuid) -> String {
    let (status, body) = app
        .call(
            "POST",
            &format!("/v1/lists/{list}/read-only-tokens"),
            Some(&account.access_token),
            Some(json!({"expires_in_hours": 1})),
        )
        .await;
    assert_eq!(status, 201, "read-only token: {body}");
    body["token"].as_str().expect("token").to_owned()
}

/// The callers of the matrix, in column order.
const CALLERS: [&str; 6] = [
    "admin",
    "member",
    "other family",
    "no token",
    "expired",
    "read-only",
];

struct Row {
    method: &'static str,
    /// Path per caller column (some rows need a fresh target per caller).
    paths: Vec<String>,
    body: Option<Value>,
    expected: [u16; 6],
}

impl Row {
    fn same(method: &'static str, path: String, body: Option<Value>, expected: [u16; 6]) -> Row {
        Row {
            method,
            paths: vec![path; 6],
            body,
            expected,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_and_the_socket_admit_exactly_who_they_should() {
    let db = TestDatabase::create().await;
    let app = TestApp::spawn(db.url()).await;
    let admin = app.signup("admin").await;
    let member = app.signup("member").await;
    let other = app.signup("other").await;
    let family = app.create_family(&admin, "Smiths").await;
    app.add_member(&admin, family, &member).await;
    let other_family = app.create_family(&other, "Joneses").await;
    let list = app.create_list(&admin, family, "Weekly").await;
    let read_only = read_only_token(&app, &member, list).await;
    let tokens: [Option<String>; 6] = [
        Some(admin.access_token.clone()),
        Some(member.access_token.clone()),
        Some(other.access_token.clone()),
        None,
        Some(expired_token(admin.user_id)),
        Some(read_only.clone()),
    ];
    // Targets each caller deletes on its own.
    let mut doomed_lists = Vec::new();
    let mut doomed_members = Vec::new();
    for _ in CALLERS {
        doomed_lists.push(app.create_list(&admin, family, "Doomed").await);
        let extra = app.signup("extra").await;
        app.add_member(&admin, family, &extra).await;
        doomed_members.push(extra.user_id);
    }
    // Links each caller revokes on its own.
    let mut doomed_links = Vec::new();
    for _ in CALLERS {
        let (status, body) = app
            .call(
                "POST",
                &format!("/v1/lists/{list}/read-only-tokens"),
                Some(&admin.access_token),
                Some(json!({})),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        doomed_links.push(json_uuid(&body["id"]));
    }
    // A vendor and a share every caller reads; vendors each caller deletes
    // and shares whose link each caller revokes.
    let vendor_at = |n: usize| format!("+4477009003{n:02}");
    let create_vendor = |n: usize| {
        let app = &app;
        let admin = &admin;
        let number = vendor_at(n);
        async move {
            let (status, body) = app
                .call(
                    "POST",
                    &format!("/v1/families/{family}/vendors"),
                    Some(&admin.access_token),
                    Some(json!({"name": "Shop", "whatsapp_number": number})),
                )
                .await;
            assert_eq!(status, 201, "{body}");
            json_uuid(&body["id"])
        }
    };
    let vendor = create_vendor(0).await;
    let mut doomed_vendors = Vec::new();
    let mut doomed_shares = Vec::new();
    for n in 0..CALLERS.len() {
        doomed_vendors.push(create_vendor(10 + n).await);
        let sharing = create_vendor(20 + n).await;
        let (status, body) = app
            .call(
                "POST",
                &format!("/v1/lists/{list}/shares"),
                Some(&admin.access_token),
                Some(json!({"vendor_id": sharing})),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        doomed_shares.push(json_uuid(&body["id"]));
    }
    let share = doomed_shares[0];
    let m = member.user_id;
    let rows = vec![
        Row::same("GET", "/v1/me".into(), None, [200, 200, 200, 401, 401, 403]),
        Row::same(
            "GET",
            "/v1/families".into(),
            None,
            [200, 200, 200, 401, 401, 403],
        ),
        Row::same(
            "POST",
            "/v1/families".into(),
            Some(json!({"name": "New"})),
            [201, 201, 201, 401, 401, 403],
        ),
        Row::same(
            "GET",
            format!("/v1/families/{family}"),
            None,
            [200, 200, 404, 401, 401, 403],
        ),
        Row::same(
            "PATCH",
            format!("/v1/families/{family}"),
            Some(json!({"name": "Smith family"})),
            [200, 403, 404, 401, 401, 403],
        ),
        Row::same(
            "GET",
            format!("/v1/families/{family}/members"),
            None,
            [200, 200, 404, 401, 401, 403],
        ),
        Row::same(
            "PATCH",
            format!("/v1/families/{family}/members/{m}"),
            Some(json!({"role": "member"})),
            [200, 403, 404, 401, 401, 403],
        ),
        Row {
            method: "DELETE",
            paths: doomed_members
                .iter()
                .map(|u| format!("/v1/families/{family}/members/{u}"))
                .collect(),
            body: None,
            expected: [204, 403, 404, 401, 401, 403],
        },
        Row::same(
            "POST",
            format!("/v1/families/{family}/invitations"),
            Some(json!({})),
            [201, 403, 404, 401, 401, 403],
        ),
        Row::same(
            "POST",
            format!("/v1/families/{family}/lists"),
            Some(json!({"name": "More"})),
            [201, 201, 404, 401, 401, 403],
        ),
        Row::same(
            "GET",
            format!("/v1/families/{family}/lists"),
            None,
            [200, 200, 404, 401, 401, 403],
        ),
        Row::same(
            "GET",
            format!("/v1/lists/{list}"),
            None,
            [200, 200, 404, 401, 401, 403],
        ),
        Row::same(
            "PATCH",
            format!("/v1/lists/{list}"),
            Some(json!({"name": "Weekly shop"})),
            [200, 200, 404, 401, 401, 403],
        ),
        Row::same(
            "POST",
            format!("/v1/lists/{list}/read-only-tokens"),
            Some(json!({})),
            [201, 201, 404, 401, 401, 403],
        ),
        Row::same(
            "GET",
            format!("/v1/lists/{list}/read-only-tokens"),
            None,
            [200, 200, 404, 401, 401, 403],
        ),
        Row {
            method: "DELETE",
            paths: doomed_links
                .iter()
                .map(|id| format!("/v1/lists/{list}/read-only-tokens/{id}"))
                .collect(),
            body: None,
            expected: [204, 204, 404, 401, 401, 403],
        },
        Row::same(
            "POST",
            format!("/v1/lists/{list}/restore"),
            None,
            [409, 409, 404, 401, 401, 403],
        ),
        Row {
            method: "DELETE",
            paths: doomed_lists
                .iter()
                .map(|l| format!("/v1/lists/{l}"))
                .collect(),
            body: None,
            expected: [204, 204, 404, 401, 401, 403],
        },
        // The other family's own routes are closed to the first family.
        Row::same(
            "GET",
            format!("/v1/families/{other_family}/lists"),
            None,
            [404, 404, 200, 401, 401, 403],
        ),
        Row::same(
            "POST",
            format!("/v1/lists/{list}/items"),
            Some(json!({"name": "Tea"})),
            [201, 201, 404, 401, 401, 403],
        ),
        Row::same(
            "GET",
            format!("/v1/families/{family}/items?q=tea"),
            None,
            [200, 200, 404, 401, 401, 403],
        ),
        Row::same(
            "GET",
            format!("/v1/families/{family}/orders"),
            None,
            [200, 200, 404, 401, 401, 403],
        ),
        Row::same(
            "POST",
            format!("/v1/lists/{list}/orders"),
            Some(json!({"vendor_id": Uuid::now_v7(), "item_ids": [Uuid::now_v7()]})),
            [422, 422, 404, 401, 401, 403],
        ),
        Row::same(
            "PATCH",
            format!("/v1/orders/{}", Uuid::now_v7()),
            Some(json!({"status": "confirmed"})),
            [404, 404, 404, 401, 401, 403],
        ),
        Row::same(
            "POST",
            format!("/v1/families/{family}/vendors"),
            Some(json!({"name": "Greengrocer", "whatsapp_number": vendor_at(99)})),
            [201, 403, 404, 401, 401, 403],
        ),
        Row::same(
            "GET",
            format!("/v1/families/{family}/vendors"),
            None,
            [200, 200, 404, 401, 401, 403],
        ),
        Row::same(
            "GET",
            format!("/v1/vendors/{vendor}"),
            None,
            [200, 200, 404, 401, 401, 403],
        ),
        Row::same(
            "PATCH",
            format!("/v1/vendors/{vendor}"),
            Some(json!({"notes": "closes at 8"})),
            [200, 403, 404, 401, 401, 403],
        ),
        Row {
            method: "DELETE",
            paths: doomed_vendors
                .iter()
                .map(|v| format!("/v1/vendors/{v}"))
                .collect(),
            body: None,
            expected: [204, 403, 404, 401, 401, 403],
        },
        // The admin shares first; the member's tap finds the same version.
        Row::same(
            "POST",
            format!("/v1/lists/{list}/shares"),
            Some(json!({"vendor_id": vendor})),
            [201, 200, 404, 401, 401, 403],
        ),
        Row::same(
            "GET",
            format!("/v1/lists/{list}/shares"),
            None,
            [200, 200, 404, 401, 401, 403],
        ),
        Row::same(
            "GET",
            format!("/v1/shares/{share}"),
            None,
            [200, 200, 404, 401, 401, 403],
        ),
        Row {
            method: "DELETE",
            paths: doomed_shares
                .iter()
                .map(|s| format!("/v1/shares/{s}/link"))
                .collect(),
            body: None,
            expected: [204, 204, 404, 401, 401, 403],
        },
    ];
    let mut failures = Vec::new();
    for row in &rows {
        for (i, caller) in CALLERS.iter().enumerate() {
            let path = &row.paths[i];
            let (status, body) = app
                .call(row.method, path, tokens[i].as_deref(), row.body.clone())
                .await;
            if status != row.expected[i] {
                failures.push(format!(
                    "{} {path} as {caller}: expected {}, got {status} {body}",
                    row.method, row.expected[i]
                ));
            }
            if status >= 400 {
                assert!(
                    body["error"]["code"].is_string() && body["error"]["message"].is_string(),
                    "{} {path} as {caller}: error body {body}",
                    row.method
                );
            }
        }
    }
    assert!(
        failures.is_empty(),
        "authorization matrix:\n{}",
        failures.join("\n")
    );

    // The sync socket: members sync; the rest are closed with a clear code.
    for (i, caller) in CALLERS.iter().enumerate() {
        let client = open_socket(&app, list, tokens[i].as_deref()).await;
        match i {
            0 | 1 | 5 => wait_synced(&client).await,
            _ => {
                let (code, reason) = closed_with(&client, Duration::from_secs(10), caller).await;
                let expected = if i == 2 { 4404 } else { 4401 };
                assert_eq!(code, expected, "socket as {caller}: {reason}");
            }
        }
    }
    // A read-only token names one list: any other is not found.
    let elsewhere = app.create_list(&member, family, "Other list").await;
    let client = open_socket(&app, elsewhere, Some(&read_only)).await;
    let (code, _) = closed_with(&client, Duration::from_secs(10), "read-only elsewhere").await;
    assert_eq!(code, 4404);
    // A list that does not exist looks like one the caller may not see.
    let client = open_socket(&app, Uuid::now_v7(), Some(&admin.access_token)).await;
    let (code, _) = closed_with(&client, Duration::from_secs(10), "unknown list").await;
    assert_eq!(code, 4404);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_token_syncs_but_its_edits_are_refused_and_never_stored() {
    let db = TestDatabase::create().await;
    let app = TestApp::spawn(db.url()).await;
    let owner = app.signup("owner").await;
    let family = app.create_family(&owner, "Smiths").await;
    let list = app.create_list(&owner, family, "Weekly").await;
    let mut writer = SyncClient::new();
    writer
        .connect(&app.sync_url_with(list, Some(&owner.access_token)))
        .await
        .expect("connect");
    wait_synced(&writer).await;
    add_item(&writer, "Milk");

    let token = read_only_token(&app, &owner, list).await;
    let vendor = open_socket(&app, list, Some(&token)).await;
    wait_synced(&vendor).await;
    eventually(
        "the vendor sees the list",
        Duration::from_secs(10),
        || async { vendor.snapshot().items.len() == 1 },
    )
    .await;
    add_item(&vendor, "Caviar");
    let mut status = vendor.status();
    tokio::time::timeout(
        Duration::from_secs(10),
        status.wait_for(|s| !s.denied.is_empty()),
    )
    .await
    .expect("permission denied within 10 s")
    .expect("status open");
    // Live edits of the writer still reach the vendor; the refused one
    // reached nobody and was not stored.
    add_item(&writer, "Bread");
    eventually(
        "the vendor sees later edits",
        Duration::from_secs(10),
        || async { vendor.snapshot().items.iter().any(|i| i.name == "Bread") },
    )
    .await;
    let expected = writer.snapshot();
    assert!(expected.items.iter().all(|i| i.name != "Caviar"));
    wait_stored(db.url(), list, &expected).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_member_on_one_replica_closes_their_socket_on_the_other() {
    let db = TestDatabase::create().await;
    let redis = redis_url().await;
    let a = TestApp::spawn_replica(db.url(), &redis, |_| {}).await;
    let b = TestApp::spawn_replica(db.url(), &redis, |_| {}).await;
    let admin = a.signup("admin").await;
    let member = a.signup("member").await;
    let family = a.create_family(&admin, "Smiths").await;
    a.add_member(&admin, family, &member).await;
    let list = a.create_list(&admin, family, "Weekly").await;

    let mut on_b = SyncClient::new();
    on_b.connect(&b.sync_url_with(list, Some(&member.access_token)))
        .await
        .expect("connect");
    wait_synced(&on_b).await;
    let mut admins_socket = SyncClient::new();
    admins_socket
        .connect(&b.sync_url_with(list, Some(&admin.access_token)))
        .await
        .expect("connect");
    wait_synced(&admins_socket).await;

    let (status, body) = a
        .call(
            "DELETE",
            &format!("/v1/families/{family}/members/{}", member.user_id),
            Some(&admin.access_token),
            None,
        )
        .await;
    assert_eq!(status, 204, "{body}");
    let removed_at = std::time::Instant::now();
    let (code, reason) = closed_with(&on_b, Duration::from_secs(3), "removed member on B").await;
    assert_eq!(code, 4403, "{reason}");
    eprintln!(
        "socket on the other replica closed {:?} after the removal",
        removed_at.elapsed()
    );
    // Only the removed member's socket closed.
    assert!(admins_socket.status().borrow().closed_with.is_none());
    // Coming back is refused, on either replica.
    for app in [&a, &b] {
        let again = open_socket(app, list, Some(&member.access_token)).await;
        let (code, _) = closed_with(&again, Duration::from_secs(10), "reconnect").await;
        assert_eq!(code, 4404);
    }
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_the_relay_never_delivered_still_closes_the_socket() {
    // PostgreSQL: the test changes rows behind the server's back with SQL of its own.
    let db = TestDatabase::postgres().await;
    let app = TestApp::spawn_with(db.url(), |c| c.auth.access_recheck_secs = 1).await;
    let admin = app.signup("admin").await;
    let member = app.signup("member").await;
    let family = app.create_family(&admin, "Smiths").await;
    app.add_member(&admin, family, &member).await;
    let list = app.create_list(&admin, family, "Weekly").await;
    let vendor = read_only_token(&app, &member, list).await;
    let sockets = [
        open_socket(&app, list, Some(&member.access_token)).await,
        open_socket(&app, list, Some(&vendor)).await,
    ];
    for socket in &sockets {
        wait_synced(socket).await;
    }
    // The membership goes behind the server's back: no revocation message
    // is sent, as if the relay had lost it.
    let pool = larder_storage::postgres::connect(db.url(), 1)
        .await
        .expect("connect");
    sqlx::query("DELETE FROM family_memberships WHERE family_id = $1 AND user_id = $2")
        .bind(family)
        .bind(member.user_id)
        .execute(&pool)
        .await
        .expect("delete membership");
    pool.close().await;
    for socket in &sockets {
        let (code, reason) =
            closed_with(socket, Duration::from_secs(10), "periodic re-check").await;
        assert_eq!(code, 4403, "{reason}");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_list_closes_its_sockets_everywhere_and_restoring_reopens_it() {
    let db = TestDatabase::create().await;
    let redis = redis_url().await;
    let a = TestApp::spawn_replica(db.url(), &redis, |_| {}).await;
    let b = TestApp::spawn_replica(db.url(), &redis, |_| {}).await;
    let owner = a.signup("owner").await;
    let family = a.create_family(&owner, "Smiths").await;
    let list = a.create_list(&owner, family, "Weekly").await;
    let on_b = open_socket(&b, list, Some(&owner.access_token)).await;
    wait_synced(&on_b).await;
    add_item(&on_b, "Eggs");
    wait_stored(db.url(), list, &on_b.snapshot()).await;

    let (status, _) = a
        .call(
            "DELETE",
            &format!("/v1/lists/{list}"),
            Some(&owner.access_token),
            None,
        )
        .await;
    assert_eq!(status, 204);
    let (code, _) = closed_with(&on_b, Duration::from_secs(3), "deleted list on B").await;
    assert_eq!(code, 4404);
    let (status, _) = a
        .call(
            "GET",
            &format!("/v1/lists/{list}"),
            Some(&owner.access_token),
            None,
        )
        .await;
    assert_eq!(status, 404);
    let (status, body) = a
        .call(
            "GET",
            &format!("/v1/families/{family}/lists?deleted=true"),
            Some(&owner.access_token),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["lists"][0]["id"], json!(list.to_string()));

    let (status, body) = a
        .call(
            "POST",
            &format!("/v1/lists/{list}/restore"),
            Some(&owner.access_token),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let again = open_socket(&b, list, Some(&owner.access_token)).await;
    wait_synced(&again).await;
    eventually(
        "the restored list has its items",
        Duration::from_secs(10),
        || async { again.snapshot().items.iter().any(|i| i.name == "Eggs") },
    )
    .await;
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_expiring_during_a_live_socket_closes_it_with_its_own_code() {
    let db = TestDatabase::create().await;
    let app = TestApp::spawn_with(db.url(), |c| c.auth.access_token_ttl_secs = 2).await;
    let owner = app.signup("owner").await;
    let family = app.create_family(&owner, "Smiths").await;
    let list = app.create_list(&owner, family, "Weekly").await;
    let client = open_socket(&app, list, Some(&owner.access_token)).await;
    wait_synced(&client).await;
    add_item(&client, "Butter");
    let (code, reason) = closed_with(&client, Duration::from_secs(10), "expiry").await;
    assert_eq!(code, 4440, "{reason}");
    // What it sent before is kept.
    wait_stored(db.url(), list, &client.snapshot()).await;
    // Its expired token no longer opens a socket; a refreshed one does.
    let refused = open_socket(&app, list, Some(&owner.access_token)).await;
    let (code, _) = closed_with(&refused, Duration::from_secs(10), "expired token").await;
    assert_eq!(code, 4401);
    let (status, body) = app
        .call(
            "POST",
            "/v1/auth/refresh",
            None,
            Some(json!({"refresh_token": owner.refresh_token})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let fresh = open_socket(&app, list, body["access_token"].as_str()).await;
    wait_synced(&fresh).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_renamed_through_rest_changes_live_documents() {
    let db = TestDatabase::create().await;
    let app = TestApp::spawn(db.url()).await;
    let owner = app.signup("owner").await;
    let family = app.create_family(&owner, "Smiths").await;
    let list = app.create_list(&owner, family, "Weekly").await;
    let client = open_socket(&app, list, Some(&owner.access_token)).await;
    wait_synced(&client).await;
    assert_eq!(client.snapshot().meta.name.as_deref(), Some("Weekly"));
    let (status, body) = app
        .call(
            "PATCH",
            &format!("/v1/lists/{list}"),
            Some(&owner.access_token),
            Some(json!({"name": "Party", "status": "archived"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["name"].as_str(), body["status"].as_str()),
        (Some("Party"), Some("archived"))
    );
    eventually(
        "the client sees the new name",
        Duration::from_secs(10),
        || async { client.snapshot().meta.name.as_deref() == Some("Party") },
    )
    .await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_tokens_rotate_and_a_reused_one_revokes_the_whole_sign_in() {
    // PostgreSQL: the test changes rows behind the server's back with SQL of its own.
    let db = TestDatabase::postgres().await;
    let app = TestApp::spawn(db.url()).await;
    let account = app.signup("ann").await;
    let refresh = |token: String| refresh_with(&app, token);
    let (status, first) = refresh(account.refresh_token.clone()).await;
    assert_eq!(status, 200, "{first}");
    let second_token = first["refresh_token"].as_str().expect("token").to_owned();
    assert_ne!(second_token, account.refresh_token);
    let (status, second) = refresh(second_token.clone()).await;
    assert_eq!(status, 200, "{second}");
    let third_token = second["refresh_token"].as_str().expect("token").to_owned();
    // Past the grace period for retries (see the test below).
    age_rotations(&app).await;
    // The first token again: someone copied it. Everything of that sign-in goes.
    let (status, body) = refresh(account.refresh_token.clone()).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("refresh_token_reused"))
    );
    let (status, body) = refresh(third_token).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("refresh_token_reused"))
    );
    // Another sign-in is unaffected, and logout ends it.
    let other = app.login(&account.email).await;
    let (status, _) = app
        .call(
            "POST",
            "/v1/auth/logout",
            None,
            Some(json!({"refresh_token": other.refresh_token})),
        )
        .await;
    assert_eq!(status, 204);
    let (status, _) = refresh(other.refresh_token.clone()).await;
    assert_eq!(status, 401);
    let (status, body) = refresh("never-issued".to_owned()).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("refresh_token_invalid"))
    );
    app.stop().await;
}

/// Trades `token` at `/v1/auth/refresh`.
async fn refresh_with(app: &TestApp, token: String) -> (u16, Value) {
    app.call(
        "POST",
        "/v1/auth/refresh",
        None,
        Some(json!({"refresh_token": token})),
    )
    .await
}

/// Moves every refresh-token rotation an hour into the past: past any grace
/// period, without waiting for one.
async fn age_rotations(app: &TestApp) {
    let pool = larder_storage::postgres::connect(&app.database_url, 1)
        .await
        .expect("connect");
    sqlx::query(
        "UPDATE refresh_tokens SET revoked_at = revoked_at - interval '1 hour' \
         WHERE replaced_by IS NOT NULL",
    )
    .execute(&pool)
    .await
    .expect("age rotations");
    pool.close().await;
}

/// A refresh whose response was lost (or two tabs refreshing at once) is
/// retried with the same token: within the grace period it gets the same
/// successor and the sign-in lives on; after it, the retry is reuse.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_retried_within_the_grace_period_gets_the_same_successor() {
    // PostgreSQL: the test changes rows behind the server's back with SQL of its own.
    let db = TestDatabase::postgres().await;
    let app = TestApp::spawn(db.url()).await;
    let account = app.signup("ann").await;
    let refresh = |token: String| refresh_with(&app, token);
    let (status, first) = refresh(account.refresh_token.clone()).await;
    assert_eq!(status, 200, "{first}");
    let (status, retried) = refresh(account.refresh_token.clone()).await;
    assert_eq!(status, 200, "the retry is answered: {retried}");
    assert_eq!(
        retried["refresh_token"], first["refresh_token"],
        "with the same successor"
    );
    let (status, me) = app
        .call("GET", "/v1/me", retried["access_token"].as_str(), None)
        .await;
    assert_eq!(status, 200, "its access token works: {me}");
    let successor = first["refresh_token"].as_str().expect("token").to_owned();
    let (status, next) = refresh(successor.clone()).await;
    assert_eq!(status, 200, "the sign-in lives on: {next}");

    // A sign-in that ended (logout) cannot be revived by a retry.
    let other = app.login(&account.email).await;
    let (status, rotated) = refresh(other.refresh_token.clone()).await;
    assert_eq!(status, 200, "{rotated}");
    let (status, _) = app
        .call(
            "POST",
            "/v1/auth/logout",
            None,
            Some(json!({"refresh_token": rotated["refresh_token"]})),
        )
        .await;
    assert_eq!(status, 204);
    let (status, _) = refresh(other.refresh_token.clone()).await;
    assert_eq!(status, 401, "a retry after logout is refused");

    // After the grace period the old token is reuse: the sign-in ends.
    age_rotations(&app).await;
    let (status, body) = refresh(account.refresh_token.clone()).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("refresh_token_reused"))
    );
    let latest = next["refresh_token"].as_str().expect("token").to_owned();
    let (status, _) = refresh(latest).await;
    assert_eq!(status, 401, "every token of the sign-in is revoked");
    app.stop().await;
}

/// Removing a member also revokes the invitation codes they handed out and
/// nobody used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invitations_of_a_removed_admin_stop_working() {
    let db = TestDatabase::create().await;
    let app = TestApp::spawn(db.url()).await;
    let first = app.signup("first").await;
    let second = app.signup("second").await;
    let family = app.create_family(&first, "Smiths").await;
    app.add_member(&first, family, &second).await;
    let (status, _) = app
        .call(
            "PATCH",
            &format!("/v1/families/{family}/members/{}", second.user_id),
            Some(&first.access_token),
            Some(json!({"role": "admin"})),
        )
        .await;
    assert_eq!(status, 200);
    let (status, invitation) = app
        .call(
            "POST",
            &format!("/v1/families/{family}/invitations"),
            Some(&second.access_token),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 201, "{invitation}");
    let code = invitation["code"].as_str().expect("code").to_owned();
    let (status, _) = app
        .call(
            "DELETE",
            &format!("/v1/families/{family}/members/{}", second.user_id),
            Some(&first.access_token),
            None,
        )
        .await;
    assert_eq!(status, 204);
    let newcomer = app.signup("newcomer").await;
    let (status, body) = app
        .call(
            "POST",
            &format!("/v1/invitations/{code}/accept"),
            Some(&newcomer.access_token),
            None,
        )
        .await;
    assert_eq!(status, 410, "the removed admin's code is revoked: {body}");
    let (status, _) = app
        .call(
            "GET",
            &format!("/v1/families/{family}"),
            Some(&newcomer.access_token),
            None,
        )
        .await;
    assert_eq!(status, 404, "the newcomer did not get in");
    app.stop().await;
}

/// Vendor links are listed and revocable; revoking one closes its live
/// socket on another replica, and it cannot connect again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_vendor_link_closes_its_socket_on_every_replica() {
    let redis = redis_url().await;
    let db = TestDatabase::create().await;
    let a = TestApp::spawn_replica(db.url(), &redis, |_| {}).await;
    let b = TestApp::spawn_replica(db.url(), &redis, |_| {}).await;
    let owner = a.signup("owner").await;
    let family = a.create_family(&owner, "Smiths").await;
    let list = a.create_list(&owner, family, "Weekly").await;
    let issue = |hours: Option<u32>| {
        let a = &a;
        let owner = &owner;
        async move {
            let body = match hours {
                Some(h) => json!({"expires_in_hours": h}),
                None => json!({}),
            };
            a.call(
                "POST",
                &format!("/v1/lists/{list}/read-only-tokens"),
                Some(&owner.access_token),
                Some(body),
            )
            .await
        }
    };
    let (status, kept) = issue(None).await;
    assert_eq!(status, 201, "{kept}");
    let expires =
        chrono::DateTime::parse_from_rfc3339(kept["expires_at"].as_str().expect("expiry"))
            .expect("a timestamp");
    let week = expires.signed_duration_since(chrono::Utc::now());
    assert!(
        week > chrono::Duration::hours(167) && week <= chrono::Duration::hours(168),
        "a link lasts a week unless asked otherwise: {week}"
    );
    let (status, body) = issue(Some(721)).await;
    assert_eq!(status, 422, "past the maximum lifetime: {body}");
    let (status, doomed) = issue(Some(2)).await;
    assert_eq!(status, 201, "{doomed}");
    let doomed_id = json_uuid(&doomed["id"]);
    let doomed_token = doomed["token"].as_str().expect("token").to_owned();

    let (status, listed) = a
        .call(
            "GET",
            &format!("/v1/lists/{list}/read-only-tokens"),
            Some(&owner.access_token),
            None,
        )
        .await;
    assert_eq!(status, 200, "{listed}");
    let ids: Vec<Uuid> = listed["tokens"]
        .as_array()
        .expect("tokens")
        .iter()
        .map(|t| json_uuid(&t["id"]))
        .collect();
    assert_eq!(ids.len(), 2);
    assert!(ids.contains(&doomed_id) && ids.contains(&json_uuid(&kept["id"])));
    assert!(
        listed.to_string().find(&doomed_token).is_none(),
        "tokens are never listed"
    );

    // The vendor syncs through replica B; the family revokes through A.
    let vendor = open_socket(&b, list, Some(&doomed_token)).await;
    wait_synced(&vendor).await;
    let other_vendor = open_socket(&b, list, Some(kept["token"].as_str().expect("token"))).await;
    wait_synced(&other_vendor).await;
    let (status, _) = a
        .call(
            "DELETE",
            &format!("/v1/lists/{list}/read-only-tokens/{doomed_id}"),
            Some(&owner.access_token),
            None,
        )
        .await;
    assert_eq!(status, 204);
    let (code, reason) = closed_with(&vendor, Duration::from_secs(5), "revoked link").await;
    assert_eq!((code, reason.as_str()), (4403, "this link was revoked"));
    assert!(
        other_vendor.status().borrow().closed_with.is_none(),
        "the other link keeps syncing"
    );
    let again = open_socket(&b, list, Some(&doomed_token)).await;
    let (code, _) = closed_with(&again, Duration::from_secs(10), "revoked link again").await;
    assert_eq!(code, 4403);
    let (status, listed) = a
        .call(
            "GET",
            &format!("/v1/lists/{list}/read-only-tokens"),
            Some(&owner.access_token),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(listed["tokens"].as_array().map(Vec::len), Some(1));
    // A list has at most 100 working links (one is working now).
    for _ in 0..99 {
        let (status, body) = issue(None).await;
        assert_eq!(status, 201, "{body}");
    }
    let (status, body) = issue(None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("too_many_links"))
    );
    let (status, _) = a
        .call(
            "DELETE",
            &format!("/v1/lists/{list}/read-only-tokens/{}", Uuid::now_v7()),
            Some(&owner.access_token),
            None,
        )
        .await;
    assert_eq!(status, 404, "no such link");
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_brute_force_is_rate_limited_across_replicas() {
    let db = TestDatabase::create().await;
    let redis = redis_url().await;
    let limited = |c: &mut larder_server::Config| c.rate_limits.login_per_minute = 5;
    let a = TestApp::spawn_replica(db.url(), &redis, limited).await;
    let b = TestApp::spawn_replica(db.url(), &redis, limited).await;
    let account = a.signup("target").await;
    let attempt = |app: &TestApp, password: &str| {
        let request = app
            .http()
            .post(app.url("/v1/auth/login"))
            .json(&json!({"email": account.email, "password": password}));
        async move { request.send().await.expect("request") }
    };
    // Five guesses, spread over both replicas, are answered.
    for i in 0..5 {
        let app = if i % 2 == 0 { &a } else { &b };
        assert_eq!(attempt(app, "wrong password").await.status().as_u16(), 401);
    }
    // Then the account is locked for a while, whichever replica is asked,
    // even with the right password.
    for app in [&a, &b] {
        let response = attempt(app, TEST_PASSWORD).await;
        assert_eq!(response.status().as_u16(), 429);
        let retry_after: u64 = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .expect("Retry-After seconds");
        assert!((1..=60).contains(&retry_after), "Retry-After {retry_after}");
        let body: Value = response.json().await.expect("JSON error");
        assert_eq!(body["error"]["code"], "rate_limited");
    }
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_makes_retried_and_concurrent_creates_one_row() {
    let db = TestDatabase::create().await;
    let app = TestApp::spawn(db.url()).await;
    let owner = app.signup("owner").await;
    let create = |path: String, key: &'static str, body: Value| {
        let request = app
            .http()
            .post(app.url(&path))
            .bearer_auth(&owner.access_token)
            .header("Idempotency-Key", key)
            .json(&body);
        async move {
            let response = request.send().await.expect("request");
            let status = response.status().as_u16();
            let body: Value = response.json().await.expect("JSON");
            (status, body)
        }
    };
    // Retried one after the other.
    let (s1, first) = create("/v1/families".into(), "family-1", json!({"name": "Smiths"})).await;
    let (s2, again) = create("/v1/families".into(), "family-1", json!({"name": "Smiths"})).await;
    assert_eq!((s1, s2), (201, 201));
    assert_eq!(first, again);
    let family = json_uuid(&first["id"]);

    // Sent eight times at once.
    let path = format!("/v1/families/{family}/lists");
    let answers = futures_util::future::join_all(
        (0..8).map(|_| create(path.clone(), "list-1", json!({"name": "Weekly"}))),
    )
    .await;
    let ids: std::collections::HashSet<String> = answers
        .iter()
        .map(|(status, body)| {
            assert_eq!(*status, 201, "{body}");
            body["id"].as_str().expect("id").to_owned()
        })
        .collect();
    assert_eq!(ids.len(), 1, "one list for one key: {ids:?}");
    let (_, page) = app
        .call(
            "GET",
            &format!("/v1/families/{family}/lists"),
            Some(&owner.access_token),
            None,
        )
        .await;
    assert_eq!(page["lists"].as_array().map(Vec::len), Some(1));
    let (_, families) = app
        .call("GET", "/v1/families", Some(&owner.access_token), None)
        .await;
    assert_eq!(families["families"].as_array().map(Vec::len), Some(1));

    // The same key with another body is refused, not replayed.
    let (status, body) = create(path.clone(), "list-1", json!({"name": "Other"})).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("idempotency_key_reused"))
    );
    // Keys are per user: another user's identical key is unrelated.
    let stranger = app.signup("stranger").await;
    let (status, _) = app
        .call(
            "POST",
            "/v1/families",
            Some(&stranger.access_token),
            Some(json!({"name": "Smiths"})),
        )
        .await;
    assert_eq!(status, 201);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn families_keep_an_admin_and_invitations_work_once() {
    let db = TestDatabase::create().await;
    let app = TestApp::spawn(db.url()).await;
    let admin = app.signup("admin").await;
    let member = app.signup("member").await;
    let late = app.signup("late").await;
    let family = app.create_family(&admin, "Smiths").await;
    let token = Some(admin.access_token.as_str());
    let me = admin.user_id;

    // The only admin can neither leave nor step down.
    let (status, body) = app
        .call(
            "DELETE",
            &format!("/v1/families/{family}/members/{me}"),
            token,
            None,
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("last_admin"))
    );
    let (status, _) = app
        .call(
            "PATCH",
            &format!("/v1/families/{family}/members/{me}"),
            token,
            Some(json!({"role": "member"})),
        )
        .await;
    assert_eq!(status, 409);

    // An invitation code works once.
    let (status, invitation) = app
        .call(
            "POST",
            &format!("/v1/families/{family}/invitations"),
            token,
            Some(json!({"role": "admin"})),
        )
        .await;
    assert_eq!(status, 201, "{invitation}");
    let code = invitation["code"].as_str().expect("code");
    let accept = |account: &Account| {
        let path = format!("/v1/invitations/{code}/accept");
        let token = account.access_token.clone();
        let app = &app;
        async move { app.call("POST", &path, Some(&token), None).await }
    };
    let (status, body) = accept(&member).await;
    assert_eq!(
        (status, body["role"].as_str()),
        (200, Some("admin")),
        "{body}"
    );
    let (status, body) = accept(&late).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (410, Some("invitation_used"))
    );
    let (status, _) = app
        .call(
            "POST",
            "/v1/invitations/not-a-code/accept",
            Some(&late.access_token),
            None,
        )
        .await;
    assert_eq!(status, 404);

    // With a second admin the first may leave.
    let (status, _) = app
        .call(
            "DELETE",
            &format!("/v1/families/{family}/members/{me}"),
            token,
            None,
        )
        .await;
    assert_eq!(status, 204);
    let (status, _) = app
        .call("GET", &format!("/v1/families/{family}"), token, None)
        .await;
    assert_eq!(status, 404);
    let (status, body) = app
        .call(
            "GET",
            &format!("/v1/families/{family}/members"),
            Some(&member.access_token),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["members"].as_array().map(Vec::len), Some(1));
    app.stop().await;
}

/// Method, path, content type, body, an extra header, expected status.
type BadRequest<'a> = (
    &'a str,
    String,
    &'a str,
    String,
    Option<(&'a str, &'a str)>,
    u16,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_a_4xx_with_a_json_error_never_a_500() {
    let db = TestDatabase::create().await;
    let app = TestApp::spawn(db.url()).await;
    let owner = app.signup("owner").await;
    let family = app.create_family(&owner, "Smiths").await;
    let list = app.create_list(&owner, family, "Weekly").await;
    let m = owner.user_id;
    let json = "application/json";
    let big = format!(r#"{{"name": "{}"}}"#, "x".repeat(100 * 1024));
    let long_key = "k".repeat(300);
    // (method, path, content type, body, extra header, expected status)
    let cases: Vec<BadRequest> = vec![
        (
            "POST",
            "/v1/auth/signup".into(),
            json,
            r#"{"email": "#.into(),
            None,
            400,
        ),
        (
            "POST",
            "/v1/auth/signup".into(),
            json,
            String::new(),
            None,
            400,
        ),
        (
            "POST",
            "/v1/auth/signup".into(),
            "text/plain",
            r#"{"email":"a@b.co","password":"12345678","display_name":"A"}"#.into(),
            None,
            415,
        ),
        (
            "POST",
            "/v1/auth/signup".into(),
            json,
            r#"{"email":"a@b.co","password":"12345678","display_name":"A","admin":true}"#.into(),
            None,
            422,
        ),
        (
            "POST",
            "/v1/auth/signup".into(),
            json,
            r#"{"email":"a@b.co","password":"12345678"}"#.into(),
            None,
            422,
        ),
        (
            "POST",
            "/v1/auth/signup".into(),
            json,
            r#"{"email":"not-an-email","password":"12345678","display_name":"A"}"#.into(),
            None,
            422,
        ),
        (
            "POST",
            "/v1/auth/signup".into(),
            json,
            r#"{"email":"a@b.co","password":"short","display_name":"A"}"#.into(),
            None,
            422,
        ),
        (
            "POST",
            "/v1/auth/signup".into(),
            json,
            format!(
                r#"{{"email":"a@b.co","password":"12345678","display_name":"{}"}}"#,
                "n".repeat(101)
            ),
            None,
            422,
        ),
        (
            "POST",
            "/v1/auth/signup".into(),
            json,
            r#"{"email":"a@b.co","password":"12345678","display_name":7}"#.into(),
            None,
            422,
        ),
        (
            "POST",
            "/v1/auth/signup".into(),
            json,
            r#"["a@b.co"]"#.into(),
            None,
            422,
        ),
        (
            "POST",
            "/v1/auth/signup".into(),
            json,
            big.clone(),
            None,
            413,
        ),
        (
            "POST",
            "/v1/auth/login".into(),
            json,
            r#"{"email":"","password":""}"#.into(),
            None,
            422,
        ),
        (
            "POST",
            "/v1/auth/refresh".into(),
            json,
            r#"{"refresh_token":null}"#.into(),
            None,
            422,
        ),
        (
            "POST",
            "/v1/families".into(),
            json,
            r#"{"name":""}"#.into(),
            None,
            422,
        ),
        (
            "POST",
            "/v1/families".into(),
            json,
            r#"{"name":"   "}"#.into(),
            None,
            422,
        ),
        (
            "POST",
            "/v1/families".into(),
            json,
            format!(r#"{{"name":"{}"}}"#, "f".repeat(101)),
            None,
            422,
        ),
        (
            "POST",
            "/v1/families".into(),
            json,
            r#"{"name":"ok","color":"red"}"#.into(),
            None,
            422,
        ),
        (
            "POST",
            "/v1/families".into(),
            json,
            r#"{"name":"ok"}"#.into(),
            Some(("Idempotency-Key", long_key.as_str())),
            400,
        ),
        (
            "PATCH",
            format!("/v1/families/{family}/members/{m}"),
            json,
            r#"{"role":"owner"}"#.into(),
            None,
            422,
        ),
        (
            "POST",
            format!("/v1/families/{family}/invitations"),
            json,
            r#"{"role":"king"}"#.into(),
            None,
            422,
        ),
        (
            "POST",
            format!("/v1/families/{family}/lists"),
            json,
            r#"{"name":"ok","id":"not-a-uuid"}"#.into(),
            None,
            422,
        ),
        (
            "POST",
            format!("/v1/families/{family}/lists"),
            json,
            format!(r#"{{"name":"{}"}}"#, "l".repeat(201)),
            None,
            422,
        ),
        (
            "POST",
            format!("/v1/families/{family}/lists"),
            json,
            r#"{"name":"new\u0000line"}"#.into(),
            None,
            422,
        ),
        (
            "PATCH",
            format!("/v1/lists/{list}"),
            json,
            "{}".into(),
            None,
            422,
        ),
        (
            "PATCH",
            format!("/v1/lists/{list}"),
            json,
            r#"{"status":"deleted"}"#.into(),
            None,
            422,
        ),
        (
            "POST",
            format!("/v1/lists/{list}/read-only-tokens"),
            json,
            r#"{"expires_in_hours":0}"#.into(),
            None,
            422,
        ),
        (
            "POST",
            format!("/v1/lists/{list}/read-only-tokens"),
            json,
            r#"{"expires_in_hours":-3}"#.into(),
            None,
            422,
        ),
        (
            "GET",
            "/v1/lists/not-a-uuid".into(),
            json,
            String::new(),
            None,
            400,
        ),
        (
            "GET",
            format!("/v1/families/{family}/lists?limit=0"),
            json,
            String::new(),
            None,
            400,
        ),
        (
            "GET",
            format!("/v1/families/{family}/lists?limit=abc"),
            json,
            String::new(),
            None,
            400,
        ),
        (
            "GET",
            format!("/v1/families/{family}/lists?bogus=1"),
            json,
            String::new(),
            None,
            400,
        ),
        (
            "GET",
            "/v1/me".into(),
            json,
            String::new(),
            Some(("Authorization", "Basic YTpi")),
            401,
        ),
        (
            "GET",
            "/v1/me".into(),
            json,
            String::new(),
            Some(("Authorization", "Bearer not.a.jwt")),
            401,
        ),
        (
            "GET",
            "/v1/nothing-here".into(),
            json,
            String::new(),
            None,
            404,
        ),
        ("PUT", "/v1/families".into(), json, "{}".into(), None, 405),
        (
            "POST",
            format!("/v1/lists/{list}/items"),
            json,
            r#"{"name":""}"#.into(),
            None,
            422,
        ),
        (
            "POST",
            format!("/v1/lists/{list}/items"),
            json,
            format!(r#"{{"name":"x","note":"{}"}}"#, "n".repeat(501)),
            None,
            422,
        ),
        (
            "POST",
            format!("/v1/lists/{list}/items"),
            json,
            r#"{"name":"x","position":"ab0"}"#.into(),
            None,
            422,
        ),
        (
            "POST",
            format!("/v1/lists/{list}/items?wait=soon"),
            json,
            r#"{"name":"x"}"#.into(),
            None,
            400,
        ),
        (
            "PATCH",
            format!("/v1/lists/{list}/items/{m}"),
            json,
            "{}".into(),
            None,
            422,
        ),
        (
            "PATCH",
            format!("/v1/lists/{list}/items/{m}"),
            json,
            r#"{"status":"eaten"}"#.into(),
            None,
            422,
        ),
        (
            "PATCH",
            format!("/v1/lists/{list}/items/not-a-uuid"),
            json,
            r#"{"name":"x"}"#.into(),
            None,
            400,
        ),
        (
            "POST",
            format!("/v1/lists/{list}/orders"),
            json,
            r#"{"vendor_id":"x","item_ids":[]}"#.into(),
            None,
            422,
        ),
        (
            "POST",
            format!("/v1/lists/{list}/orders"),
            json,
            format!(r#"{{"vendor_id":"{m}","item_ids":[]}}"#),
            None,
            422,
        ),
        (
            "PATCH",
            format!("/v1/orders/{m}"),
            json,
            r#"{"status":"lost"}"#.into(),
            None,
            422,
        ),
        (
            "GET",
            format!("/v1/families/{family}/items"),
            json,
            String::new(),
            None,
            400,
        ),
        (
            "GET",
            format!("/v1/families/{family}/items?q=x&cursor=bad"),
            json,
            String::new(),
            None,
            400,
        ),
        (
            "GET",
            format!("/v1/families/{family}/orders?status=lost"),
            json,
            String::new(),
            None,
            400,
        ),
        (
            "GET",
            format!("/v1/lists/{list}?status=eaten"),
            json,
            String::new(),
            None,
            400,
        ),
    ];
    let mut failures = Vec::new();
    for (method, path, content_type, body, header, expected) in &cases {
        let mut request = app
            .http()
            .request(
                reqwest::Method::from_bytes(method.as_bytes()).expect("method"),
                app.url(path),
            )
            .header("content-type", *content_type)
            .body(body.clone());
        match header {
            Some(("Authorization", value)) => request = request.header("Authorization", *value),
            Some((name, value)) => {
                request = request
                    .bearer_auth(&owner.access_token)
                    .header(*name, *value)
            }
            None => request = request.bearer_auth(&owner.access_token),
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        let error: Option<Value> = serde_json::from_str(&text).ok();
        let has_error = error
            .as_ref()
            .is_some_and(|e| e["error"]["code"].is_string() && e["error"]["message"].is_string());
        if status != *expected || !has_error {
            let shown: String = body.chars().take(60).collect();
            failures.push(format!("{method} {path} {shown:?}: expected {expected} with a JSON error, got {status} {text}"));
        }
    }
    assert!(failures.is_empty(), "bad input:\n{}", failures.join("\n"));
    // Nothing above changed anything.
    let (_, families) = app
        .call("GET", "/v1/families", Some(&owner.access_token), None)
        .await;
    assert_eq!(families["families"].as_array().map(Vec::len), Some(1));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_description_lists_every_route() {
    let db = TestDatabase::create().await;
    let app = TestApp::spawn(db.url()).await;
    let (status, doc) = app.call("GET", "/v1/openapi.json", None, None).await;
    assert_eq!(status, 200);
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")));
    for path in [
        "/v1/auth/login",
        "/v1/families/{family_id}/lists",
        "/v1/lists/{list_id}",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} missing");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emails_match_in_any_case_beyond_ascii_on_every_database() {
    let db = TestDatabase::create().await;
    let app = TestApp::spawn(db.url()).await;
    let tag = Uuid::new_v4().simple().to_string();
    let first = app
        .signup_as(&format!("Émile.{tag}@Example.test"), "Émile")
        .await
        .expect("a new account");
    assert!(
        app.signup_as(&format!("éMILE.{tag}@example.TEST"), "Other")
            .await
            .is_none(),
        "the same email in another case is taken"
    );
    let again = app.login(&format!("ÉMILE.{tag}@EXAMPLE.TEST")).await;
    assert_eq!(again.user_id, first.user_id);
    let (status, me) = app
        .call("GET", "/v1/me", Some(&again.access_token), None)
        .await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["user"]["email"], format!("émile.{tag}@example.test"));
    app.stop().await;
}
