//! Webhook deliveries from WhatsApp (WHATSAPP.md, "Webhooks"): the
//! signature check on the raw body, and the payload read into status
//! events and vendor replies. Parsing is lenient about fields Meta may add
//! and strict about what is stored: unknown statuses, over-long ids and
//! malformed entries are skipped, texts are bounded.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use larder_storage::vendors::{Reply, StatusEvent};
use serde::Deserialize;
use sha2::Sha256;
use uuid::Uuid;

/// Longest message id kept.
const MAX_ID: usize = 256;
/// Longest reply text kept, in characters.
const MAX_BODY_CHARS: usize = 4096;

/// Whether `header` (`sha256=<hex>`) is the HMAC-SHA256 of `body` keyed
/// with `secret`, compared in constant time.
pub fn signature_is_valid(secret: &[u8], header: Option<&str>, body: &[u8]) -> bool {
    let Some(expected) = header
        .and_then(|h| h.trim().strip_prefix("sha256="))
        .and_then(decode_hex)
    else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&expected).is_ok()
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if hex.len() != 64 {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

/// What one delivery reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A status of one of our messages, with the share id from its
    /// callback data when it parses.
    Status(StatusEvent, Option<Uuid>),
    /// A message a vendor sent, with the id of the message it quotes.
    Reply(Reply, Option<String>),
}

#[derive(Debug, Deserialize)]
pub struct Payload {
    #[serde(default)]
    pub object: String,
    #[serde(default)]
    entry: Vec<Entry>,
}

#[derive(Debug, Deserialize)]
struct Entry {
    #[serde(default)]
    changes: Vec<Change>,
}

#[derive(Debug, Deserialize)]
struct Change {
    #[serde(default)]
    field: String,
    #[serde(default)]
    value: Option<ChangeValue>,
}

#[derive(Debug, Default, Deserialize)]
struct ChangeValue {
    #[serde(default)]
    metadata: Option<Metadata>,
    #[serde(default)]
    statuses: Vec<StatusIn>,
    #[serde(default)]
    messages: Vec<MessageIn>,
    #[serde(default)]
    contacts: Vec<ContactIn>,
}

#[derive(Debug, Deserialize)]
struct Metadata {
    #[serde(default)]
    phone_number_id: Option<String>,
}

#[derive(Debug, Deserialize)]
struct StatusIn {
    id: String,
    status: String,
    #[serde(default)]
    timestamp: Option<String>,
    #[serde(default)]
    biz_opaque_callback_data: Option<String>,
    #[serde(default)]
    errors: Vec<ErrorIn>,
}

#[derive(Debug, Deserialize)]
struct ErrorIn {
    #[serde(default)]
    code: Option<i64>,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

#[derive(Debug, Deserialize)]
struct MessageIn {
    from: String,
    id: String,
    #[serde(default)]
    timestamp: Option<String>,
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    text: Option<TextIn>,
    #[serde(default)]
    button: Option<ButtonIn>,
    /// The message this one replies to.
    #[serde(default)]
    context: Option<ContextIn>,
}

#[derive(Debug, Deserialize)]
struct ContextIn {
    #[serde(default)]
    id: Option<String>,
}

#[derive(Debug, Deserialize)]
struct TextIn {
    #[serde(default)]
    body: String,
}

#[derive(Debug, Deserialize)]
struct ButtonIn {
    #[serde(default)]
    payload: Option<String>,
    #[serde(default)]
    text: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ContactIn {
    #[serde(default)]
    wa_id: Option<String>,
    #[serde(default)]
    profile: Option<Profile>,
}

#[derive(Debug, Deserialize)]
struct Profile {
    #[serde(default)]
    name: Option<String>,
}

impl Payload {
    /// The events of every `messages` change about `phone_number_id` (our
    /// business number; any when `None`), in order.
    pub fn events(self, phone_number_id: Option<&str>) -> Vec<Event> {
        let mut events = Vec::new();
        for change in self.entry.into_iter().flat_map(|e| e.changes) {
            if change.field != "messages" {
                continue;
            }
            let value = change.value.unwrap_or_default();
            let number = value
                .metadata
                .as_ref()
                .and_then(|m| m.phone_number_id.as_deref());
            if let (Some(ours), Some(theirs)) = (phone_number_id, number)
                && ours != theirs
            {
                continue;
            }
            for s in value.statuses {
                if let Some(event) = status_event(s) {
                    events.push(event);
                }
            }
            let names: HashMap<&str, &str> = value
                .contacts
                .iter()
                .filter_map(|c| Some((c.wa_id.as_deref()?, c.profile.as_ref()?.name.as_deref()?)))
                .collect();
            for m in value.messages {
                let name = names.get(m.from.as_str()).map(|n| (*n).to_owned());
                let context = m
                    .context
                    .as_ref()
                    .and_then(|c| c.id.clone())
                    .filter(|id| !id.is_empty() && id.len() <= MAX_ID);
                if let Some(reply) = reply(m, name) {
                    events.push(Event::Reply(reply, context));
                }
            }
        }
        events
    }
}

fn status_event(s: StatusIn) -> Option<Event> {
    if !matches!(s.status.as_str(), "sent" | "delivered" | "read" | "failed")
        || s.id.is_empty()
        || s.id.len() > MAX_ID
    {
        return None;
    }
    let error = s.errors.into_iter().next();
    let event = StatusEvent {
        wamid: s.id,
        status: s.status,
        occurred_at: time(s.timestamp.as_deref()),
        error_code: error
            .as_ref()
            .and_then(|e| e.code)
            .and_then(|c| i32::try_from(c).ok()),
        error_title: error
            .and_then(|e| e.title.or(e.message))
            .map(|t| bounded(&t, 500)),
    };
    let share = s
        .biz_opaque_callback_data
        .as_deref()
        .and_then(|d| Uuid::parse_str(d).ok());
    Some(Event::Status(event, share))
}

fn reply(m: MessageIn, sender_name: Option<String>) -> Option<Reply> {
    let number_ok = (7..=15).contains(&m.from.len()) && m.from.bytes().all(|b| b.is_ascii_digit());
    if !number_ok || m.id.is_empty() || m.id.len() > MAX_ID {
        return None;
    }
    let body = match (m.text, m.button) {
        (Some(text), _) => Some(text.body),
        (None, Some(button)) => button.text.or(button.payload),
        (None, None) => None,
    };
    Some(Reply {
        id: Uuid::now_v7(),
        wamid: m.id,
        wa_number: m.from,
        share_id: None,
        kind: bounded(
            if m.kind.is_empty() {
                "unknown"
            } else {
                &m.kind
            },
            32,
        ),
        body: body.map(|b| bounded(&b, MAX_BODY_CHARS)),
        sender_name: sender_name.map(|n| bounded(&n, 200)),
        received_at: time(m.timestamp.as_deref()),
    })
}

/// A webhook's Unix-seconds timestamp; now when missing or further than
/// [`MAX_CLOCK_SKEW_SECS`] in the future (Meta retries old deliveries for
/// days, so the past is fine within a week).
fn time(timestamp: Option<&str>) -> DateTime<Utc> {
    let now = Utc::now();
    timestamp
        .and_then(|t| t.parse::<i64>().ok())
        .and_then(|s| DateTime::from_timestamp(s, 0))
        .filter(|t| {
            (*t - now).num_seconds() <= MAX_CLOCK_SKEW_SECS
                && (now - *t).num_seconds() <= 7 * 24 * 3600
        })
        .unwrap_or(now)
}

/// How far in the future a webhook's timestamp may be.
const MAX_CLOCK_SKEW_SECS: i64 = 300;

fn bounded(text: &str, max_chars: usize) -> String {
    text.chars().take(max_chars).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign(secret: &[u8], body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
        mac.update(body);
        let hex: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        format!("sha256={hex}")
    }

    #[test]
    fn signatures_are_checked_on_the_raw_body() {
        let body = br#"{"object":"whatsapp_business_account"}"#;
        let good = sign(b"app-secret", body);
        assert!(signature_is_valid(b"app-secret", Some(&good), body));
        assert!(!signature_is_valid(b"other", Some(&good), body));
        assert!(!signature_is_valid(b"app-secret", Some(&good), b"{}"));
        assert!(!signature_is_valid(b"app-secret", None, body));
        assert!(!signature_is_valid(b"app-secret", Some("sha256=zz"), body));
        assert!(!signature_is_valid(b"app-secret", Some(&good[7..]), body));
    }

    #[test]
    fn statuses_and_replies_are_read_and_bounded() {
        let share = Uuid::now_v7();
        let now = Utc::now().timestamp();
        let body = serde_json::json!({
            "object": "whatsapp_business_account",
            "entry": [{"id": "1", "changes": [{"field": "messages", "value": {
                "messaging_product": "whatsapp",
                "statuses": [
                    {"id": "wamid.A", "status": "read", "timestamp": now.to_string(),
                     "recipient_id": "447700900123", "biz_opaque_callback_data": share.to_string()},
                    {"id": "wamid.B", "status": "failed", "timestamp": "1764500001",
                     "errors": [{"code": 131026, "title": "Message undeliverable"}]},
                    {"id": "wamid.C", "status": "deleted", "timestamp": "1764500001"}
                ],
                "contacts": [{"wa_id": "447700900123", "profile": {"name": "Raj"}}],
                "messages": [
                    {"from": "447700900123", "id": "wamid.IN", "timestamp": "1764500002",
                     "type": "text", "text": {"body": "x".repeat(5000)}},
                    {"from": "not-a-number", "id": "wamid.BAD", "type": "text", "text": {"body": "?"}}
                ]
            }}]}]
        });
        let payload: Payload = serde_json::from_value(body).unwrap();
        let events = payload.events(None);
        assert_eq!(events.len(), 3, "{events:?}");
        let Event::Status(read, Some(id)) = &events[0] else {
            panic!("{:?}", events[0])
        };
        assert_eq!((read.status.as_str(), *id), ("read", share));
        assert_eq!(read.occurred_at.timestamp(), now);
        let Event::Status(failed, None) = &events[1] else {
            panic!("{:?}", events[1])
        };
        assert_eq!(failed.error_code, Some(131026));
        let Event::Reply(reply, _) = &events[2] else {
            panic!("{:?}", events[2])
        };
        assert_eq!(reply.sender_name.as_deref(), Some("Raj"));
        assert_eq!(reply.body.as_ref().unwrap().chars().count(), MAX_BODY_CHARS);
    }

    #[test]
    fn other_numbers_and_absurd_times_are_not_taken() {
        let body = serde_json::json!({
            "object": "whatsapp_business_account",
            "entry": [{"id": "1", "changes": [
                {"field": "messages", "value": {"metadata": {"phone_number_id": "other"},
                    "statuses": [{"id": "wamid.X", "status": "sent", "timestamp": "1"}]}},
                {"field": "messages", "value": {"metadata": {"phone_number_id": "ours"},
                    "messages": [{"from": "447700900123", "id": "wamid.IN", "type": "text",
                        "timestamp": "99999999999", "text": {"body": "hi"},
                        "context": {"from": "15550000001", "id": "wamid.OUT"}}]}}
            ]}]
        });
        let payload: Payload = serde_json::from_value(body).unwrap();
        let events = payload.events(Some("ours"));
        assert_eq!(events.len(), 1, "{events:?}");
        let Event::Reply(reply, context) = &events[0] else {
            panic!("{:?}", events[0])
        };
        assert_eq!(context.as_deref(), Some("wamid.OUT"));
        assert!(
            (reply.received_at - Utc::now()).num_seconds().abs() < 60,
            "clamped to now"
        );
    }
}
