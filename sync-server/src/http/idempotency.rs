//! `Idempotency-Key` on creating requests: the key, the record stored with
//! the created row, the replayed answer, and ids derived from the key.

use axum::Json;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use larder_storage::directory::{Created, IdempotencyRecord};
use serde::Serialize;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::extract::Caller;
use crate::error::ApiError;

/// Namespace of item and order ids derived from an `Idempotency-Key`.
const IDEMPOTENT_IDS: Uuid = Uuid::from_u128(0x6c61_7264_6572_4964_656d_706f_7465_6e74);

/// The `Idempotency-Key` header, if sent: 1 to 255 visible ASCII characters.
pub fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = value
        .to_str()
        .ok()
        .filter(|k| (1..=255).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_idempotency_key",
                "Idempotency-Key must be 1 to 255 visible ASCII characters",
            )
        })?;
    Ok(Some(key.to_owned()))
}

/// Hex SHA-256 of a request body.
pub fn body_hash(raw: &[u8]) -> String {
    Sha256::digest(raw)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Builds the idempotency record of a creating request, when it has a key.
pub fn idempotency_record(
    headers: &HeaderMap,
    caller: &Caller,
    method: &str,
    path: String,
    raw: &[u8],
    response_status: StatusCode,
    response_body: &impl Serialize,
) -> Result<Option<IdempotencyRecord>, ApiError> {
    let Some(key) = idempotency_key(headers)? else {
        return Ok(None);
    };
    Ok(Some(IdempotencyRecord {
        user_id: caller.user_id,
        key,
        method: method.to_owned(),
        path,
        request_hash: body_hash(raw),
        response_status: response_status.as_u16(),
        response_body: serde_json::to_string(response_body)
            .map_err(|e| ApiError::Internal(e.into()))?,
        expires_at: Utc::now() + chrono::Duration::hours(24),
    }))
}

/// The response of a creating request: the new row, or the first response
/// of the same request sent with the same key before.
pub fn created_response<T: Serialize>(created: Created<T>) -> Result<Response, ApiError> {
    match created {
        Created::New(value) => Ok((StatusCode::CREATED, Json(value)).into_response()),
        Created::Replay { status, body } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
            let mut response = (status, body).into_response();
            response.headers_mut().insert(
                axum::http::header::CONTENT_TYPE,
                axum::http::HeaderValue::from_static("application/json"),
            );
            response.headers_mut().insert(
                "idempotent-replay",
                axum::http::HeaderValue::from_static("true"),
            );
            Ok(response)
        }
        Created::KeyReused => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency_key_reused",
            "this Idempotency-Key was used with another request",
        )),
        Created::Exists => Err(ApiError::conflict("exists", "it exists already")),
    }
}

/// The id of a new item or order: given, derived from the request's
/// `Idempotency-Key` (so a retry names the same one), or fresh.
pub fn new_id(
    given: Option<Uuid>,
    headers: &HeaderMap,
    caller: &Caller,
    list_id: Uuid,
) -> Result<Uuid, ApiError> {
    if let Some(id) = given {
        return Ok(id);
    }
    Ok(match idempotency_key(headers)? {
        Some(key) => Uuid::new_v5(
            &IDEMPOTENT_IDS,
            format!("{}:{list_id}:{key}", caller.user_id).as_bytes(),
        ),
        None => Uuid::new_v4(),
    })
}
