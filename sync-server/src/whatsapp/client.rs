//! The WhatsApp Business Cloud API's send endpoint
//! (`POST {base}/{version}/{phone_number_id}/messages`, WHATSAPP.md), over
//! reqwest. Tells apart a request that never went out (safe to send again)
//! from one whose outcome is unknown (it may have been sent).

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Value, json};

/// A message to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Free text; only inside the 24-hour window.
    Text { body: String },
    /// An approved template with positional body parameters.
    Template {
        name: String,
        language: String,
        params: Vec<String>,
    },
}

/// Why a send did not return a message id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The API answered with an error.
    #[error("WhatsApp API error {code:?} (HTTP {http_status}): {message}")]
    Api {
        /// The Graph API error code; `None` when the body had none.
        code: Option<i64>,
        http_status: u16,
        message: String,
    },
    /// The request never reached the API (connection refused, DNS).
    #[error("cannot reach the WhatsApp API: {0}")]
    NotSent(String),
    /// The request may have reached the API but no answer came (a timeout
    /// or a connection dropped mid-answer): it may have been sent.
    #[error("no answer from the WhatsApp API: {0}")]
    Unsure(String),
}

/// A client of one business number.
#[derive(Clone)]
pub struct GraphClient {
    http: reqwest::Client,
    endpoint: String,
    token: SecretString,
}

impl std::fmt::Debug for GraphClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GraphClient")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct Accepted {
    messages: Vec<AcceptedMessage>,
}

#[derive(Deserialize)]
struct AcceptedMessage {
    id: String,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    #[serde(default)]
    message: String,
    code: Option<i64>,
    #[serde(default)]
    error_data: Option<Value>,
}

impl GraphClient {
    pub fn new(
        base: &str,
        version: &str,
        phone_number_id: &str,
        token: SecretString,
        timeout: Duration,
    ) -> anyhow::Result<GraphClient> {
        // reqwest is built without a bundled crypto provider; ring is ours.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .build()?;
        Ok(GraphClient {
            http,
            endpoint: format!(
                "{}/{}/{}/messages",
                base.trim_end_matches('/'),
                version.trim_matches('/'),
                phone_number_id
            ),
            token,
        })
    }

    /// Sends `message` to `to` (E.164 digits), with `callback` echoed in
    /// the message's status webhooks. Returns the message id (`wamid`).
    pub async fn send(
        &self,
        to: &str,
        message: &Message,
        callback: &str,
    ) -> Result<String, SendError> {
        let body = request_body(to, message, callback);
        let response = self
            .http
            .post(&self.endpoint)
            .bearer_auth(self.token.expose_secret())
            .json(&body)
            .send()
            .await
            .map_err(classify)?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| {
            if status.is_success() {
                SendError::Unsure(e.to_string())
            } else {
                SendError::Api {
                    code: None,
                    http_status: status.as_u16(),
                    message: format!("unreadable error answer: {e}"),
                }
            }
        })?;
        if status.is_success() {
            return match serde_json::from_slice::<Accepted>(&bytes) {
                Ok(ok) => ok
                    .messages
                    .into_iter()
                    .next()
                    .map(|m| m.id)
                    .ok_or_else(|| SendError::Unsure("accepted without a message id".into())),
                // A 200 whose body we cannot read: it was very likely sent.
                Err(e) => Err(SendError::Unsure(format!("unreadable answer: {e}"))),
            };
        }
        Err(match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(ErrorBody { error }) => SendError::Api {
                code: error.code,
                http_status: status.as_u16(),
                message: describe(&error),
            },
            Err(_) => SendError::Api {
                code: None,
                http_status: status.as_u16(),
                message: format!("HTTP {status} without an error body"),
            },
        })
    }
}

fn describe(error: &ErrorDetail) -> String {
    let details = error
        .error_data
        .as_ref()
        .and_then(|d| d.get("details"))
        .and_then(Value::as_str);
    match details {
        Some(details) if !details.is_empty() => format!("{}: {details}", error.message),
        _ => error.message.clone(),
    }
}

/// A transport error: whether the request may have gone out.
fn classify(e: reqwest::Error) -> SendError {
    if e.is_connect() || e.is_builder() {
        SendError::NotSent(e.to_string())
    } else {
        SendError::Unsure(e.to_string())
    }
}

/// The JSON body of a send (WHATSAPP.md, "Sending").
pub fn request_body(to: &str, message: &Message, callback: &str) -> Value {
    let mut body = json!({
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": to,
        "biz_opaque_callback_data": callback,
    });
    match message {
        Message::Text { body: text } => {
            body["type"] = json!("text");
            body["text"] = json!({ "preview_url": false, "body": text });
        }
        Message::Template {
            name,
            language,
            params,
        } => {
            body["type"] = json!("template");
            let parameters: Vec<Value> = params
                .iter()
                .map(|p| json!({ "type": "text", "text": p }))
                .collect();
            body["template"] = json!({
                "name": name,
                "language": { "code": language },
                "components": [{ "type": "body", "parameters": parameters }],
            });
        }
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_follow_the_cloud_api() {
        let text = request_body(
            "447700900123",
            &Message::Text { body: "hi".into() },
            "share-1",
        );
        assert_eq!(
            text,
            json!({"messaging_product": "whatsapp", "recipient_type": "individual",
                "to": "447700900123", "biz_opaque_callback_data": "share-1",
                "type": "text", "text": {"preview_url": false, "body": "hi"}})
        );
        let template = request_body(
            "447700900123",
            &Message::Template {
                name: "larder_list".into(),
                language: "en_US".into(),
                params: vec!["Smiths".into(), "3".into()],
            },
            "share-1",
        );
        assert_eq!(template["type"], "template");
        assert_eq!(template["template"]["language"]["code"], "en_US");
        assert_eq!(
            template["template"]["components"][0]["parameters"][1],
            json!({"type": "text", "text": "3"})
        );
    }

    #[test]
    fn the_token_is_not_in_debug_output() {
        let client = GraphClient::new(
            "http://127.0.0.1:9",
            "v25.0",
            "123",
            SecretString::from("hunter2-token"),
            Duration::from_secs(1),
        )
        .unwrap();
        assert!(!format!("{client:?}").contains("hunter2"));
    }
}
