//! One load-generating client: a real yrs document synced over a WebSocket
//! with the y-websocket protocol, sending item edits at a rate and timing
//! the edits of the list's other clients as they arrive.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use larder_crdt::protocol;
use larder_crdt::{ItemPatch, ItemStatus, ListDoc, NewItem};
use rand::Rng;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use yrs::sync::{Message, SyncMessage};
use yrs::updates::decoder::Decode;
use yrs::{ClientID, Doc, ReadTxn, Transact, Update};

/// The edits one client sent: its yrs client id and, per edit, the clock
/// the edit ends at and when it was sent. Receivers walk it with a cursor.
pub struct SenderLog {
    pub client_id: ClientID,
    edits: Mutex<Vec<(u32, Instant)>>,
}

impl SenderLog {
    pub fn new(client_id: ClientID) -> Arc<SenderLog> {
        Arc::new(SenderLog {
            client_id,
            edits: Mutex::new(Vec::new()),
        })
    }
}

/// Counters and the latency histogram shared by all clients.
pub struct Stats {
    pub sent: AtomicU64,
    pub expected: AtomicU64,
    pub delivered: AtomicU64,
    pub errors: AtomicU64,
    pub latency_us: Mutex<Histogram<u64>>,
}

impl Stats {
    pub fn new() -> Arc<Stats> {
        Arc::new(Stats {
            sent: AtomicU64::new(0),
            expected: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            latency_us: Mutex::new(
                Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds"),
            ),
        })
    }

    /// Takes the counters and histogram, leaving them empty (ramp steps).
    pub fn take(&self) -> (u64, u64, u64, Histogram<u64>) {
        let mut hist = self.latency_us.lock().expect("stats lock");
        let taken = hist.clone();
        hist.reset();
        (
            self.sent.swap(0, Ordering::Relaxed),
            self.expected.swap(0, Ordering::Relaxed),
            self.delivered.swap(0, Ordering::Relaxed),
            taken,
        )
    }
}

/// What a client needs to know of its list.
pub struct ListPeers {
    /// Every client of the list, this one included.
    pub senders: Vec<Arc<SenderLog>>,
}

/// A connected, synced client.
pub struct Client {
    index: usize,
    doc: Doc,
    list: ListDoc,
    peers: Arc<ListPeers>,
    cursors: Vec<usize>,
    own_items: Vec<String>,
    /// Items this client keeps at most; beyond it an add clears the oldest
    /// item instead, as a family clears what it bought (0: never).
    max_items: usize,
    stats: Arc<Stats>,
    socket: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    edits_made: u64,
    /// The first sync: from sending step 1 to the server's step 2 applied,
    /// and how much of that this client spent applying it.
    first_sync: SyncTiming,
}

/// How long the first sync took.
#[derive(Debug, Clone, Copy, Default)]
pub struct SyncTiming {
    pub total: Duration,
    pub applying: Duration,
}

fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

impl Client {
    /// Connects and completes the handshake (the server's sync step 2).
    pub async fn connect(
        url: &str,
        index: usize,
        doc: Doc,
        peers: Arc<ListPeers>,
        stats: Arc<Stats>,
    ) -> anyhow::Result<Client> {
        let (socket, _) = tokio_tungstenite::connect_async_with_config(url, None, true).await?;
        let list = ListDoc::new(&doc);
        let cursors = vec![0; peers.senders.len()];
        let mut client = Client {
            index,
            doc,
            list,
            peers,
            cursors,
            own_items: Vec::new(),
            max_items: 0,
            stats,
            socket,
            edits_made: 0,
            first_sync: SyncTiming::default(),
        };
        let started = Instant::now();
        client.exchange_state(Duration::from_secs(60)).await?;
        client.first_sync.total = started.elapsed();
        Ok(client)
    }

    /// The first sync, from this client's first message to its full state.
    pub fn first_sync(&self) -> SyncTiming {
        self.first_sync
    }

    /// Sends sync step 1 and handles frames until the server's step 2. The
    /// server answers after everything sent before it, so once it arrives
    /// the server has applied all of this client's edits.
    async fn exchange_state(&mut self, limit: Duration) -> anyhow::Result<()> {
        let sv = self.doc.transact().state_vector();
        self.socket
            .send(WsMessage::Binary(protocol::encode_sync_step1(&sv).into()))
            .await?;
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let frame = tokio::time::timeout_at(deadline, self.socket.next())
                .await
                .map_err(|_| anyhow::anyhow!("no sync step 2 within {limit:?}"))?
                .ok_or_else(|| anyhow::anyhow!("closed before sync step 2"))??;
            if self.on_frame(frame).await? {
                return Ok(());
            }
        }
    }

    /// Handles one frame; true when it held the server's sync step 2.
    async fn on_frame(&mut self, frame: WsMessage) -> anyhow::Result<bool> {
        let bytes = match frame {
            WsMessage::Binary(bytes) => bytes,
            WsMessage::Close(frame) => anyhow::bail!("closed by the server: {frame:?}"),
            _ => return Ok(false),
        };
        let mut synced = false;
        let mut applied = false;
        for message in protocol::split_frame(&bytes)? {
            match message {
                Message::Sync(SyncMessage::SyncStep1(sv)) => {
                    let update = self.doc.transact().encode_state_as_update_v1(&sv);
                    self.socket
                        .send(WsMessage::Binary(
                            protocol::encode_sync_step2(update).into(),
                        ))
                        .await?;
                }
                Message::Sync(SyncMessage::SyncStep2(update)) => {
                    let started = Instant::now();
                    self.apply(&update)?;
                    self.first_sync.applying += started.elapsed();
                    applied = true;
                    synced = true;
                }
                Message::Sync(SyncMessage::Update(update)) => {
                    self.apply(&update)?;
                    applied = true;
                }
                _ => {}
            }
        }
        if applied {
            self.count_deliveries();
        }
        Ok(synced)
    }

    fn apply(&self, update: &[u8]) -> anyhow::Result<()> {
        let update = Update::decode_v1(update)?;
        self.doc.transact_mut().apply_update(update)?;
        Ok(())
    }

    /// Every edit of another client that the document now holds is a
    /// delivery, timed from when it was sent.
    fn count_deliveries(&mut self) {
        let now = Instant::now();
        let sv = self.doc.transact().state_vector();
        // Latencies are gathered first and recorded after every sender's log
        // is released: holding a log and the histogram at once would invert
        // the lock order of another client doing the same.
        let mut latencies = Vec::new();
        for (n, sender) in self.peers.senders.iter().enumerate() {
            if n == self.index {
                continue;
            }
            let clock = sv.get(&sender.client_id);
            let edits = sender.edits.lock().expect("sender lock");
            let cursor = &mut self.cursors[n];
            while *cursor < edits.len() && edits[*cursor].0 <= clock {
                latencies.push(now.duration_since(edits[*cursor].1).as_micros() as u64);
                *cursor += 1;
            }
        }
        if latencies.is_empty() {
            return;
        }
        let mut hist = self.stats.latency_us.lock().expect("stats lock");
        for micros in &latencies {
            let _ = hist.record((*micros).max(1));
        }
        drop(hist);
        self.stats
            .delivered
            .fetch_add(latencies.len() as u64, Ordering::Relaxed);
    }

    /// One realistic edit: add an item (with its send time in the note),
    /// change a quantity, or toggle a status; with a `max_items` and a full
    /// list, clear the oldest item instead of adding one.
    fn edit(&mut self) -> Vec<u8> {
        let mut rng = rand::rng();
        let roll = rng.random_range(0..10);
        let mut txn = self.doc.transact_mut();
        let is_full = self.max_items > 0 && self.own_items.len() >= self.max_items;
        if is_full && roll < 4 {
            let id = self.own_items.remove(0);
            self.list.remove_item(&mut txn, &id);
        } else if self.own_items.is_empty() || roll < 4 {
            let id = uuid::Uuid::new_v4().to_string();
            let item = NewItem {
                id: id.clone(),
                name: format!("item {}", self.edits_made),
                quantity: Some("1".into()),
                category: Some("produce".into()),
                note: Some(format!("sent {}", unix_micros())),
                position: None,
                added_by: None,
                added_at_ms: (unix_micros() / 1000) as i64,
            };
            self.list.add_item(&mut txn, &item).expect("a valid item");
            self.own_items.push(id);
        } else {
            let id = &self.own_items[rng.random_range(0..self.own_items.len())];
            let patch = if roll < 8 {
                ItemPatch {
                    quantity: Some(Some(format!("{} kg", rng.random_range(1..10)))),
                    ..ItemPatch::default()
                }
            } else {
                let status = if rng.random_bool(0.5) {
                    ItemStatus::InCart
                } else {
                    ItemStatus::Needed
                };
                ItemPatch {
                    status: Some(status),
                    ..ItemPatch::default()
                }
            };
            self.list
                .update_item(&mut txn, id, &patch)
                .expect("own item exists");
        }
        self.edits_made += 1;
        txn.encode_update_v1()
    }

    /// Runs until `stop`: edits at the rate `rate` says (edits per second of
    /// this client; 0 pauses), answers and counts what arrives.
    pub async fn run(
        mut self,
        mut rate: watch::Receiver<f64>,
        mut stop: watch::Receiver<bool>,
    ) -> anyhow::Result<()> {
        let peers = self.peers.clone();
        let own = peers.senders[self.index].clone();
        let others = (peers.senders.len() - 1) as u64;
        let mut next_edit: Option<tokio::time::Instant> = None;
        loop {
            let per_second = *rate.borrow();
            if per_second > 0.0 && next_edit.is_none() {
                // A random phase so clients do not send in lockstep.
                let first = rand::rng().random_range(0.0..1.0) / per_second;
                next_edit = Some(tokio::time::Instant::now() + Duration::from_secs_f64(first));
            } else if per_second <= 0.0 {
                next_edit = None;
            }
            tokio::select! {
                _ = stop.changed() => return Ok(()),
                _ = rate.changed() => {}
                frame = self.socket.next() => match frame {
                    Some(Ok(frame)) => { self.on_frame(frame).await?; }
                    Some(Err(e)) => return Err(e.into()),
                    None => anyhow::bail!("socket closed"),
                },
                _ = sleep_opt(next_edit) => {
                    let update = self.edit();
                    let clock = self.doc.transact().state_vector().get(&own.client_id);
                    own.edits.lock().expect("sender lock").push((clock, Instant::now()));
                    self.stats.sent.fetch_add(1, Ordering::Relaxed);
                    self.stats.expected.fetch_add(others, Ordering::Relaxed);
                    self.socket
                        .send(WsMessage::Binary(protocol::encode_update(update).into()))
                        .await?;
                    let step = Duration::from_secs_f64(1.0 / per_second);
                    let due = next_edit.expect("scheduled") + step;
                    // Behind by more than a second: do not burst to catch up.
                    let now = tokio::time::Instant::now();
                    next_edit = Some(if due + Duration::from_secs(1) < now { now } else { due });
                }
            }
        }
    }

    /// Makes `count` edits, each sent as its own message as fast as the
    /// socket takes them (building a long history), waits until the server
    /// applied them all, then closes; returns the items the list holds. The
    /// server stores them all at the latest when it stops gracefully.
    pub async fn write_history(mut self, count: usize, max_items: usize) -> anyhow::Result<usize> {
        self.max_items = max_items;
        for _ in 0..count {
            let update = self.edit();
            self.socket
                .feed(WsMessage::Binary(protocol::encode_update(update).into()))
                .await?;
        }
        // Once the server answers, it holds the whole history.
        self.exchange_state(Duration::from_secs(120)).await?;
        let items = self.list.read(&self.doc.transact()).items.len();
        self.socket.close(None).await?;
        Ok(items)
    }

    /// Items the client's document holds.
    pub fn item_count(&self) -> usize {
        self.list.read(&self.doc.transact()).items.len()
    }

    /// Keeps the connection open (answering keepalives) until `stop`.
    pub async fn hold(mut self, mut stop: watch::Receiver<bool>) -> anyhow::Result<()> {
        loop {
            tokio::select! {
                _ = stop.changed() => return Ok(()),
                frame = self.socket.next() => match frame {
                    Some(Ok(frame)) => { self.on_frame(frame).await?; }
                    Some(Err(e)) => return Err(e.into()),
                    None => anyhow::bail!("socket closed"),
                },
            }
        }
    }
}

async fn sleep_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
