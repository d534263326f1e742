//! y-websocket messages, on top of `yrs::sync` (which owns the codec).
//!
//! [`split_frame`] turns one WebSocket frame into messages (a frame may hold
//! several back to back, PROTOCOL.md) and refuses truncated or trailing
//! bytes instead of silently dropping them. The `encode_*` functions build
//! outgoing frames.

use crate::validate::{self, Invalid, Limits};
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
const MSG_SYNC_STEP_1: u8 = 0;
const MSG_SYNC_STEP_2: u8 = 1;
const MSG_SYNC_UPDATE: u8 = 2;

/// Why a frame was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtocolError {
    #[error("empty frame")]
    Empty,
    #[error("malformed message at byte {offset}: {reason}")]
    Malformed { offset: usize, reason: String },
    /// A message body failed the bounded check before decoding.
    #[error("invalid message at byte {offset}: {reason}")]
    Invalid { offset: usize, reason: Invalid },
}

/// Decodes every message of one frame, checking each body with
/// permissive limits: counts bounded by the bytes and nesting by
/// [`Limits::max_depth`], any number of clients and structs. For what a
/// server receives from clients, use [`split_frame_checked`].
pub fn split_frame(frame: &[u8]) -> Result<Vec<Message>, ProtocolError> {
    let limits = Limits {
        max_clients: usize::MAX,
        max_structs: usize::MAX,
        max_delete_ranges: usize::MAX,
        ..Limits::default()
    };
    split_frame_checked(frame, &limits)
}

/// Decodes every message of one frame. Every body yrs would decode (state
/// vectors, updates, presence) first passes the bounded checks of
/// [`crate::validate`]; yrs sees nothing that failed them. Unknown message
/// types are returned as [`Message::Custom`] for the caller to ignore.
pub fn split_frame_checked(frame: &[u8], limits: &Limits) -> Result<Vec<Message>, ProtocolError> {
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
        let invalid = |reason: Invalid| ProtocolError::Invalid {
            offset: start,
            reason,
        };
        match skip_message(&mut cursor).map_err(malformed)? {
            Body::StateVector(body) => {
                validate::check_state_vector(body, limits).map_err(invalid)?;
            }
            Body::Update(body) => {
                validate::check_update(body, limits).map_err(invalid)?;
            }
            Body::Presence(body) => {
                validate::check_awareness(body, limits).map_err(invalid)?;
            }
            Body::Opaque => {}
        }
        let message = Message::decode_v1(&frame[start..cursor.next]).map_err(malformed)?;
        messages.push(message);
    }
    Ok(messages)
}

/// The part of a message yrs interprets when it decodes it.
enum Body<'a> {
    StateVector(&'a [u8]),
    Update(&'a [u8]),
    Presence(&'a [u8]),
    Opaque,
}

/// Moves the cursor past one message and returns the body yrs would
/// decode, without interpreting it.
fn skip_message<'a>(cursor: &mut Cursor<'a>) -> Result<Body<'a>, yrs::encoding::read::Error> {
    let tag: u8 = cursor.read_var()?;
    Ok(match tag {
        MSG_SYNC => {
            let kind: u8 = cursor.read_var()?;
            let body = read_body(cursor)?;
            match kind {
                MSG_SYNC_STEP_1 => Body::StateVector(body),
                MSG_SYNC_STEP_2 | MSG_SYNC_UPDATE => Body::Update(body),
                _ => Body::Opaque,
            }
        }
        MSG_AUTH => {
            let kind: u8 = cursor.read_var()?;
            if kind == yrs::sync::protocol::PERMISSION_DENIED {
                cursor.read_buf()?;
            }
            Body::Opaque
        }
        MSG_QUERY_AWARENESS => Body::Opaque,
        MSG_AWARENESS => Body::Presence(read_body(cursor)?),
        // Every custom message carries one varByteArray.
        _ => {
            cursor.read_buf()?;
            Body::Opaque
        }
    })
}

/// One varByteArray, borrowed from the frame.
fn read_body<'a>(cursor: &mut Cursor<'a>) -> Result<&'a [u8], yrs::encoding::read::Error> {
    let len: u32 = cursor.read_var()?;
    let start = cursor.next;
    cursor.read_exact(len as usize)?;
    let frame: &'a [u8] = cursor.buf;
    Ok(&frame[start..cursor.next])
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
    fn bodies_are_checked_before_decoding() {
        // Sync step 1 declaring half a billion clients in five bytes.
        let frame = [0, 0, 5, 0x80, 0xca, 0xb5, 0xee, 0x01];
        assert!(matches!(
            split_frame(&frame),
            Err(ProtocolError::Invalid { offset: 0, .. })
        ));
        // An update nested deeper than the limit.
        let mut body = vec![1, 1, 1, 0, 8 | 0x20, 1, 1, b'm', 1, b'k', 1];
        for _ in 0..100 {
            body.extend_from_slice(&[117, 1]);
        }
        body.extend_from_slice(&[126, 0]);
        let frame = encode_update(body);
        assert_eq!(
            split_frame(&frame),
            Err(ProtocolError::Invalid {
                offset: 0,
                reason: Invalid::TooDeep(32)
            })
        );
        // Presence declaring more entries than it has bytes.
        assert!(split_frame(&[1, 3, 0xff, 0xff, 0x7f]).is_err());
        // The server's own limits apply through the checked variant.
        let (_, update) = sample_update();
        let limits = Limits {
            max_structs: 0,
            ..Limits::default()
        };
        assert!(split_frame_checked(&encode_update(update), &limits).is_err());
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
