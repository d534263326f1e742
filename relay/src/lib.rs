//! Larder's relay: moves committed update batches between server replicas.
//!
//! A replica publishes an [`Envelope`] for every update it applies and again
//! for every batch it commits; every other replica with the list open
//! applies it. The relay may drop messages
//! (Pub/Sub is fire-and-forget): receivers detect a jump in sequence numbers
//! and read what they missed from the update log, so the relay only ever
//! delays an edit. When the relay itself knows it may have lost messages (a
//! reconnect, a receiver that fell behind) it says so with
//! [`RelayEvent::Resync`].
//!
//! - [`Relay`]: the trait the server talks to.
//! - [`SoloRelay`]: one node alone; there is nobody to relay to.
//! - [`InProcessRelay`]: replicas in one process share it (tests).
//! - [`RedisRelay`]: Redis Pub/Sub, one channel per list, with reconnect.
//! - [`Envelope`]: the message, encoded with `postcard`.
#![forbid(unsafe_code)]

mod redis_relay;

use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use uuid::Uuid;

pub use redis_relay::{RedisRelay, RedisRelayConfig};

/// Errors of a relay.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("envelope does not decode: {0}")]
    Decode(#[from] postcard::Error),
    #[error("relay is not connected")]
    NotConnected,
    #[error("relay error: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("relay did not answer in time")]
    Timeout,
    #[error("relay is closed")]
    Closed,
}

/// What travels between replicas.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Replica that committed the batch.
    pub origin: Uuid,
    pub list_id: Uuid,
    /// When the origin published it (microseconds since the Unix epoch), for
    /// the relay lag metric.
    pub sent_at_micros: u64,
    pub payload: Payload,
}

/// The body of an [`Envelope`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Payload {
    /// A committed batch: sequence numbers `first_seq..=last_seq` merged into one update.
    Update {
        first_seq: u64,
        last_seq: u64,
        update: Vec<u8>,
        /// Every `Live` update of this list the origin published with an id
        /// up to this one is stored now (this batch or an earlier one); 0
        /// when the batch holds none.
        live_through: u64,
    },
    /// An awareness update (unsequenced).
    Awareness { update: Vec<u8> },
    /// An update as the origin applied it, before it is stored: other
    /// replicas pass it on at once. It carries no sequence number; ids grow
    /// with each one a replica publishes. A receiver keeps it until an
    /// `Update` with `live_through >= id` says it is stored, and stores it
    /// itself if that never comes (the origin died): applying or storing an
    /// update twice is harmless.
    Live { id: u64, update: Vec<u8> },
    /// Access to the list changed: every replica closes the sockets of
    /// `user` on it (they must authorize again), or of everyone when `user`
    /// is `None` (the list was deleted).
    Revoke { user: Option<Uuid> },
    /// A read-only link was revoked: every replica closes its sockets.
    RevokeLink { link: Uuid },
}

impl Envelope {
    /// An envelope stamped with the current time.
    pub fn new(origin: Uuid, list_id: Uuid, payload: Payload) -> Envelope {
        Envelope {
            origin,
            list_id,
            sent_at_micros: now_micros(),
            payload,
        }
    }

    pub fn encode(&self) -> Result<Vec<u8>, RelayError> {
        Ok(postcard::to_allocvec(self)?)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, RelayError> {
        Ok(postcard::from_bytes(bytes)?)
    }

    /// Seconds since the envelope was sent (0 when clocks disagree).
    pub fn age_seconds(&self) -> f64 {
        seconds_since(self.sent_at_micros)
    }
}

/// Seconds since `micros` (microseconds since the Unix epoch), 0 when that
/// lies in the future (clocks of replicas disagree).
pub fn seconds_since(micros: u64) -> f64 {
    now_micros().saturating_sub(micros) as f64 / 1e6
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// What a replica receives from the relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayEvent {
    /// An envelope of a list this replica subscribed to (possibly its own).
    Envelope(Envelope),
    /// Envelopes may have been lost (the relay reconnected, or this receiver
    /// fell behind): every open list must catch up from the update log.
    Resync,
}

/// Publishes envelopes to the other replicas and receives theirs.
#[async_trait]
pub trait Relay: Send + Sync + 'static {
    /// Queues an envelope for every replica that has its list open. Never
    /// waits: when the relay is down or backed up the envelope is dropped
    /// (receivers catch up from the log).
    fn publish(&self, envelope: Envelope);

    /// Starts receiving the list's envelopes; returns once the relay
    /// confirmed. Subscriptions are counted: each call needs one
    /// [`Relay::unsubscribe`]. An error means the relay is unreachable now;
    /// the subscription still stands and takes effect when it returns
    /// (followed by a [`RelayEvent::Resync`]).
    async fn subscribe(&self, list_id: Uuid) -> Result<(), RelayError>;

    /// Drops one subscription of the list.
    fn unsubscribe(&self, list_id: Uuid);

    /// Events for this replica from now on.
    fn events(&self) -> broadcast::Receiver<RelayEvent>;

    /// Whether the relay is connected now (always true in process).
    fn is_connected(&self) -> bool;
}

/// The relay of a node that runs alone: publishing goes nowhere, and no
/// event ever arrives. It spares a lone node the work of relaying.
#[derive(Debug)]
pub struct SoloRelay {
    /// Kept so receivers wait forever instead of seeing a closed channel.
    sender: broadcast::Sender<RelayEvent>,
}

impl Default for SoloRelay {
    fn default() -> Self {
        SoloRelay {
            sender: broadcast::channel(1).0,
        }
    }
}

#[async_trait]
impl Relay for SoloRelay {
    fn publish(&self, _envelope: Envelope) {}

    async fn subscribe(&self, _list_id: Uuid) -> Result<(), RelayError> {
        Ok(())
    }

    fn unsubscribe(&self, _list_id: Uuid) {}

    fn events(&self) -> broadcast::Receiver<RelayEvent> {
        self.sender.subscribe()
    }

    fn is_connected(&self) -> bool {
        true
    }
}

/// A relay in memory: a broadcast channel. Several
/// replicas in one process may share it; each receives every envelope.
#[derive(Debug, Clone)]
pub struct InProcessRelay {
    sender: broadcast::Sender<RelayEvent>,
}

impl InProcessRelay {
    /// `capacity` envelopes are buffered per receiver; a receiver that falls
    /// further behind sees a lag and must catch up from the log.
    pub fn new(capacity: usize) -> Self {
        let (sender, _) = broadcast::channel(capacity);
        InProcessRelay { sender }
    }
}

impl Default for InProcessRelay {
    fn default() -> Self {
        InProcessRelay::new(4096)
    }
}

#[async_trait]
impl Relay for InProcessRelay {
    fn publish(&self, envelope: Envelope) {
        // No receiver is fine: nobody else has the list open.
        let _ = self.sender.send(RelayEvent::Envelope(envelope));
    }

    async fn subscribe(&self, _list_id: Uuid) -> Result<(), RelayError> {
        Ok(())
    }

    fn unsubscribe(&self, _list_id: Uuid) {}

    fn events(&self) -> broadcast::Receiver<RelayEvent> {
        self.sender.subscribe()
    }

    fn is_connected(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_round_trip() {
        let envelope = Envelope::new(
            Uuid::new_v4(),
            Uuid::new_v4(),
            Payload::Update {
                first_seq: 3,
                last_seq: 5,
                update: vec![1, 2, 3],
                live_through: 12,
            },
        );
        let bytes = envelope.encode().expect("encodes");
        assert_eq!(Envelope::decode(&bytes).expect("decodes"), envelope);
        assert!(Envelope::decode(&[0xff, 0xff]).is_err());
        assert!(envelope.age_seconds() < 60.0);
        let live = Envelope::new(
            Uuid::new_v4(),
            Uuid::new_v4(),
            Payload::Live {
                id: 1 << 52,
                update: vec![4, 5],
            },
        );
        let bytes = live.encode().expect("encodes");
        assert_eq!(Envelope::decode(&bytes).expect("decodes"), live);
    }

    #[tokio::test]
    async fn a_solo_relay_delivers_nothing() {
        let relay = SoloRelay::default();
        let mut rx = relay.events();
        let envelope = Envelope::new(
            Uuid::new_v4(),
            Uuid::new_v4(),
            Payload::Awareness { update: vec![0] },
        );
        relay.subscribe(envelope.list_id).await.expect("subscribes");
        relay.publish(envelope);
        assert!(matches!(
            rx.try_recv(),
            Err(broadcast::error::TryRecvError::Empty)
        ));
        relay.unsubscribe(Uuid::nil());
        assert!(relay.is_connected());
    }

    #[tokio::test]
    async fn in_process_relay_delivers_to_subscribers() {
        let relay = InProcessRelay::new(8);
        let mut rx = relay.events();
        let envelope = Envelope::new(
            Uuid::new_v4(),
            Uuid::new_v4(),
            Payload::Awareness { update: vec![0] },
        );
        relay.subscribe(envelope.list_id).await.expect("subscribes");
        relay.publish(envelope.clone());
        assert_eq!(
            rx.recv().await.expect("receives"),
            RelayEvent::Envelope(envelope)
        );
    }
}
