//! Framing of the multiplexed sync socket (`GET /v1/sync`, a Larder
//! extension): many lists over one WebSocket. Every binary frame starts
//! with a kind byte and the 16 bytes of a list id:
//!
//! | kind | direction | rest of the frame |
//! |---|---|---|
//! | `0` data | both | y-websocket messages of that list, exactly as the per-list endpoint frames them |
//! | `1` subscribe | client → server | optional flags byte: bit 0 asks for durable acknowledgements (message 100) |
//! | `2` unsubscribe | client → server | nothing |
//! | `3` closed | server → client | close code (u16, big-endian), then the reason in UTF-8 |
//!
//! A `closed` frame ends one list's subscription with the same codes a
//! per-list socket closes with (4403, 4404, 4400, 4414, 1001, ...); 1000
//! confirms an unsubscribe. The other lists stay subscribed.

use uuid::Uuid;

/// Bytes before a frame's payload: kind and list id.
pub const HEADER_LEN: usize = 17;
/// Longest reason in a `closed` frame, in bytes (as in a WebSocket close).
pub const MAX_REASON_BYTES: usize = 123;

const DATA: u8 = 0;
const SUBSCRIBE: u8 = 1;
const UNSUBSCRIBE: u8 = 2;
const CLOSED: u8 = 3;

/// Flag of a subscribe frame: the client wants durable acknowledgements.
pub const FLAG_ACK: u8 = 1;

/// One frame of the multiplexed socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MuxFrame<'a> {
    Data {
        list: Uuid,
        payload: &'a [u8],
    },
    Subscribe {
        list: Uuid,
        ack: bool,
    },
    Unsubscribe {
        list: Uuid,
    },
    Closed {
        list: Uuid,
        code: u16,
        reason: &'a str,
    },
}

/// Why a frame does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MuxError {
    #[error("frame shorter than its 17-byte header")]
    Short,
    #[error("unknown frame kind {0}")]
    Kind(u8),
    #[error("{0} frame with unexpected bytes")]
    Trailing(&'static str),
    #[error("data frame without messages")]
    Empty,
    #[error("closed frame without a code, or with a reason that is not UTF-8")]
    Closed,
}

impl<'a> MuxFrame<'a> {
    /// Parses `frame`, borrowing its payload.
    pub fn decode(frame: &'a [u8]) -> Result<MuxFrame<'a>, MuxError> {
        if frame.len() < HEADER_LEN {
            return Err(MuxError::Short);
        }
        let mut id = [0u8; 16];
        id.copy_from_slice(&frame[1..HEADER_LEN]);
        let list = Uuid::from_bytes(id);
        let rest = &frame[HEADER_LEN..];
        match frame[0] {
            DATA if rest.is_empty() => Err(MuxError::Empty),
            DATA => Ok(MuxFrame::Data {
                list,
                payload: rest,
            }),
            SUBSCRIBE => match rest {
                [] => Ok(MuxFrame::Subscribe { list, ack: false }),
                [flags] if flags & !FLAG_ACK == 0 => Ok(MuxFrame::Subscribe {
                    list,
                    ack: flags & FLAG_ACK != 0,
                }),
                _ => Err(MuxError::Trailing("subscribe")),
            },
            UNSUBSCRIBE if rest.is_empty() => Ok(MuxFrame::Unsubscribe { list }),
            UNSUBSCRIBE => Err(MuxError::Trailing("unsubscribe")),
            CLOSED => {
                if rest.len() < 2 || rest.len() > 2 + MAX_REASON_BYTES {
                    return Err(MuxError::Closed);
                }
                let code = u16::from_be_bytes([rest[0], rest[1]]);
                let reason = std::str::from_utf8(&rest[2..]).map_err(|_| MuxError::Closed)?;
                Ok(MuxFrame::Closed { list, code, reason })
            }
            kind => Err(MuxError::Kind(kind)),
        }
    }

    /// The frame's bytes.
    pub fn encode(&self) -> Vec<u8> {
        match *self {
            MuxFrame::Data { list, payload } => with_header(DATA, list, payload),
            MuxFrame::Subscribe { list, ack } => {
                with_header(SUBSCRIBE, list, &[if ack { FLAG_ACK } else { 0 }])
            }
            MuxFrame::Unsubscribe { list } => with_header(UNSUBSCRIBE, list, &[]),
            MuxFrame::Closed { list, code, reason } => {
                let mut cut = reason.len().min(MAX_REASON_BYTES);
                while !reason.is_char_boundary(cut) {
                    cut -= 1;
                }
                let mut body = code.to_be_bytes().to_vec();
                body.extend_from_slice(&reason.as_bytes()[..cut]);
                with_header(CLOSED, list, &body)
            }
        }
    }

    /// The list the frame is about.
    pub fn list(&self) -> Uuid {
        match *self {
            MuxFrame::Data { list, .. }
            | MuxFrame::Subscribe { list, .. }
            | MuxFrame::Unsubscribe { list }
            | MuxFrame::Closed { list, .. } => list,
        }
    }
}

fn with_header(kind: u8, list: Uuid, payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(HEADER_LEN + payload.len());
    frame.push(kind);
    frame.extend_from_slice(list.as_bytes());
    frame.extend_from_slice(payload);
    frame
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn frames_round_trip() {
        let list = Uuid::from_u128(0x0191_d6b2_7c1e_7a3b_9f00_1234_5678_9abc);
        let frames = [
            MuxFrame::Data {
                list,
                payload: &[0, 0, 1, 0],
            },
            MuxFrame::Subscribe { list, ack: true },
            MuxFrame::Subscribe { list, ack: false },
            MuxFrame::Unsubscribe { list },
            MuxFrame::Closed {
                list,
                code: 4403,
                reason: "access to this list was revoked",
            },
        ];
        for frame in frames {
            let bytes = frame.encode();
            assert_eq!(MuxFrame::decode(&bytes), Ok(frame));
            assert_eq!(&bytes[1..17], list.as_bytes());
        }
        assert_eq!(
            MuxFrame::Subscribe { list, ack: true }.encode()[..],
            [&[1u8][..], list.as_bytes(), &[1]].concat()[..]
        );
    }

    #[test]
    fn malformed_frames_are_refused() {
        let list = Uuid::now_v7();
        assert_eq!(MuxFrame::decode(&[0; 16]), Err(MuxError::Short));
        assert_eq!(
            MuxFrame::decode(&with_header(9, list, &[])),
            Err(MuxError::Kind(9))
        );
        assert_eq!(
            MuxFrame::decode(&with_header(0, list, &[])),
            Err(MuxError::Empty)
        );
        assert!(MuxFrame::decode(&with_header(1, list, &[2])).is_err());
        assert!(MuxFrame::decode(&with_header(1, list, &[1, 0])).is_err());
        assert!(MuxFrame::decode(&with_header(2, list, &[0])).is_err());
        assert!(MuxFrame::decode(&with_header(3, list, &[4])).is_err());
        assert!(MuxFrame::decode(&with_header(3, list, &[0x11, 0x93, 0xff])).is_err());
    }

    #[test]
    fn long_reasons_are_cut_on_a_character() {
        let list = Uuid::now_v7();
        let reason = "é".repeat(100);
        let bytes = MuxFrame::Closed {
            list,
            code: 4404,
            reason: &reason,
        }
        .encode();
        let MuxFrame::Closed { reason: cut, .. } = MuxFrame::decode(&bytes).unwrap() else {
            panic!("closed frame")
        };
        assert!(cut.len() <= MAX_REASON_BYTES && reason.starts_with(cut));
    }

    proptest! {
        #[test]
        fn any_bytes_decode_or_are_refused_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(frame) = MuxFrame::decode(&bytes) {
                let encoded = frame.encode();
                prop_assert_eq!(MuxFrame::decode(&encoded), Ok(frame));
            }
        }
    }
}
