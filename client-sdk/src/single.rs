//! [`SyncClient`]: a plain y-websocket client of one list over the
//! per-list endpoint (`GET /v1/sync/{list_id}`), with its document in
//! memory only. It speaks the protocol exactly as any Yjs client does,
//! which is what tests of the server and tools need; apps use
//! [`crate::Client`], which keeps edits on the device.
//!
//! While connected, local edits are sent as they happen, and after a
//! reconnect the handshake (both sides' sync step 1 and 2) exchanges
//! whatever either side missed.

use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use larder_crdt::protocol;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use yrs::sync::{Message, SyncMessage};
use yrs::updates::decoder::Decode;
use yrs::{Doc, ReadTxn, StateVector, Transact, TransactionMut, Update};

/// Errors of the client.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("websocket: {0}")]
    WebSocket(#[from] tokio_tungstenite::tungstenite::Error),
    #[error("not connected")]
    NotConnected,
}

/// What the connection last saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncStatus {
    pub is_connected: bool,
    /// The server's sync step 2 arrived (the y-websocket `synced` flag).
    pub is_synced: bool,
    /// The close code and reason the server sent, if any.
    pub closed_with: Option<(u16, String)>,
    /// Permission-denied reasons received.
    pub denied: Vec<String>,
    /// The latest durable acknowledgement (state vector as stored).
    pub durable: Option<StateVector>,
}

/// A client of one list.
pub struct SyncClient {
    doc: Doc,
    list: larder_crdt::ListDoc,
    status: watch::Sender<SyncStatus>,
    outbound: Arc<Mutex<Option<mpsc::UnboundedSender<Vec<u8>>>>>,
    task: Option<JoinHandle<()>>,
}

impl SyncClient {
    /// A client with a fresh document (random client id).
    pub fn new() -> SyncClient {
        SyncClient::with_doc(Doc::new())
    }

    /// A client editing `doc`.
    pub fn with_doc(doc: Doc) -> SyncClient {
        let outbound: Arc<Mutex<Option<mpsc::UnboundedSender<Vec<u8>>>>> = Arc::default();
        let sink = outbound.clone();
        doc.observe_update_v1(
            OBSERVER_KEY,
            move |txn: &TransactionMut, event: &yrs::UpdateEvent| {
                // Updates that came from the server are not echoed back.
                if txn
                    .origin()
                    .is_some_and(|o| o.as_ref() == REMOTE.as_bytes())
                {
                    return;
                }
                if let Some(tx) = sink.lock().expect("lock").as_ref() {
                    let _ = tx.send(protocol::encode_update(event.update.clone()));
                }
            },
        )
        .expect("no transaction is open on a document being set up");
        let (status, _) = watch::channel(SyncStatus::default());
        let list = larder_crdt::ListDoc::new(&doc);
        SyncClient {
            doc,
            list,
            status,
            outbound,
            task: None,
        }
    }

    pub fn doc(&self) -> &Doc {
        &self.doc
    }

    /// The typed list API, bound to this client's document. Use it inside
    /// [`SyncClient::edit`]: binding root maps needs a transaction of its
    /// own, so never call `ListDoc::new` while an edit is open.
    pub fn list(&self) -> &larder_crdt::ListDoc {
        &self.list
    }

    /// Edits the document; sent at once when connected, on reconnect otherwise.
    pub fn edit<R>(&self, f: impl FnOnce(&mut TransactionMut) -> R) -> R {
        let mut txn = self.doc.transact_mut();
        f(&mut txn)
    }

    /// Reads the list as rows.
    pub fn snapshot(&self) -> larder_crdt::ListSnapshot {
        self.list.read(&self.doc.transact())
    }

    /// Watches the connection status.
    pub fn status(&self) -> watch::Receiver<SyncStatus> {
        self.status.subscribe()
    }

    /// Connects to `url` (e.g. `ws://host/v1/sync/{list_id}?ack=1`) and
    /// starts syncing: sends sync step 1, answers the server's.
    pub async fn connect(&mut self, url: &str) -> Result<(), ClientError> {
        self.disconnect().await;
        let (socket, _) = tokio_tungstenite::connect_async_with_config(url, None, true).await?;
        let (mut sink, mut stream) = socket.split();
        let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
        let sv = self.doc.transact().state_vector();
        tx.send(protocol::encode_sync_step1(&sv))
            .expect("receiver alive");
        *self.outbound.lock().expect("lock") = Some(tx.clone());
        self.status.send_replace(SyncStatus {
            is_connected: true,
            ..SyncStatus::default()
        });
        let doc = self.doc.clone();
        let status = self.status.clone();
        let outbound = self.outbound.clone();
        self.task = Some(tokio::spawn(async move {
            loop {
                tokio::select! {
                    frame = rx.recv() => match frame {
                        Some(frame) => if sink.send(WsMessage::Binary(frame.into())).await.is_err() { break },
                        None => break,
                    },
                    incoming = stream.next() => match incoming {
                        Some(Ok(WsMessage::Binary(bytes))) => handle_frame(&doc, &bytes, &tx, &status),
                        Some(Ok(WsMessage::Close(frame))) => {
                            let closed = frame.map(|f| (u16::from(f.code), f.reason.to_string())).unwrap_or((u16::from(CloseCode::Status), String::new()));
                            status.send_modify(|s| s.closed_with = Some(closed));
                            break;
                        }
                        Some(Ok(_)) => {}
                        Some(Err(_)) | None => break,
                    },
                }
            }
            *outbound.lock().expect("lock") = None;
            status.send_modify(|s| s.is_connected = false);
        }));
        Ok(())
    }

    /// Sends raw bytes as one binary frame (for tests of bad input).
    pub fn send_raw(&self, frame: Vec<u8>) -> Result<(), ClientError> {
        let guard = self.outbound.lock().expect("lock");
        let tx = guard.as_ref().ok_or(ClientError::NotConnected)?;
        tx.send(frame).map_err(|_| ClientError::NotConnected)
    }

    /// Drops the connection; the document and its unsent edits stay.
    pub async fn disconnect(&mut self) {
        *self.outbound.lock().expect("lock") = None;
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
        self.status.send_modify(|s| s.is_connected = false);
    }
}

impl Default for SyncClient {
    fn default() -> Self {
        SyncClient::new()
    }
}

impl Drop for SyncClient {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        let _ = self.doc.unobserve_update_v1(OBSERVER_KEY);
    }
}

const REMOTE: &str = "larder-remote";
const OBSERVER_KEY: &str = "larder-client";

fn handle_frame(
    doc: &Doc,
    bytes: &[u8],
    tx: &mpsc::UnboundedSender<Vec<u8>>,
    status: &watch::Sender<SyncStatus>,
) {
    let Ok(messages) = protocol::split_frame(bytes) else {
        return;
    };
    for message in messages {
        match message {
            Message::Sync(SyncMessage::SyncStep1(sv)) => {
                let update = doc.transact().encode_state_as_update_v1(&sv);
                let _ = tx.send(protocol::encode_sync_step2(update));
            }
            Message::Sync(SyncMessage::SyncStep2(update)) => {
                apply_remote(doc, &update);
                status.send_modify(|s| s.is_synced = true);
            }
            Message::Sync(SyncMessage::Update(update)) => apply_remote(doc, &update),
            Message::Auth(Some(reason)) => status.send_modify(|s| s.denied.push(reason)),
            Message::Custom(protocol::MSG_DURABLE_ACK, body) => {
                if let Some(sv) = protocol::decode_durable_ack(&body) {
                    status.send_modify(|s| s.durable = Some(sv));
                }
            }
            _ => {}
        }
    }
}

fn apply_remote(doc: &Doc, bytes: &[u8]) {
    if let Ok(update) = Update::decode_v1(bytes) {
        let mut txn = doc.transact_mut_with(REMOTE);
        let _ = txn.apply_update(update);
    }
}
