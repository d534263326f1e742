//! A test client of the multiplexed sync socket (`GET /v1/sync`): one
//! WebSocket, a `yrs::Doc` per subscribed list. It answers each list's
//! sync step 1 with its step 2 and its own step 1, applies what arrives,
//! and records durable acknowledgements and `closed` frames per list.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use larder_crdt::mux::MuxFrame;
use larder_crdt::protocol;
use larder_crdt::{ListDoc, ListSnapshot};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use uuid::Uuid;
use yrs::sync::{Message, SyncMessage};
use yrs::updates::decoder::Decode;
use yrs::{Doc, ReadTxn, StateVector, Transact, TransactionMut, Update};

/// One list on the socket.
struct ListState {
    doc: Doc,
    list: ListDoc,
    synced: bool,
    closed: Option<(u16, String)>,
    durable: Option<StateVector>,
}

#[derive(Default)]
struct Shared {
    lists: HashMap<Uuid, ListState>,
    socket_closed: Option<(u16, String)>,
}

/// A multiplexed socket and its lists.
pub struct MuxClient {
    tx: mpsc::UnboundedSender<Vec<u8>>,
    shared: Arc<Mutex<Shared>>,
    task: JoinHandle<()>,
}

impl MuxClient {
    /// Opens `url` (`ws://host/v1/sync?token=...`).
    pub async fn connect(url: &str) -> Result<MuxClient, tokio_tungstenite::tungstenite::Error> {
        let (socket, _) = tokio_tungstenite::connect_async_with_config(url, None, true).await?;
        let (mut sink, mut stream) = socket.split();
        let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
        let shared: Arc<Mutex<Shared>> = Arc::default();
        let state = shared.clone();
        let replies = tx.clone();
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    frame = rx.recv() => match frame {
                        Some(frame) => if sink.send(WsMessage::Binary(frame.into())).await.is_err() { break },
                        None => break,
                    },
                    incoming = stream.next() => match incoming {
                        Some(Ok(WsMessage::Binary(bytes))) => handle(&state, &bytes, &replies),
                        Some(Ok(WsMessage::Close(frame))) => {
                            let closed = frame
                                .map(|f| (u16::from(f.code), f.reason.to_string()))
                                .unwrap_or((1005, String::new()));
                            state.lock().expect("lock").socket_closed = Some(closed);
                            break;
                        }
                        Some(Ok(_)) => {}
                        Some(Err(_)) | None => {
                            state.lock().expect("lock").socket_closed.get_or_insert((1006, String::new()));
                            break;
                        }
                    },
                }
            }
        });
        Ok(MuxClient { tx, shared, task })
    }

    /// Subscribes `list` (a fresh local document unless it had one).
    pub fn subscribe(&self, list: Uuid, ack: bool) {
        let mut shared = self.shared.lock().expect("lock");
        let state = shared.lists.entry(list).or_insert_with(|| {
            let doc = Doc::new();
            let list = ListDoc::new(&doc);
            ListState {
                doc,
                list,
                synced: false,
                closed: None,
                durable: None,
            }
        });
        state.closed = None;
        state.synced = false;
        let _ = self.tx.send(MuxFrame::Subscribe { list, ack }.encode());
    }

    pub fn unsubscribe(&self, list: Uuid) {
        let _ = self.tx.send(MuxFrame::Unsubscribe { list }.encode());
    }

    /// Edits `list` locally and sends the update.
    pub fn edit<R>(&self, list: Uuid, f: impl FnOnce(&ListDoc, &mut TransactionMut) -> R) -> R {
        let shared = self.shared.lock().expect("lock");
        let state = shared.lists.get(&list).expect("subscribed list");
        let before = state.doc.transact().state_vector();
        let result = {
            let mut txn = state.doc.transact_mut();
            f(&state.list, &mut txn)
        };
        let update = state.doc.transact().encode_state_as_update_v1(&before);
        let payload = protocol::encode_update(update);
        let _ = self.tx.send(
            MuxFrame::Data {
                list,
                payload: &payload,
            }
            .encode(),
        );
        result
    }

    /// Sends raw bytes as one frame (tests of bad input).
    pub fn send_raw(&self, frame: Vec<u8>) {
        let _ = self.tx.send(frame);
    }

    pub fn snapshot(&self, list: Uuid) -> ListSnapshot {
        let shared = self.shared.lock().expect("lock");
        let state = shared.lists.get(&list).expect("subscribed list");
        state.list.read(&state.doc.transact())
    }

    pub fn is_synced(&self, list: Uuid) -> bool {
        let shared = self.shared.lock().expect("lock");
        shared.lists.get(&list).is_some_and(|s| s.synced)
    }

    /// The `closed` frame the list got, if any.
    pub fn closed(&self, list: Uuid) -> Option<(u16, String)> {
        let shared = self.shared.lock().expect("lock");
        shared.lists.get(&list).and_then(|s| s.closed.clone())
    }

    /// The latest durable acknowledgement of the list.
    pub fn durable(&self, list: Uuid) -> Option<StateVector> {
        let shared = self.shared.lock().expect("lock");
        shared.lists.get(&list).and_then(|s| s.durable.clone())
    }

    /// The list's local state vector.
    pub fn state_vector(&self, list: Uuid) -> StateVector {
        let shared = self.shared.lock().expect("lock");
        let state = shared.lists.get(&list).expect("subscribed list");
        state.doc.transact().state_vector()
    }

    /// How the socket itself closed, if it did.
    pub fn socket_closed(&self) -> Option<(u16, String)> {
        self.shared.lock().expect("lock").socket_closed.clone()
    }
}

impl Drop for MuxClient {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn handle(shared: &Mutex<Shared>, bytes: &[u8], tx: &mpsc::UnboundedSender<Vec<u8>>) {
    let Ok(frame) = MuxFrame::decode(bytes) else {
        return;
    };
    let mut shared = shared.lock().expect("lock");
    let Some(state) = shared.lists.get_mut(&frame.list()) else {
        return;
    };
    match frame {
        MuxFrame::Closed { code, reason, .. } => state.closed = Some((code, reason.to_owned())),
        MuxFrame::Data { list, payload } => {
            let Ok(messages) = protocol::split_frame(payload) else {
                return;
            };
            let send = |payload: Vec<u8>| {
                let _ = tx.send(
                    MuxFrame::Data {
                        list,
                        payload: &payload,
                    }
                    .encode(),
                );
            };
            for message in messages {
                match message {
                    Message::Sync(SyncMessage::SyncStep1(sv)) => {
                        let update = state.doc.transact().encode_state_as_update_v1(&sv);
                        send(protocol::encode_sync_step2(update));
                        let ours = state.doc.transact().state_vector();
                        send(protocol::encode_sync_step1(&ours));
                    }
                    Message::Sync(SyncMessage::SyncStep2(update)) => {
                        apply(&state.doc, &update);
                        state.synced = true;
                    }
                    Message::Sync(SyncMessage::Update(update)) => apply(&state.doc, &update),
                    Message::Custom(protocol::MSG_DURABLE_ACK, body) => {
                        if let Some(sv) = protocol::decode_durable_ack(&body) {
                            state.durable = Some(sv);
                        }
                    }
                    _ => {}
                }
            }
        }
        MuxFrame::Subscribe { .. } | MuxFrame::Unsubscribe { .. } => {}
    }
}

fn apply(doc: &Doc, bytes: &[u8]) {
    if let Ok(update) = Update::decode_v1(bytes) {
        let _ = doc.transact_mut().apply_update(update);
    }
}
