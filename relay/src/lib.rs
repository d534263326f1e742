//! Larder's relay: moves committed update batches between server replicas.
//!
//! A replica publishes an [`Envelope`] for every batch it commits; every
//! other replica with the list open applies it. The relay may drop messages
//! (Pub/Sub is fire-and-forget): receivers detect a jump in sequence numbers
//! and read what they missed from the update log, so the relay only ever
//! delays an edit.
//!
//! - [`Relay`]: the trait the server talks to.
//! - [`InProcessRelay`]: one node, no Redis; replicas in one process share it.
//! - [`Envelope`]: the message, encoded with `postcard`.
#![forbid(unsafe_code)]

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use uuid::Uuid;

/// Errors of a relay.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("envelope does not decode: {0}")]
    Decode(#[from] postcard::Error),
    #[error("relay is closed")]
    Closed,
}

/// What travels between replicas.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Replica that committed the batch.
    pub origin: Uuid,
    pub list_id: Uuid,
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
    },
    /// An awareness update (unsequenced).
    Awareness { update: Vec<u8> },
}

impl Envelope {
    pub fn encode(&self) -> Result<Vec<u8>, RelayError> {
        Ok(postcard::to_allocvec(self)?)
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, RelayError> {
        Ok(postcard::from_bytes(bytes)?)
    }
}

/// Publishes envelopes to the other replicas and receives theirs.
#[async_trait]
pub trait Relay: Send + Sync + 'static {
    /// Sends an envelope to every replica (best effort).
    async fn publish(&self, envelope: Envelope) -> Result<(), RelayError>;

    /// A receiver of every envelope published from now on, including this
    /// replica's own (receivers skip those by `origin`).
    fn subscribe(&self) -> broadcast::Receiver<Envelope>;
}

/// The relay of a single node: a broadcast channel in memory.
#[derive(Debug, Clone)]
pub struct InProcessRelay {
    sender: broadcast::Sender<Envelope>,
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
        InProcessRelay::new(1024)
    }
}

#[async_trait]
impl Relay for InProcessRelay {
    async fn publish(&self, envelope: Envelope) -> Result<(), RelayError> {
        // No receiver is fine: nobody else has the list open.
        let _ = self.sender.send(envelope);
        Ok(())
    }

    fn subscribe(&self) -> broadcast::Receiver<Envelope> {
        self.sender.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_round_trip() {
        let envelope = Envelope {
            origin: Uuid::new_v4(),
            list_id: Uuid::new_v4(),
            payload: Payload::Update {
                first_seq: 3,
                last_seq: 5,
                update: vec![1, 2, 3],
            },
        };
        let bytes = envelope.encode().expect("encodes");
        assert_eq!(Envelope::decode(&bytes).expect("decodes"), envelope);
        assert!(Envelope::decode(&[0xff, 0xff]).is_err());
    }

    #[tokio::test]
    async fn in_process_relay_delivers_to_subscribers() {
        let relay = InProcessRelay::new(8);
        let mut rx = relay.subscribe();
        let envelope = Envelope {
            origin: Uuid::new_v4(),
            list_id: Uuid::new_v4(),
            payload: Payload::Awareness { update: vec![0] },
        };
        relay.publish(envelope.clone()).await.expect("publishes");
        assert_eq!(rx.recv().await.expect("receives"), envelope);
    }
}
