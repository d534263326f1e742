//! `GET/POST /v1/webhooks/whatsapp`: Meta's subscription check, and the
//! deliveries that report message statuses and vendor replies. A delivery
//! is answered 200 once stored; its signature is checked on the raw body
//! before anything is parsed. Meta retries for days, so duplicates and
//! out-of-order statuses are expected: storage applies each
//! (message, status) once and moves shares only forward.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use hmac::{Hmac, Mac};
use larder_storage::outbox::StatusApplied;
use secrecy::ExposeSecret;
use serde_json::json;
use sha2::Sha256;

use super::extract::ApiQuery;
use crate::app::AppState;
use crate::error::ApiError;
use crate::whatsapp::webhook::{Event, Payload, signature_is_valid};

/// Largest delivery accepted.
const MAX_DELIVERY_BYTES: usize = 1024 * 1024;
/// Longest verification challenge echoed.
const MAX_CHALLENGE: usize = 256;
/// Most statuses and messages taken from one delivery (Meta batches far
/// fewer); a larger one is refused whole.
const MAX_EVENTS: usize = 1000;

pub fn router() -> Router<AppState> {
    Router::new().route(
        "/v1/webhooks/whatsapp",
        get(verify)
            .post(deliver)
            .layer(DefaultBodyLimit::max(MAX_DELIVERY_BYTES)),
    )
}

/// Answers Meta's subscription check: the challenge, when the mode is
/// `subscribe` and the token is ours.
async fn verify(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let Some(expected) = &state.config.whatsapp.whatsapp_verify_token else {
        return Err(ApiError::forbidden(
            "webhook_not_configured",
            "no LARDER_WHATSAPP_VERIFY_TOKEN is configured",
        ));
    };
    let mode = query.get("hub.mode").map(String::as_str);
    let token = query
        .get("hub.verify_token")
        .map(String::as_str)
        .unwrap_or("");
    let challenge = query.get("hub.challenge").map(String::as_str).unwrap_or("");
    if mode != Some("subscribe") || !same_secret(token, expected.expose_secret()) {
        return Err(ApiError::forbidden(
            "verification_failed",
            "the mode or verify token does not match",
        ));
    }
    if challenge.is_empty() || challenge.len() > MAX_CHALLENGE {
        return Err(ApiError::bad_request(
            "invalid_query",
            "hub.challenge must be 1 to 256 characters",
        ));
    }
    Ok((
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        challenge.to_owned(),
    )
        .into_response())
}

/// Compares two secrets in constant time (by their MACs under a fixed key,
/// so lengths do not leak either).
fn same_secret(given: &str, expected: &str) -> bool {
    let mac = |text: &str| {
        let mut m = Hmac::<Sha256>::new_from_slice(b"larder-verify-token").expect("any key");
        m.update(text.as_bytes());
        m
    };
    mac(given)
        .verify_slice(&mac(expected).finalize().into_bytes())
        .is_ok()
}

/// Stores a delivery's statuses and replies.
async fn deliver(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let Some(secret) = &state.config.whatsapp.whatsapp_app_secret else {
        return Err(ApiError::forbidden(
            "webhook_not_configured",
            "no LARDER_WHATSAPP_APP_SECRET is configured",
        ));
    };
    let signature = headers
        .get("x-hub-signature-256")
        .and_then(|v| v.to_str().ok());
    if !signature_is_valid(secret.expose_secret().as_bytes(), signature, &body) {
        metrics::counter!("larder_whatsapp_webhooks_refused_total").increment(1);
        return Err(ApiError::unauthorized(
            "invalid_signature",
            "X-Hub-Signature-256 does not match the body",
        ));
    }
    let payload: Payload = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request("invalid_json", format!("malformed delivery: {e}")))?;
    if payload.object != "whatsapp_business_account" {
        // Not ours to read; acknowledged so it is not retried.
        return Ok(Json(json!({ "received": 0 })).into_response());
    }
    let events = payload.events(state.config.whatsapp.whatsapp_phone_number_id.as_deref());
    if events.len() > MAX_EVENTS {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_events",
            format!("a delivery may hold at most {MAX_EVENTS} statuses and messages"),
        ));
    }
    let mut received = 0;
    for event in events {
        match event {
            Event::Status(status, share_id) => {
                let applied = state.outbox.record_status(&status, share_id).await?;
                let result = match applied {
                    StatusApplied::Applied(_) => "applied",
                    StatusApplied::Duplicate => "duplicate",
                    StatusApplied::Unknown => "unknown",
                };
                metrics::counter!("larder_whatsapp_webhook_statuses_total",
                    "status" => status.status.clone(), "result" => result)
                .increment(1);
                if let StatusApplied::Applied(share_id) = applied {
                    tracing::debug!(%share_id, wamid = %status.wamid, status = %status.status, "share status");
                }
            }
            Event::Reply(reply, context) => {
                let fresh = state
                    .outbox
                    .record_reply(
                        &reply,
                        context.as_deref(),
                        std::time::Duration::from_secs(24 * 3600),
                    )
                    .await?;
                metrics::counter!("larder_whatsapp_webhook_replies_total",
                    "result" => if fresh { "stored" } else { "duplicate" })
                .increment(1);
            }
        }
        received += 1;
    }
    Ok((StatusCode::OK, Json(json!({ "received": received }))).into_response())
}

#[cfg(test)]
mod tests {
    use super::same_secret;

    #[test]
    fn verify_tokens_compare_exactly() {
        assert!(same_secret("token-1", "token-1"));
        assert!(!same_secret("token-1", "token-2"));
        assert!(!same_secret("", "token-1"));
        assert!(!same_secret("token-1-and-more", "token-1"));
    }
}
