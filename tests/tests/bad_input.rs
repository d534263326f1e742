//! Bad input closes the offending socket with the documented code; other
//! clients keep syncing and nothing stored is corrupted.

use std::time::Duration;

use larder_client::SyncClient;
use larder_crdt::protocol;
use larder_tests::*;
use uuid::Uuid;

async fn closed_with(client: &SyncClient, what: &str) -> (u16, String) {
    let mut status = client.status();
    tokio::time::timeout(
        Duration::from_secs(10),
        status.wait_for(|s| s.closed_with.is_some()),
    )
    .await
    .unwrap_or_else(|_| {
        panic!(
            "{what}: the server closes the socket; status {:?}",
            client.status().borrow()
        )
    })
    .expect("status open")
    .closed_with
    .clone()
    .expect("a close frame")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_kind_of_bad_input_gets_its_close_code_and_harms_nobody_else() {
    let db = TestDatabase::create().await;
    let app = TestApp::spawn_with(db.url(), |c| {
        c.limits.max_message_bytes = 64 * 1024;
        c.limits.messages_per_second = 50;
        c.limits.message_burst = 200;
    })
    .await;
    let list = Uuid::new_v4();
    let good = app.connect(list).await;
    let witness = app.connect(list).await;
    add_item(&good, "before the attack");
    converge(&[&good, &witness]).await;

    let update = {
        let doc = yrs::Doc::new();
        let item = new_item("x");
        let list = larder_crdt::ListDoc::new(&doc);
        let mut txn = yrs::Transact::transact_mut(&doc);
        list.add_item(&mut txn, &item).expect("valid");
        txn.encode_update_v1()
    };
    let truncated = protocol::encode_update(update.clone());
    let truncated = truncated[..truncated.len() - 3].to_vec();
    // Framing is right, the update inside is not.
    let undecodable = protocol::encode_update(vec![0xff, 0x13, 0x37, 0x00, 0x42]);
    let random: Vec<u8> = (0..512u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let oversized = protocol::encode_update(vec![0u8; 100 * 1024]);

    let cases: Vec<(&str, Vec<Vec<u8>>, u16)> = vec![
        ("random bytes", vec![random], 4400),
        ("a truncated message", vec![truncated], 4400),
        ("an update that does not decode", vec![undecodable], 4400),
        ("an oversized message", vec![oversized], 4413),
        (
            "a flood of messages",
            (0..400).map(|_| vec![3u8]).collect(),
            4429,
        ),
    ];
    for (what, frames, code) in cases {
        let attacker = app.connect(list).await;
        for frame in frames {
            let _ = attacker.send_raw(frame);
        }
        let (got, reason) = closed_with(&attacker, what).await;
        assert_eq!(got, code, "{what}: closed with {got} ({reason})");
        assert!(!reason.is_empty(), "{what}: a reason is given");

        // The others keep syncing.
        add_item(&good, &format!("after {what}"));
        converge(&[&good, &witness]).await;
    }
    let merged = converge(&[&good, &witness]).await;
    assert_eq!(merged.items.len(), 6);
    wait_stored(db.url(), list, &merged).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_document_past_its_size_limit_refuses_the_update() {
    let db = TestDatabase::create().await;
    let app = TestApp::spawn_with(db.url(), |c| c.limits.max_doc_bytes = 4 * 1024).await;
    let list = Uuid::new_v4();
    let writer = app.connect(list).await;
    let witness = app.connect(list).await;
    add_item(&writer, "small");
    converge(&[&writer, &witness]).await;
    let before = witness.snapshot();
    // One item with a 6 KiB note does not fit.
    let item = larder_crdt::NewItem {
        note: Some("n".repeat(6 * 1024)),
        ..new_item("huge")
    };
    writer.edit(|txn| writer.list().add_item(txn, &item).expect("valid"));
    let (code, _) = closed_with(&writer, "an update past the document limit").await;
    assert_eq!(code, 4414);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        witness.snapshot(),
        before,
        "the refused update reached nobody"
    );
    assert_eq!(
        stored_snapshot(db.url(), list).await,
        before,
        "and was not stored"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_closed_with_try_again_later_not_buffered_forever() {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message as WsMessage;

    let db = TestDatabase::create().await;
    let app = TestApp::spawn_with(db.url(), |c| c.limits.outbound_queue = 4).await;
    let list = Uuid::new_v4();
    // A raw socket that reads nothing while the list changes a lot.
    let (mut stalled, _) = tokio_tungstenite::connect_async(app.sync_url(list).await)
        .await
        .expect("connect");
    let writer = app.connect(list).await;
    for i in 0..250 {
        let item = larder_crdt::NewItem {
            note: Some(format!("{i:04}").repeat(10 * 1024)),
            ..new_item("bulky")
        };
        writer.edit(|txn| writer.list().add_item(txn, &item).expect("valid"));
        if i % 25 == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // Socket buffers are full long before 10 MB; the room must have given up
    // on the stalled client instead of queueing without bound.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let code = loop {
        match tokio::time::timeout_at(deadline, stalled.next())
            .await
            .expect("the stalled socket ends")
        {
            Some(Ok(WsMessage::Close(frame))) => break frame.map(|f| u16::from(f.code)),
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => break None,
        }
    };
    assert_eq!(code, Some(1013));
    // The writer was not disturbed.
    let writer_closed = writer.status().borrow().closed_with.clone();
    assert_eq!(writer_closed, None);
    app.stop().await;
}
