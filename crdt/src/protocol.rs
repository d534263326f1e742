//! y-websocket messages, on top of `yrs::sync` (which owns the codec).
//!
//! [`split_frame`] turns one WebSocket frame into messages (a frame may hold
//! several back to back, PROTOCOL.md) and refuses truncated or trailing
//! bytes instead of silently dropping them. The `encode_*` functions build
//! outgoing frames.

use yrs::StateVector;
use yrs::encoding::read::{Cursor, Read};
use yrs::sync::awareness::AwarenessUpdate;
use yrs::sync::{Message, SyncMessage};
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;

pub use yrs::sync::Message as SyncProtocolMessage;

/// Message tag of Larder's durable acknowledgement. Yjs uses 0–3 and other
/// servers' extensions stay below 10; 100 is far from both. Body:
/// `varByteArray(state vector v1)` of the list as stored.
pub const MSG_DURABLE_ACK: u8 = 100;

const MSG_SYNC: u8 = 0;
const MSG_AWARENESS: u8 = 1;
const MSG_AUTH: u8 = 2;
const MSG_QUERY_AWARENESS: u8 = 3;

/// Why a frame was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtocolError {
    #[error("empty frame")]
    Empty,
    #[error("malformed message at byte {offset}: {reason}")]
    Malformed { offset: usize, reason: String },
}

/// Decodes every message of one frame. Unknown message types are returned as
/// [`Message::Custom`] for the caller to ignore.
pub fn split_frame(frame: &[u8]) -> Result<Vec<Message>, ProtocolError> {
    if frame.is_empty() {
        return Err(ProtocolError::Empty);
    }
    let mut cursor = Cursor::new(frame);
    let mut messages = Vec::with_capacity(1);
    while cursor.has_content() {
        let start = cursor.next;
        let malformed = |e: yrs::encoding::read::Error| ProtocolError::Malformed {
            offset: start,
            reason: e.to_string(),
        };
        skip_message(&mut cursor).map_err(malformed)?;
        let message = Message::decode_v1(&frame[start..cursor.next]).map_err(malformed)?;
        messages.push(message);
    }
    Ok(messages)
}

/// Moves the cursor past one message without interpreting its body.
fn skip_message(cursor: &mut Cursor<'_>) -> Result<(), yrs::encoding::read::Error> {
    let tag: u8 = cursor.read_var()?;
    match tag {
        MSG_SYNC => {
            let _kind: u8 = cursor.read_var()?;
            cursor.read_buf()?;
        }
        MSG_AUTH => {
            let kind: u8 = cursor.read_var()?;
            if kind == yrs::sync::protocol::PERMISSION_DENIED {
                cursor.read_buf()?;
            }
        }
        MSG_QUERY_AWARENESS => {}
        // Awareness and every custom message carry one varByteArray.
        _ => {
            cursor.read_buf()?;
        }
    }
    Ok(())
}

/// `00 00`: sync step 1 with our state vector.
pub fn encode_sync_step1(sv: &StateVector) -> Vec<u8> {
    Message::Sync(SyncMessage::SyncStep1(sv.clone())).encode_v1()
}

/// `00 01`: sync step 2 with what the peer lacks.
pub fn encode_sync_step2(update: Vec<u8>) -> Vec<u8> {
    Message::Sync(SyncMessage::SyncStep2(update)).encode_v1()
}

/// `00 02`: an incremental update.
pub fn encode_update(update: Vec<u8>) -> Vec<u8> {
    Message::Sync(SyncMessage::Update(update)).encode_v1()
}

/// `01`: an awareness update.
pub fn encode_awareness(update: &AwarenessUpdate) -> Vec<u8> {
    Message::Awareness(update.clone()).encode_v1()
}

/// `01 01 00`: an awareness update about nobody. Receivers change nothing,
/// but it counts as traffic for the y-websocket client's 30 s liveness check
/// (browsers do not surface WebSocket pings to scripts).
pub fn encode_keepalive() -> Vec<u8> {
    vec![MSG_AWARENESS, 1, 0]
}

/// `02 00`: permission denied, with a reason.
pub fn encode_permission_denied(reason: &str) -> Vec<u8> {
    Message::Auth(Some(reason.to_owned())).encode_v1()
}

/// Larder's durable acknowledgement carrying the stored state vector.
pub fn encode_durable_ack(sv: &StateVector) -> Vec<u8> {
    Message::Custom(MSG_DURABLE_ACK, sv.encode_v1()).encode_v1()
}

/// Reads the state vector out of a durable acknowledgement body.
pub fn decode_durable_ack(body: &[u8]) -> Option<StateVector> {
    StateVector::decode_v1(body).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use yrs::sync::awareness::AwarenessUpdateEntry;
    use yrs::{ClientID, Doc, Map, ReadTxn, Transact};

    fn sample_update() -> (Doc, Vec<u8>) {
        let doc = Doc::with_client_id(7);
        let map = doc.get_or_insert_map("items");
        let mut txn = doc.transact_mut();
        map.insert(&mut txn, "k", "v");
        let update = txn.encode_update_v1();
        drop(txn);
        (doc, update)
    }

    #[test]
    fn every_message_round_trips() {
        let (doc, update) = sample_update();
        let sv = doc.transact().state_vector();
        let mut clients = HashMap::new();
        clients.insert(
            ClientID::new(42),
            AwarenessUpdateEntry {
                clock: 3,
                json: "{\"user\":\"ann\"}".into(),
            },
        );
        let awareness = AwarenessUpdate { clients };
        let frames = vec![
            (
                encode_sync_step1(&sv),
                Message::Sync(SyncMessage::SyncStep1(sv.clone())),
            ),
            (
                encode_sync_step2(update.clone()),
                Message::Sync(SyncMessage::SyncStep2(update.clone())),
            ),
            (
                encode_update(update.clone()),
                Message::Sync(SyncMessage::Update(update.clone())),
            ),
            (
                encode_awareness(&awareness),
                Message::Awareness(awareness.clone()),
            ),
            (
                encode_permission_denied("read-only"),
                Message::Auth(Some("read-only".into())),
            ),
            (
                encode_durable_ack(&sv),
                Message::Custom(MSG_DURABLE_ACK, sv.encode_v1()),
            ),
            (vec![MSG_QUERY_AWARENESS], Message::AwarenessQuery),
        ];
        for (bytes, expected) in frames {
            assert_eq!(split_frame(&bytes), Ok(vec![expected]));
        }
    }

    #[test]
    fn known_bytes_match_the_protocol_table() {
        // PROTOCOL.md: sync step 1 of an empty document is 00 00 01 00.
        assert_eq!(encode_sync_step1(&StateVector::default()), vec![0, 0, 1, 0]);
        assert_eq!(encode_permission_denied("x"), vec![2, 0, 1, b'x']);
        let keepalive = split_frame(&encode_keepalive()).expect("decodes");
        assert_eq!(
            keepalive,
            vec![Message::Awareness(AwarenessUpdate {
                clients: HashMap::new()
            })]
        );
    }

    #[test]
    fn several_messages_in_one_frame_are_all_read() {
        let (_, update) = sample_update();
        let mut frame = encode_update(update.clone());
        frame.extend(encode_sync_step1(&StateVector::default()));
        frame.push(MSG_QUERY_AWARENESS);
        let messages = split_frame(&frame).expect("decodes");
        assert_eq!(messages.len(), 3);
        assert_eq!(messages[2], Message::AwarenessQuery);
    }

    #[test]
    fn truncated_and_garbage_frames_are_refused() {
        let (_, update) = sample_update();
        let frame = encode_update(update);
        for cut in 1..frame.len() {
            assert!(split_frame(&frame[..cut]).is_err(), "cut at {cut}");
        }
        assert_eq!(split_frame(&[]), Err(ProtocolError::Empty));
        assert!(split_frame(&[0, 9, 0]).is_err(), "unknown sync kind");
        assert!(
            split_frame(&[
                0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff
            ])
            .is_err()
        );
    }

    #[test]
    fn durable_ack_carries_the_state_vector() {
        let (doc, _) = sample_update();
        let sv = doc.transact().state_vector();
        let messages = split_frame(&encode_durable_ack(&sv)).expect("decodes");
        match &messages[0] {
            Message::Custom(MSG_DURABLE_ACK, body) => {
                assert_eq!(decode_durable_ack(body), Some(sv))
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
