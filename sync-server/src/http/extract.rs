//! Extractors every handler takes its input through, so every refusal is
//! a JSON error with the right status: [`Caller`] (a bearer token),
//! [`ApiJson`] (a strictly validated body), [`ApiPath`], [`ApiQuery`] and
//! [`ClientIp`].

use std::net::{IpAddr, SocketAddr};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use uuid::Uuid;

use crate::app::AppState;
use crate::auth::tokens::{Scope, TokenError};
use crate::error::ApiError;

/// Largest JSON body accepted.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The authenticated user of a request (`Authorization: Bearer`). Only
/// full tokens are accepted here; read-only tokens only sync.
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    pub user_id: Uuid,
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Some(value) = parts.headers.get(header::AUTHORIZATION) else {
            return Err(ApiError::unauthorized(
                "token_required",
                "send an access token as Authorization: Bearer <token>",
            ));
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                ApiError::unauthorized(
                    "token_invalid",
                    "the Authorization header must be `Bearer <token>`",
                )
            })?;
        let claims = state.tokens.verify(token).map_err(|e| match e {
            TokenError::Expired => {
                ApiError::unauthorized("token_expired", "the access token expired; refresh it")
            }
            TokenError::Invalid => {
                ApiError::unauthorized("token_invalid", "the access token is invalid")
            }
        })?;
        if claims.scope != Scope::Full {
            return Err(ApiError::forbidden(
                "read_only_token",
                "a read-only token may only sync its list",
            ));
        }
        Ok(Caller {
            user_id: claims.sub,
        })
    }
}

/// Checks of a request body beyond its shape.
pub trait Validate {
    /// `Err(message)` naming the offending field.
    fn validate(&self) -> Result<(), String>;
}

/// A JSON body: `application/json`, at most [`MAX_BODY_BYTES`], no unknown
/// fields (each body type denies them), valid per [`Validate`]. Keeps the
/// raw bytes for idempotency hashing.
#[derive(Debug)]
pub struct ApiJson<T> {
    pub value: T,
    pub raw: Bytes,
}

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Validate,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        if !is_json(req.headers()) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as Content-Type: application/json",
            ));
        }
        let raw = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    format!("the body must be at most {MAX_BODY_BYTES} bytes"),
                )
            } else {
                ApiError::bad_request("invalid_body", "the body could not be read")
            }
        })?;
        let value: T = serde_json::from_slice(&raw).map_err(|e| {
            use serde_json::error::Category;
            match e.classify() {
                Category::Syntax | Category::Eof | Category::Io => {
                    ApiError::bad_request("invalid_json", format!("malformed JSON: {e}"))
                }
                Category::Data => ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_body",
                    e.to_string(),
                ),
            }
        })?;
        value.validate().map_err(ApiError::invalid)?;
        Ok(ApiJson { value, raw })
    }
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|mime| {
            let mime = mime.trim().to_ascii_lowercase();
            mime == "application/json"
                || (mime.starts_with("application/") && mime.ends_with("+json"))
        })
        .unwrap_or(false)
}

/// Path parameters; a malformed one (e.g. not a UUID) is a 400.
#[derive(Debug)]
pub struct ApiPath<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiPath<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Send,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(value)| ApiPath(value))
            .map_err(|e| ApiError::bad_request("invalid_path", e.body_text()))
    }
}

/// Query parameters; unknown or malformed ones are a 400.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Send,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(value)| ApiQuery(value))
            .map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))
    }
}

/// The client's address: the peer's, or the last `X-Forwarded-For` entry
/// (the one the trusted proxy appended) when configured to trust it.
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub IpAddr);

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if state.config.rate_limits.trust_forwarded_for
            && let Some(ip) = parts
                .headers
                .get("x-forwarded-for")
                .and_then(|v| v.to_str().ok())
                // The proxy appends the address it saw: the last entry is the
                // only one a client cannot forge.
                .and_then(|v| v.rsplit(',').next())
                .and_then(|v| v.trim().parse().ok())
        {
            return Ok(ClientIp(ip));
        }
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip())
            .unwrap_or(IpAddr::from([127, 0, 0, 1]));
        Ok(ClientIp(peer))
    }
}

/// `null` (remove the field) as `Some(None)`; absent as `None`.
pub fn double_option<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}
