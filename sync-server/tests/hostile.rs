//! Hostile input against the real `larder` binary, run as a child process so
//! that an abort fails the test instead of the test runner. Each attack
//! comes from a socket holding nothing but a token for one list (a
//! read-only vendor link where writing is not needed) and checks what a
//! user would: the documented close code, `/healthz` still 200, witness
//! clients on the same list and on another list still exchanging edits,
//! nothing of the attack stored, and the server's resident memory under a
//! stated bound.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use larder_client::SyncClient;
use larder_crdt::protocol;
use larder_tests::process::ServerProcess;
use larder_tests::*;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use uuid::Uuid;
use yrs::encoding::write::Write;

/// Resident memory the server may reach during any of these attacks (a
/// debug build holding a few lists, one of them ~1.5 MB).
const RSS_BOUND: u64 = 256 * 1024 * 1024;

struct Scene {
    server: ServerProcess,
    app: TestApp,
    _db: TestDatabase,
    db_url: String,
    list: Uuid,
    other: Uuid,
    /// A read-only vendor link for `list`.
    vendor_token: String,
    /// A family member allowed to write `list`.
    member_token: String,
    witnesses: Vec<SyncClient>,
    others: Vec<SyncClient>,
    rounds: usize,
}

impl Scene {
    async fn start(flags: &[&str]) -> Scene {
        let db = TestDatabase::create().await;
        let db_url = db.url().to_owned();
        let server = ServerProcess::start(env!("CARGO_BIN_EXE_larder"), &db_url, flags).await;
        let app = server.app(&db_url);
        let (owner, family_id) = {
            let owner = app.owner().await;
            (owner.account.clone(), owner.family_id)
        };
        let list = app.create_list(&owner, family_id, "Groceries").await;
        let other = app.create_list(&owner, family_id, "Hardware").await;
        let (status, body) = app
            .call(
                "POST",
                &format!("/v1/lists/{list}/read-only-tokens"),
                Some(&owner.access_token),
                Some(serde_json::json!({})),
            )
            .await;
        assert_eq!(status, 201, "vendor link: {body}");
        let vendor_token = body["token"].as_str().expect("token").to_owned();
        let member = app.signup("member").await;
        app.add_member(&owner, family_id, &member).await;
        let mut witnesses = Vec::new();
        let mut others = Vec::new();
        for _ in 0..2 {
            witnesses.push(connect(&app, list, &owner.access_token).await);
            others.push(connect(&app, other, &owner.access_token).await);
        }
        Scene {
            server,
            app,
            _db: db,
            db_url,
            list,
            other,
            vendor_token,
            member_token: member.access_token,
            witnesses,
            others,
            rounds: 0,
        }
    }

    fn url(&self, token: &str) -> String {
        self.app.sync_url_with(self.list, Some(token))
    }

    /// What a user would check after an attack.
    async fn assert_unharmed(&mut self, after: &str) {
        self.server.assert_healthy(after).await;
        self.rounds += 1;
        for (clients, list) in [(&self.witnesses, self.list), (&self.others, self.other)] {
            add_item(&clients[0], &format!("after {after} #{}", self.rounds));
            let snapshot = converge(&[&clients[0], &clients[1]]).await;
            assert!(
                snapshot
                    .items
                    .iter()
                    .any(|i| i.name == format!("after {after} #{}", self.rounds)),
                "the witnesses exchange edits after {after}"
            );
            wait_stored(&self.db_url, list, &snapshot).await;
            assert!(
                !snapshot.items.iter().any(|i| i.name.contains("hostile")),
                "nothing of {after} is in the list"
            );
        }
        let rss = self.server.rss_bytes();
        eprintln!("after {after}: rss {} MiB", rss / (1024 * 1024));
        assert!(
            rss < RSS_BOUND,
            "resident memory {} MiB after {after} is past the bound of {} MiB",
            rss / (1024 * 1024),
            RSS_BOUND / (1024 * 1024)
        );
    }

    /// A counter from `/metrics` (0 when absent).
    async fn metric(&self, name: &str) -> f64 {
        let (status, text) = http_get(self.server.addr, "/metrics")
            .await
            .expect("metrics answer");
        assert_eq!(status, 200);
        text.lines()
            .filter(|line| line.starts_with(name))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

async fn connect(app: &TestApp, list: Uuid, token: &str) -> SyncClient {
    let mut client = SyncClient::new();
    client
        .connect(&app.sync_url_with(list, Some(token)))
        .await
        .expect("connect");
    wait_synced(&client).await;
    client
}

/// Opens a raw socket, sends `frames`, and reads until the server closes it;
/// returns the close code and reason (1006 when the connection was cut
/// without a close frame).
async fn attack(url: &str, frames: Vec<Vec<u8>>) -> (u16, String) {
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(None)
        .max_frame_size(None);
    let (mut socket, _) = tokio_tungstenite::connect_async_with_config(url, Some(config), true)
        .await
        .expect("the attacker connects");
    for frame in frames {
        if socket.send(WsMessage::Binary(frame.into())).await.is_err() {
            break;
        }
    }
    read_close(&mut socket).await
}

async fn read_close<S>(socket: &mut S) -> (u16, String)
where
    S: futures_util::Stream<Item = Result<WsMessage, tokio_tungstenite::tungstenite::Error>>
        + Unpin,
{
    let closed = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(message) = socket.next().await {
            match message {
                Ok(WsMessage::Close(Some(frame))) => {
                    return (u16::from(frame.code), frame.reason.to_string());
                }
                Ok(WsMessage::Close(None)) => return (1005, String::new()),
                Ok(_) => {}
                Err(_) => return (1006, String::new()),
            }
        }
        (1006, String::new())
    })
    .await;
    closed.expect("the server closes the attacker's socket within 30 s")
}

fn var(out: &mut Vec<u8>, n: u64) {
    out.write_var(n);
}

fn string(out: &mut Vec<u8>, s: &str) {
    out.write_string(s);
}

/// An update with one item in root map `items` under `key`, written by
/// `client` at `clock`, with content `kind` + `content`.
fn item_update(client: u64, clock: u64, key: &str, kind: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![1, 1];
    var(&mut out, client);
    var(&mut out, clock);
    out.push(kind | 0x20);
    var(&mut out, 1);
    string(&mut out, "items");
    string(&mut out, key);
    out.extend_from_slice(content);
    out.push(0);
    out
}

fn update_frame(update: Vec<u8>) -> Vec<u8> {
    protocol::encode_update(update)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_updates_close_their_socket_with_4400_and_harm_nobody() {
    let mut scene = Scene::start(&[]).await;
    let vendor = scene.url(&scene.vendor_token.clone());

    // The message that used to overflow a worker's stack: 400 000 nested
    // arrays in one 800 KB update.
    let mut nested = vec![1];
    for _ in 0..400_000 {
        nested.extend_from_slice(&[117, 1]);
    }
    nested.push(126);
    // A five-byte state vector declaring half a billion clients.
    let huge_sv = vec![0, 0, 5, 0x80, 0xca, 0xb5, 0xee, 0x01];
    let mut huge_array = vec![1, 117];
    var(&mut huge_array, 1 << 40);
    let mut huge_clients = Vec::new();
    var(&mut huge_clients, u64::from(u32::MAX));
    let mut abc = Vec::new();
    string(&mut abc, "abc");
    let mut long_int = vec![1, 125];
    long_int.extend_from_slice(&[0xff; 10]);
    long_int.push(1);

    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "deep nesting",
            update_frame(item_update(7, 0, "hostile", 8, &nested)),
        ),
        ("a state vector larger than its message", huge_sv),
        (
            "an array larger than its message",
            update_frame(item_update(7, 0, "hostile", 8, &huge_array)),
        ),
        ("more clients than bytes", update_frame(huge_clients)),
        (
            "a clock that overflows",
            update_frame(item_update(7, u64::from(u32::MAX) - 1, "hostile", 4, &abc)),
        ),
        (
            "an integer wider than 64 bits",
            update_frame(item_update(7, 0, "hostile", 8, &long_int)),
        ),
        (
            "a client id wider than 53 bits",
            update_frame(item_update(1 << 60, 0, "hostile", 4, &abc)),
        ),
    ];
    for (what, frame) in cases {
        let (code, reason) = attack(&vendor, vec![frame]).await;
        assert_eq!(code, 4400, "{what}: closed with {code} ({reason})");
        assert!(reason.starts_with("malformed message"), "{what}: {reason}");
        scene.assert_unharmed(what).await;
    }
    assert!(scene.metric("larder_messages_refused_total").await >= 7.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_and_pending_floods_are_capped() {
    let mut scene = Scene::start(&[]).await;
    let vendor = scene.url(&scene.vendor_token.clone());

    // Thousands of client ids in one presence message.
    let mut many = Vec::new();
    var(&mut many, 3000);
    for client in 0..3000u64 {
        var(&mut many, client + 1);
        var(&mut many, 1);
        string(&mut many, r#"{"user":"hostile"}"#);
    }
    let mut frame = vec![1];
    var(&mut frame, many.len() as u64);
    frame.extend(many);
    let (code, reason) = attack(&vendor, vec![frame]).await;
    assert_eq!(code, 4400, "presence flood: {reason}");
    assert!(
        reason.contains("presence of more than 8 clients"),
        "{reason}"
    );
    scene.assert_unharmed("a presence flood").await;

    // One client's presence state far past its cap.
    let mut big = vec![1];
    var(&mut big, 77);
    var(&mut big, 1);
    string(&mut big, &format!(r#"{{"user":"{}"}}"#, "x".repeat(20_000)));
    let mut frame = vec![1];
    var(&mut frame, big.len() as u64);
    frame.extend(big);
    let (code, reason) = attack(&vendor, vec![frame]).await;
    assert_eq!(code, 4413, "oversized presence: {reason}");
    scene.assert_unharmed("an oversized presence state").await;

    // Updates whose dependency never arrives: yrs would hold them aside,
    // unstored. Each names an origin (client 999, clock 5) nobody wrote.
    let member = scene.url(&scene.member_token.clone());
    let padding = "hostile ".repeat(128);
    let frames: Vec<Vec<u8>> = (0..400u64)
        .map(|i| {
            let mut update = vec![1, 1];
            var(&mut update, 5000 + i);
            var(&mut update, 0);
            update.push(8 | 0x80);
            var(&mut update, 999);
            var(&mut update, 5);
            update.push(1);
            update.push(119);
            string(&mut update, &padding);
            update.push(0);
            update_frame(update)
        })
        .collect();
    // Refused before yrs could hold it aside: reconnect later, when the
    // server may hold what it builds on.
    let (code, reason) = attack(&member, frames).await;
    assert_eq!(code, 1013, "pending flood: {reason}");
    assert!(reason.contains("has not received yet"), "{reason}");
    scene
        .assert_unharmed("a flood of updates with missing dependencies")
        .await;
    assert!(scene.metric("larder_nesting_refused_total").await >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asking_for_the_whole_list_without_reading_does_not_multiply_it_in_memory() {
    let mut scene = Scene::start(&[]).await;
    // A list of about 1.5 MB.
    let writer = &scene.witnesses[0];
    for batch in 0..6 {
        writer.edit(|txn| {
            for i in 0..50 {
                let mut item = new_item(&format!("item {batch}-{i}"));
                item.note = Some("n".repeat(5_000));
                writer.list().add_item(txn, &item).expect("valid item");
            }
        });
        converge(&[&scene.witnesses[0], &scene.witnesses[1]]).await;
    }
    let baseline = scene.server.rss_bytes();

    // 300 sync step 1 and 300 presence queries back to back in one frame,
    // none of the replies read.
    let vendor = scene.url(&scene.vendor_token.clone());
    let (mut socket, _) = tokio_tungstenite::connect_async(&vendor)
        .await
        .expect("connect");
    let mut requests = Vec::new();
    for _ in 0..300 {
        requests.extend_from_slice(&[0, 0, 1, 0]);
        requests.push(3);
    }
    socket
        .send(WsMessage::Binary(requests.into()))
        .await
        .expect("send the requests");
    let scene_ref = &scene;
    eventually(
        "the server answered the requests by their queued replies",
        Duration::from_secs(30),
        || async { scene_ref.metric("larder_replies_coalesced_total").await >= 590.0 },
    )
    .await;
    let rss = scene.server.rss_bytes();
    eprintln!(
        "rss before {} MiB, after 600 unread requests {} MiB",
        baseline / (1024 * 1024),
        rss / (1024 * 1024)
    );
    assert!(
        rss < baseline + 64 * 1024 * 1024,
        "600 unread requests for a 1.5 MB list grew memory by {} MiB",
        rss.saturating_sub(baseline) / (1024 * 1024)
    );
    scene
        .assert_unharmed("requests for the whole list left unread")
        .await;
    drop(socket);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_frame_gets_its_close_frame() {
    let mut scene = Scene::start(&[]).await;
    let vendor = scene.url(&scene.vendor_token.clone());
    let (code, reason) = attack(&vendor, vec![vec![0u8; 32 * 1024 * 1024]]).await;
    assert_eq!(code, 4413, "a 32 MiB frame: {reason}");
    assert!(reason.contains("message larger than"), "{reason}");
    scene.assert_unharmed("a 32 MiB frame").await;
}

/// Reads what the server sends on a raw TCP connection until it closes it
/// (or `limit` passes): `None` when it was not closed in time.
async fn read_until_closed(tcp: &mut tokio::net::TcpStream, limit: Duration) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let mut received = Vec::new();
    let read = tokio::time::timeout(limit, async {
        let mut buf = [0u8; 1024];
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    read.ok()
        .map(|()| String::from_utf8_lossy(&received).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_and_connection_floods_are_cut_off() {
    use tokio::io::AsyncWriteExt;
    let mut scene = Scene::start(&[
        "--http-header-timeout-secs",
        "1",
        "--max-connections-per-address",
        "24",
    ])
    .await;
    let addr = scene.server.addr;

    // Headers that never finish, and a keep-alive connection left idle.
    let mut slow = tokio::net::TcpStream::connect(addr).await.expect("connect");
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: larder\r\n")
        .await
        .expect("write");
    let mut idle = tokio::net::TcpStream::connect(addr).await.expect("connect");
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: larder\r\n\r\n")
        .await
        .expect("write");
    assert!(
        read_until_closed(&mut slow, Duration::from_secs(5))
            .await
            .is_some(),
        "a request whose headers never finish is cut off"
    );
    let answered = read_until_closed(&mut idle, Duration::from_secs(5))
        .await
        .expect("an idle keep-alive connection is closed");
    assert!(answered.starts_with("HTTP/1.1 200"), "{answered}");
    scene.assert_unharmed("slow headers").await;

    // More connections from one address than it may hold: the rest get a
    // short 503 and are closed. (The four witnesses hold four already.)
    let mut flood = Vec::new();
    for _ in 0..40 {
        flood.push(tokio::net::TcpStream::connect(addr).await.expect("connect"));
    }
    let mut refused = 0;
    for tcp in &mut flood {
        if let Some(answer) = read_until_closed(tcp, Duration::from_millis(300)).await
            && answer.starts_with("HTTP/1.1 503")
        {
            assert!(answer.contains("retry-after: 1"), "{answer}");
            assert!(answer.contains("too_many_connections"), "{answer}");
            refused += 1;
        }
    }
    assert!(
        refused >= 20,
        "only {refused} of 40 refused past the cap of 24"
    );
    assert!(scene.metric("larder_connections_refused_total").await >= 20.0);
    drop(flood);
    scene.assert_unharmed("a connection flood").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_logins_is_queued_or_refused_without_spawning_threads() {
    let mut scene = Scene::start(&[]).await;
    let threads_before = threads(scene.server.pid());
    let app = &scene.app;
    let logins: Vec<_> = (0..64)
        .map(|_| {
            let request = app
                .http()
                .post(app.url("/v1/auth/login"))
                .json(&serde_json::json!({"email": "nobody@larder.test", "password": "guess"}));
            tokio::spawn(async move { request.send().await.expect("answered") })
        })
        .collect();
    let (mut unauthorized, mut busy) = (0, 0);
    for login in logins {
        let response = login.await.expect("task");
        match response.status().as_u16() {
            401 => unauthorized += 1,
            503 => {
                assert_eq!(
                    response
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok()),
                    Some("1")
                );
                let body: serde_json::Value = response.json().await.expect("JSON error");
                assert_eq!(body["error"]["code"], "busy");
                busy += 1;
            }
            other => panic!("a login in the burst answered {other}"),
        }
    }
    eprintln!("{unauthorized} answered, {busy} refused as busy");
    assert!(
        unauthorized > 0 && busy > 0,
        "some are served, the rest refused"
    );
    let threads_after = threads(scene.server.pid());
    assert!(
        threads_after <= threads_before + 8,
        "threads grew from {threads_before} to {threads_after}"
    );
    scene.assert_unharmed("a burst of logins").await;
}

/// Threads of a process (`Threads` of `/proc/<pid>/status`).
fn threads(pid: u32) -> usize {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("status")
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("Threads")
}

/// Maps nested inside maps, a few levels per update: yrs deletes nested
/// types recursively, so a deep enough chain would overflow the stack when
/// its outermost map is deleted. Past 32 levels the update is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn types_nested_past_the_limit_are_refused_before_they_are_applied() {
    use yrs::{Map, MapPrelim, MapRef, Transact};
    let mut scene = Scene::start(&[]).await;
    let member = scene.url(&scene.member_token.clone());
    let doc = yrs::Doc::with_client_id(4_242);
    let root = doc.get_or_insert_map("hostile");
    let mut current: Option<MapRef> = None;
    let mut frames = Vec::new();
    for _ in 0..20 {
        let mut txn = doc.transact_mut();
        for _ in 0..10 {
            let next = match &current {
                None => root.insert(&mut txn, "hostile", MapPrelim::default()),
                Some(map) => map.insert(&mut txn, "hostile", MapPrelim::default()),
            };
            current = Some(next);
        }
        frames.push(update_frame(txn.encode_update_v1()));
    }
    let (code, reason) = attack(&member, frames).await;
    assert_eq!(code, 4400, "deep nesting of types: {reason}");
    assert!(reason.contains("types nested deeper than 32"), "{reason}");
    assert!(scene.metric("larder_nesting_refused_total").await >= 1.0);
    scene.assert_unharmed("types nested past the limit").await;
}

/// A client that reads every reply at once can still ask for the whole list
/// again and again, each costing an encoding of it: five at once, then one
/// per 6 s; past that the socket closes with 4429.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asking_for_the_whole_list_again_and_again_is_limited() {
    let mut scene = Scene::start(&[]).await;
    let vendor = scene.url(&scene.vendor_token.clone());
    let (mut socket, _) = tokio_tungstenite::connect_async(&vendor)
        .await
        .expect("connect");
    let mut answered = 0;
    let closed = loop {
        socket
            .send(WsMessage::Binary(vec![0, 0, 1, 0].into()))
            .await
            .expect("send step 1");
        // Read until the sync step 2 answering it, or the close.
        let outcome = tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(message) = socket.next().await {
                match message.expect("frame") {
                    WsMessage::Binary(bytes) if bytes.starts_with(&[0, 1]) => return None,
                    WsMessage::Close(Some(frame)) => {
                        return Some((u16::from(frame.code), frame.reason.to_string()));
                    }
                    _ => {}
                }
            }
            Some((1006, String::new()))
        })
        .await
        .expect("an answer or a close within 10 s");
        match outcome {
            None => answered += 1,
            Some(closed) => break closed,
        }
        assert!(answered <= 10, "the requests are never limited");
    };
    assert_eq!(closed.0, 4429, "{closed:?}");
    assert!(closed.1.contains("whole list"), "{closed:?}");
    assert!((5..=7).contains(&answered), "{answered} answered first");
    scene
        .assert_unharmed("whole-list requests read at once")
        .await;
}

/// Each struct costs yrs memory however few bytes it took: a list may hold
/// at most `--max-doc-structs` of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_holds_no_more_structs_than_its_limit() {
    use yrs::{Map, Transact};
    let mut scene = Scene::start(&["--max-doc-structs", "200"]).await;
    let member = scene.url(&scene.member_token.clone());
    let doc = yrs::Doc::with_client_id(5_151);
    let root = doc.get_or_insert_map("hostile");
    let update = {
        let mut txn = doc.transact_mut();
        // Each key on its own origin-less struct: 300 structs, few bytes each.
        for i in 0..300 {
            root.insert(&mut txn, format!("hostile {i}"), i);
        }
        txn.encode_update_v1()
    };
    let (code, reason) = attack(&member, vec![update_frame(update)]).await;
    assert_eq!(code, 4414, "{reason}");
    assert!(reason.contains("more entries"), "{reason}");
    scene.assert_unharmed("too many structs").await;
}
