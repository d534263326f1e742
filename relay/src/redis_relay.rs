//! The Redis Pub/Sub relay: one channel per list (`{prefix}{list_id}`).
//!
//! Two tasks per replica:
//! - the publisher drains a bounded queue and pipelines `PUBLISH` commands
//!   over a reconnecting connection; what it cannot send is dropped (the
//!   receivers catch up from the log);
//! - the subscriber owns a dedicated Pub/Sub connection: it keeps the
//!   counted set of subscribed lists, reconnects with backoff, subscribes
//!   the whole set again after a reconnect and then announces
//!   [`RelayEvent::Resync`], and pings to notice a connection that went
//!   silent.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, PubSubSink};
use tokio::sync::{broadcast, mpsc, oneshot};
use uuid::Uuid;

use crate::{Envelope, Relay, RelayError, RelayEvent};

/// How long connecting, subscribing or a ping may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the subscriber checks its connection is alive.
const PING_EVERY: Duration = Duration::from_secs(2);
/// Delays between reconnect attempts.
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// A session this long resets the reconnect backoff.
const STABLE_SESSION: Duration = Duration::from_secs(30);
/// Channels per `SUBSCRIBE` when subscribing again after a reconnect.
const SUBSCRIBE_CHUNK: usize = 500;
/// Most `PUBLISH` commands sent in one pipeline.
const PUBLISH_BATCH: usize = 256;

/// How to reach Redis.
#[derive(Debug, Clone)]
pub struct RedisRelayConfig {
    pub url: String,
    /// Channel names are `{channel_prefix}{list_id}`.
    pub channel_prefix: String,
    /// Envelopes waiting to be published; more are dropped.
    pub publish_queue: usize,
    /// Events buffered for a slow receiver before it is told to resync.
    pub event_buffer: usize,
}

impl RedisRelayConfig {
    pub fn new(url: impl Into<String>) -> Self {
        RedisRelayConfig {
            url: url.into(),
            channel_prefix: "larder:list:".into(),
            publish_queue: 8192,
            event_buffer: 8192,
        }
    }
}

enum Control {
    Subscribe(Uuid, oneshot::Sender<Result<(), RelayError>>),
    Unsubscribe(Uuid),
}

/// A relay over Redis Pub/Sub. Starts its tasks on creation; they stop when
/// the relay is dropped.
pub struct RedisRelay {
    publish_tx: mpsc::Sender<Envelope>,
    control_tx: mpsc::UnboundedSender<Control>,
    events: broadcast::Sender<RelayEvent>,
    connected: Arc<AtomicBool>,
}

impl RedisRelay {
    /// Starts the relay. Fails only on a malformed URL: an unreachable Redis
    /// is retried in the background while the replica serves on its own.
    pub fn start(config: RedisRelayConfig) -> Result<RedisRelay, RelayError> {
        let client = redis::Client::open(config.url.as_str())?;
        let manager = publish_connection(&client)?;
        let (publish_tx, publish_rx) = mpsc::channel(config.publish_queue);
        let (control_tx, control_rx) = mpsc::unbounded_channel();
        let (events, _) = broadcast::channel(config.event_buffer);
        let connected = Arc::new(AtomicBool::new(false));
        tokio::spawn(publisher(
            client.clone(),
            manager,
            publish_rx,
            config.channel_prefix.clone(),
        ));
        tokio::spawn(
            Subscriber {
                client,
                prefix: config.channel_prefix,
                counts: HashMap::new(),
                events: events.clone(),
                connected: connected.clone(),
            }
            .run(control_rx),
        );
        Ok(RedisRelay {
            publish_tx,
            control_tx,
            events,
            connected,
        })
    }
}

#[async_trait]
impl Relay for RedisRelay {
    fn publish(&self, envelope: Envelope) {
        if self.publish_tx.try_send(envelope).is_err() {
            metrics::counter!("larder_relay_publish_dropped_total").increment(1);
        }
    }

    async fn subscribe(&self, list_id: Uuid) -> Result<(), RelayError> {
        let (reply, answer) = oneshot::channel();
        self.control_tx
            .send(Control::Subscribe(list_id, reply))
            .map_err(|_| RelayError::Closed)?;
        answer.await.map_err(|_| RelayError::Closed)?
    }

    fn unsubscribe(&self, list_id: Uuid) {
        let _ = self.control_tx.send(Control::Unsubscribe(list_id));
    }

    fn events(&self) -> broadcast::Receiver<RelayEvent> {
        self.events.subscribe()
    }

    fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }
}

/// A reconnecting connection for `PUBLISH`, connected on first use.
fn publish_connection(client: &redis::Client) -> redis::RedisResult<ConnectionManager> {
    ConnectionManager::new_lazy_with_config(
        client.clone(),
        ConnectionManagerConfig::new()
            .set_connection_timeout(Some(COMMAND_TIMEOUT))
            .set_response_timeout(Some(COMMAND_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(BACKOFF_MAX),
    )
}

fn channel_name(prefix: &str, list_id: Uuid) -> String {
    format!("{prefix}{list_id}")
}

async fn publisher(
    client: redis::Client,
    mut connection: ConnectionManager,
    mut queue: mpsc::Receiver<Envelope>,
    prefix: String,
) {
    let mut batch = Vec::with_capacity(PUBLISH_BATCH);
    let mut is_failing = false;
    let mut failures = 0u32;
    while queue.recv_many(&mut batch, PUBLISH_BATCH).await > 0 {
        let mut pipe = redis::pipe();
        let mut count = 0u64;
        for envelope in batch.drain(..) {
            match envelope.encode() {
                Ok(bytes) => {
                    pipe.publish(channel_name(&prefix, envelope.list_id), bytes)
                        .ignore();
                    count += 1;
                }
                Err(e) => tracing::error!(error = %e, "cannot encode an envelope"),
            }
        }
        match pipe.query_async::<()>(&mut connection).await {
            Ok(()) => {
                metrics::counter!("larder_relay_published_total").increment(count);
                failures = 0;
                if is_failing {
                    tracing::info!("publishing to Redis again");
                    is_failing = false;
                }
            }
            Err(e) => {
                metrics::counter!("larder_relay_publish_dropped_total").increment(count);
                if !is_failing {
                    tracing::warn!(error = %e, "cannot publish to Redis; other replicas catch up from the log");
                    is_failing = true;
                }
                // A connection that went silent (timeouts, no reset) is not
                // replaced by the manager itself: start a fresh one.
                failures += 1;
                if failures >= 2
                    && let Ok(fresh) = publish_connection(&client)
                {
                    connection = fresh;
                    failures = 0;
                }
            }
        }
    }
}

struct Subscriber {
    client: redis::Client,
    prefix: String,
    /// Lists subscribed, with how many subscriptions each holds.
    counts: HashMap<Uuid, usize>,
    events: broadcast::Sender<RelayEvent>,
    connected: Arc<AtomicBool>,
}

/// Why a connected session ended.
enum Ended {
    /// The relay was dropped.
    Closed,
    /// The connection broke; reconnect.
    Lost(String),
}

impl Subscriber {
    async fn run(mut self, mut control: mpsc::UnboundedReceiver<Control>) {
        let mut backoff = BACKOFF_FIRST;
        let mut was_connected = false;
        loop {
            let client = self.client.clone();
            let connect =
                tokio::time::timeout(
                    COMMAND_TIMEOUT,
                    async move { client.get_async_pubsub().await },
                );
            tokio::pin!(connect);
            let connected = loop {
                tokio::select! {
                    result = &mut connect => break result,
                    command = control.recv() => match command {
                        Some(command) => self.offline(command),
                        None => return,
                    },
                }
            };
            let pubsub = match connected {
                Ok(Ok(pubsub)) => pubsub,
                Ok(Err(e)) => {
                    self.wait_to_reconnect(
                        &mut control,
                        &mut backoff,
                        &e.to_string(),
                        was_connected,
                    )
                    .await;
                    continue;
                }
                Err(_) => {
                    self.wait_to_reconnect(
                        &mut control,
                        &mut backoff,
                        "connect timed out",
                        was_connected,
                    )
                    .await;
                    continue;
                }
            };
            let (mut sink, stream) = pubsub.split();
            let channels: Vec<String> = self
                .counts
                .keys()
                .map(|id| channel_name(&self.prefix, *id))
                .collect();
            let mut resubscribed = Ok(());
            for chunk in channels.chunks(SUBSCRIBE_CHUNK) {
                resubscribed = with_timeout(sink.subscribe(chunk)).await;
                if resubscribed.is_err() {
                    break;
                }
            }
            if let Err(e) = resubscribed {
                self.wait_to_reconnect(&mut control, &mut backoff, &e.to_string(), was_connected)
                    .await;
                continue;
            }
            let session_started = tokio::time::Instant::now();
            was_connected = true;
            self.connected.store(true, Ordering::Relaxed);
            metrics::gauge!("larder_relay_connected").set(1.0);
            tracing::info!(lists = channels.len(), "relay connected to Redis");
            // Anything published while we were away is lost: catch up.
            let _ = self.events.send(RelayEvent::Resync);
            let ended = self.serve(&mut sink, stream, &mut control).await;
            self.connected.store(false, Ordering::Relaxed);
            metrics::gauge!("larder_relay_connected").set(0.0);
            match ended {
                Ended::Closed => return,
                Ended::Lost(why) => {
                    metrics::counter!("larder_relay_disconnects_total").increment(1);
                    tracing::warn!(reason = %why, "relay lost Redis; replicas catch up from the log meanwhile");
                    // A session that keeps failing soon after connecting
                    // must not turn into a reconnect (and resync) storm.
                    if session_started.elapsed() >= STABLE_SESSION {
                        backoff = BACKOFF_FIRST;
                    }
                    self.wait_to_reconnect(&mut control, &mut backoff, &why, true)
                        .await;
                }
            }
        }
    }

    /// Handles a subscription change while disconnected: it is counted and
    /// takes effect on reconnect.
    fn offline(&mut self, command: Control) {
        match command {
            Control::Subscribe(list_id, reply) => {
                *self.counts.entry(list_id).or_default() += 1;
                let _ = reply.send(Err(RelayError::NotConnected));
            }
            Control::Unsubscribe(list_id) => {
                self.release(list_id);
            }
        }
    }

    /// Drops one subscription; true when it was the last.
    fn release(&mut self, list_id: Uuid) -> bool {
        match self.counts.get_mut(&list_id) {
            Some(count) if *count > 1 => {
                *count -= 1;
                false
            }
            Some(_) => {
                self.counts.remove(&list_id);
                true
            }
            None => false,
        }
    }

    async fn wait_to_reconnect(
        &mut self,
        control: &mut mpsc::UnboundedReceiver<Control>,
        backoff: &mut Duration,
        why: &str,
        was_connected: bool,
    ) {
        if *backoff == BACKOFF_FIRST {
            if was_connected {
                tracing::warn!(reason = %why, "cannot reach Redis; retrying");
            } else {
                tracing::warn!(reason = %why, "cannot reach Redis yet; serving this replica's clients alone meanwhile");
            }
        }
        let until = tokio::time::Instant::now() + *backoff;
        *backoff = (*backoff * 2).min(BACKOFF_MAX);
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => return,
                command = control.recv() => match command {
                    Some(command) => self.offline(command),
                    // The relay is gone; the caller's next select sees it too.
                    None => return,
                },
            }
        }
    }

    async fn serve(
        &mut self,
        sink: &mut PubSubSink,
        mut stream: redis::aio::PubSubStream,
        control: &mut mpsc::UnboundedReceiver<Control>,
    ) -> Ended {
        let mut ping = tokio::time::interval(PING_EVERY);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ping.tick().await;
        loop {
            tokio::select! {
                message = stream.next() => match message {
                    Some(message) => self.forward(message.get_payload_bytes()),
                    None => return Ended::Lost("connection closed".into()),
                },
                command = control.recv() => match command {
                    None => return Ended::Closed,
                    Some(Control::Subscribe(list_id, reply)) => {
                        let count = self.counts.entry(list_id).or_default();
                        *count += 1;
                        if *count > 1 {
                            let _ = reply.send(Ok(()));
                            continue;
                        }
                        let result = with_timeout(sink.subscribe(channel_name(&self.prefix, list_id))).await;
                        let failed = result.as_ref().err().map(ToString::to_string);
                        let _ = reply.send(result);
                        if let Some(why) = failed {
                            return Ended::Lost(why);
                        }
                    }
                    Some(Control::Unsubscribe(list_id)) => {
                        if self.release(list_id)
                            && let Err(e) = with_timeout(sink.unsubscribe(channel_name(&self.prefix, list_id))).await
                        {
                            return Ended::Lost(e.to_string());
                        }
                    }
                },
                _ = ping.tick() => {
                    if let Err(e) = with_timeout(sink.ping::<redis::Value>()).await {
                        return Ended::Lost(format!("ping failed: {e}"));
                    }
                }
            }
        }
    }

    fn forward(&self, payload: &[u8]) {
        match Envelope::decode(payload) {
            Ok(envelope) => {
                metrics::counter!("larder_relay_received_total").increment(1);
                let _ = self.events.send(RelayEvent::Envelope(envelope));
            }
            Err(e) => {
                metrics::counter!("larder_relay_undecodable_total").increment(1);
                tracing::warn!(error = %e, "ignoring an envelope that does not decode");
            }
        }
    }
}

async fn with_timeout<T>(
    future: impl Future<Output = redis::RedisResult<T>>,
) -> Result<T, RelayError> {
    match tokio::time::timeout(COMMAND_TIMEOUT, future).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(RelayError::Redis(e)),
        Err(_) => Err(RelayError::Timeout),
    }
}
