//! `GET /v1/sync/{list_id}`: upgrades to a y-websocket connection for one
//! list; `GET /v1/sync`: upgrades to a multiplexed socket carrying many
//! (a Larder extension, framed as `larder_crdt::mux` describes).

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use uuid::Uuid;

use crate::app::AppState;
use crate::auth;
use crate::connection::{self, ConnectionOptions};
use crate::error::ApiError;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/sync/{list_id}", get(upgrade))
        .route("/v1/sync", get(upgrade_mux))
}

#[derive(Debug, Deserialize)]
struct SyncQuery {
    token: Option<String>,
    ack: Option<String>,
}

async fn upgrade(
    State(state): State<AppState>,
    Path(list_id): Path<String>,
    query: Result<Query<SyncQuery>, QueryRejection>,
    headers: HeaderMap,
    slot: Option<axum::Extension<crate::serve::ConnectionSlot>>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let list_id = Uuid::parse_str(&list_id)
        .map_err(|_| ApiError::bad_request("invalid_list_id", "list id must be a UUID"))?;
    let Query(query) = query.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let ws = ws.map_err(|_| {
        ApiError::bad_request(
            "websocket_required",
            "this endpoint speaks the y-websocket protocol over a WebSocket upgrade",
        )
    })?;
    let wants_ack = matches!(query.ack.as_deref(), Some("1" | "true"));
    let bearer = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let token = query.token.as_deref().or(bearer);
    let auth = auth::authorize_socket(&state.tokens, &state.directory, token, list_id).await;

    let limits = &state.config.limits;
    let ws = ws
        // Our own check closes with 4413 and a reason; the library's limit
        // only stops what is far beyond it.
        .max_message_size(limits.max_message_bytes.saturating_mul(2).max(64 * 1024))
        .max_frame_size(limits.max_message_bytes.saturating_mul(2).max(64 * 1024))
        .read_buffer_size(2 * 1024)
        // Frames fed together go out in one write (see `connection`); a
        // lone frame is flushed at once.
        .write_buffer_size(16 * 1024);
    let rooms = state.rooms.clone();
    let tracker = state.tracker.clone();
    let directory = state.directory.clone();
    let recheck_every = state.config.auth.access_recheck();
    Ok(ws
        .on_upgrade(move |mut socket| {
            tracker.track_future(async move {
                // The socket stays counted against the connection caps.
                let _slot = slot;
                match auth {
                    Ok(grant) => {
                        let remaining = (grant.expires_at - chrono::Utc::now())
                            .to_std()
                            .unwrap_or_default();
                        let options = ConnectionOptions {
                            access: grant.access,
                            user_id: Some(grant.user_id),
                            expires_at: Some(tokio::time::Instant::now() + remaining),
                            recheck: Some(auth::AccessCheck::new(directory, list_id, grant.user_id, grant.link_id)),
                            link_id: grant.link_id,
                            recheck_every,
                            wants_ack,
                        };
                        connection::serve(socket, list_id, options, rooms).await
                    }
                    Err(reason) => {
                        metrics::counter!("larder_sync_refused_total", "code" => reason.code.to_string())
                            .increment(1);
                        let frame = axum::extract::ws::CloseFrame {
                            code: reason.code,
                            reason: reason.reason.into(),
                        };
                        let _ = socket
                            .send(axum::extract::ws::Message::Close(Some(frame)))
                            .await;
                    }
                }
            })
        })
        .into_response())
}

#[derive(Debug, Deserialize)]
struct MuxQuery {
    token: Option<String>,
}

/// Upgrades to a multiplexed socket. The token is checked once here (a
/// bad one closes with 4401) and for each list as it is subscribed.
async fn upgrade_mux(
    State(state): State<AppState>,
    query: Result<Query<MuxQuery>, QueryRejection>,
    headers: HeaderMap,
    slot: Option<axum::Extension<crate::serve::ConnectionSlot>>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::bad_request("invalid_query", e.body_text()))?;
    let ws = ws.map_err(|_| {
        ApiError::bad_request(
            "websocket_required",
            "this endpoint speaks Larder's multiplexed sync protocol over a WebSocket upgrade",
        )
    })?;
    let bearer = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let token = query
        .token
        .as_deref()
        .or(bearer)
        .filter(|t| !t.is_empty())
        .map(str::to_owned);
    let claims = match &token {
        None => Err(crate::close::CloseReason::new(
            crate::close::UNAUTHORIZED,
            "token required: pass ?token= or Authorization: Bearer",
        )),
        Some(token) => state.tokens.verify(token).map_err(|e| {
            crate::close::CloseReason::new(
                crate::close::UNAUTHORIZED,
                match e {
                    auth::tokens::TokenError::Expired => "token expired: refresh it and reconnect",
                    auth::tokens::TokenError::Invalid => "token invalid",
                },
            )
        }),
    };
    let limits = &state.config.limits;
    let ws = ws
        .max_message_size(limits.max_message_bytes.saturating_mul(2).max(64 * 1024))
        .max_frame_size(limits.max_message_bytes.saturating_mul(2).max(64 * 1024))
        .read_buffer_size(2 * 1024)
        .write_buffer_size(16 * 1024);
    let rooms = state.rooms.clone();
    let tracker = state.tracker.clone();
    let options = match (claims, token) {
        (Ok(claims), Some(token)) => {
            let remaining = (claims.expires_at() - chrono::Utc::now())
                .to_std()
                .unwrap_or_default();
            Ok(connection::mux::MuxOptions {
                token,
                tokens: state.tokens.clone(),
                directory: state.directory.clone(),
                expires_at: tokio::time::Instant::now() + remaining,
                recheck_every: state.config.auth.access_recheck(),
                max_lists: state.config.limits.max_lists_per_socket.max(1),
            })
        }
        (Err(reason), _) => Err(reason),
        (Ok(_), None) => unreachable!("claims come from a token"),
    };
    Ok(ws
        .on_upgrade(move |mut socket| {
            tracker.track_future(async move {
                let _slot = slot;
                match options {
                    Ok(options) => connection::mux::serve(socket, options, rooms).await,
                    Err(reason) => {
                        metrics::counter!("larder_sync_refused_total", "code" => reason.code.to_string())
                            .increment(1);
                        connection::common::close_socket(&mut socket, reason).await;
                    }
                }
            })
        })
        .into_response())
}
