//! Presence (awareness): relayed to the others, and removed for them as soon
//! as the announcing socket closes.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use larder_crdt::protocol;
use larder_tests::*;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use uuid::Uuid;
use yrs::ClientID;
use yrs::sync::Message;
use yrs::sync::awareness::{AwarenessUpdate, AwarenessUpdateEntry};

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Reads until an awareness message mentions `client`; returns its JSON state.
async fn awareness_of(socket: &mut Socket, client: ClientID) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let frame = tokio::time::timeout_at(deadline, socket.next())
            .await
            .expect("awareness within 10 s")
            .expect("socket open")
            .expect("frame");
        let WsMessage::Binary(bytes) = frame else {
            continue;
        };
        for message in protocol::split_frame(&bytes).expect("well-formed") {
            if let Message::Awareness(update) = message
                && let Some(entry) = update.clients.get(&client)
            {
                return entry.json.to_string();
            }
        }
    }
}

/// Reads presence of `client` until its state is `expected`; panics with
/// `what` after `limit`.
async fn awareness_becomes(
    socket: &mut Socket,
    client: ClientID,
    expected: &str,
    limit: Duration,
    what: &str,
) {
    tokio::time::timeout(limit, async {
        while awareness_of(socket, client).await != expected {}
    })
    .await
    .unwrap_or_else(|_| panic!("{what}: not {expected} within {limit:?}"));
}

/// A frame announcing `client`'s presence as `json` (clock 1).
fn announce(client: ClientID, json: &str) -> Vec<u8> {
    let mut clients = HashMap::new();
    clients.insert(
        client,
        AwarenessUpdateEntry {
            clock: 1,
            json: json.into(),
        },
    );
    protocol::encode_awareness(&AwarenessUpdate { clients })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_reaches_others_and_vanishes_when_the_socket_closes() {
    let db = TestDatabase::create().await;
    let app = TestApp::spawn(db.url()).await;
    let list = Uuid::new_v4();
    let (mut ann, _) = tokio_tungstenite::connect_async(app.sync_url(list).await)
        .await
        .expect("connect");
    let (mut bob, _) = tokio_tungstenite::connect_async(app.sync_url(list).await)
        .await
        .expect("connect");

    let ann_id = ClientID::new(4242);
    let frame = announce(ann_id, r#"{"user":{"name":"ann"}}"#);
    ann.send(WsMessage::Binary(frame.into()))
        .await
        .expect("send");

    assert_eq!(
        awareness_of(&mut bob, ann_id).await,
        r#"{"user":{"name":"ann"}}"#
    );
    ann.close(None).await.expect("close");
    // An earlier copy of ann's state may still be on its way (the room
    // sends known presence on join and coalesces broadcasts); what counts is
    // that the removal follows well before the 30 s a client would wait.
    awareness_becomes(
        &mut bob,
        ann_id,
        "null",
        Duration::from_secs(5),
        "ann is gone for bob at once",
    )
    .await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_crosses_replicas_and_vanishes_there_too() {
    let redis = redis_url().await;
    let db = TestDatabase::create().await;
    let first = TestApp::spawn_replica(db.url(), &redis, |_| {}).await;
    let second = TestApp::spawn_replica(db.url(), &redis, |_| {}).await;
    let list = Uuid::new_v4();
    // Both replicas hold the list (and its channel) before ann speaks.
    let (mut bob, _) = tokio_tungstenite::connect_async(second.sync_url(list).await)
        .await
        .expect("connect");
    let (mut ann, _) = tokio_tungstenite::connect_async(first.sync_url(list).await)
        .await
        .expect("connect");
    // Bob has joined once the server's sync step 1 arrives.
    let mut first_frame = bob.next().await.expect("frame").expect("frame");
    while !matches!(first_frame, WsMessage::Binary(_)) {
        first_frame = bob.next().await.expect("frame").expect("frame");
    }

    let ann_id = ClientID::new(4343);
    let frame = announce(ann_id, r#"{"user":{"name":"ann"}}"#);
    // Repeated until relayed: the first replica may still be subscribing.
    let mut got = None;
    for _ in 0..20 {
        ann.send(WsMessage::Binary(frame.clone().into()))
            .await
            .expect("send");
        if let Ok(json) =
            tokio::time::timeout(Duration::from_millis(500), awareness_of(&mut bob, ann_id)).await
        {
            got = Some(json);
            break;
        }
    }
    assert_eq!(
        got.as_deref(),
        Some(r#"{"user":{"name":"ann"}}"#),
        "bob on the other replica sees ann"
    );
    ann.close(None).await.expect("close");
    // An earlier copy of ann's state may still be on its way (the room
    // sends known presence on join and coalesces broadcasts); what counts is
    // that the removal follows well before the 30 s a client would wait.
    awareness_becomes(
        &mut bob,
        ann_id,
        "null",
        Duration::from_secs(5),
        "ann is gone for bob on the other replica too",
    )
    .await;
    first.stop().await;
    second.stop().await;
}

/// A client whose TCP connection is cut without a WebSocket close frame
/// (a phone losing its network, here a proxy dropping the connection) is
/// removed for the others on the same replica within 5 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_of_a_connection_cut_without_a_close_frame_vanishes_on_the_same_replica() {
    let db = TestDatabase::create().await;
    let app = TestApp::spawn(db.url()).await;
    let list = Uuid::new_v4();
    let proxy = larder_tests::proxy::TcpProxy::start(app.addr).await;
    let (mut ann, _) =
        tokio_tungstenite::connect_async(proxy.rewrite_url(&app.sync_url(list).await))
            .await
            .expect("connect through the proxy");
    let (mut bob, _) = tokio_tungstenite::connect_async(app.sync_url(list).await)
        .await
        .expect("connect");
    let ann_id = ClientID::new(5151);
    ann.send(WsMessage::Binary(
        announce(ann_id, r#"{"user":{"name":"ann"}}"#).into(),
    ))
    .await
    .expect("send");
    assert_eq!(
        awareness_of(&mut bob, ann_id).await,
        r#"{"user":{"name":"ann"}}"#
    );
    proxy.cut();
    awareness_becomes(
        &mut bob,
        ann_id,
        "null",
        Duration::from_secs(5),
        "ann's cut connection is gone for bob",
    )
    .await;
    drop(ann);
    app.stop().await;
}
