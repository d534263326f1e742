//! Read-only links (vendor links): a token that syncs one list without
//! changing it. Members of the list's family issue, list and revoke them; a
//! revoked link's live sockets close on every replica. A link also stops
//! when it expires, when its issuer leaves the family, or when the list is
//! deleted.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{delete, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use larder_storage::directory::ReadOnlyLink;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::access::live_list;
use super::extract::{ApiJson, ApiPath, Caller, Validate};
use crate::app::AppState;
use crate::error::{ApiError, ErrorBody};

/// Lifetime of a link when none is asked for: a week.
const DEFAULT_HOURS: u32 = 168;
/// Links that work at once for one list (the listing is not paginated).
pub const MAX_LINKS_PER_LIST: usize = 100;

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/v1/lists/{list_id}/read-only-tokens",
            post(create_link).get(list_links),
        )
        .route(
            "/v1/lists/{list_id}/read-only-tokens/{token_id}",
            delete(revoke_link),
        )
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReadOnlyTokenRequest {
    /// Lifetime in hours, from 1 to the server's maximum
    /// (`--read-only-link-max-hours`, 720 by default); 168 (a week) when
    /// not given.
    #[serde(default)]
    pub expires_in_hours: Option<u32>,
}

impl Validate for ReadOnlyTokenRequest {
    fn validate(&self) -> Result<(), String> {
        match self.expires_in_hours {
            Some(0) => Err("expires_in_hours must be at least 1".to_owned()),
            _ => Ok(()),
        }
    }
}

/// A token that may sync one list without changing it: shown once, when
/// it is issued.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReadOnlyToken {
    /// The link's id, to list and revoke it.
    pub id: Uuid,
    pub token: String,
    pub list_id: Uuid,
    pub expires_at: DateTime<Utc>,
}

/// An issued link (without its token).
#[derive(Debug, Serialize, ToSchema)]
pub struct LinkView {
    pub id: Uuid,
    pub list_id: Uuid,
    /// The member who issued it (absent once their account is gone).
    pub created_by: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

impl From<ReadOnlyLink> for LinkView {
    fn from(link: ReadOnlyLink) -> Self {
        LinkView {
            id: link.id,
            list_id: link.list_id,
            created_by: link.created_by,
            created_at: link.created_at,
            expires_at: link.expires_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LinkList {
    /// Links that still work, newest first.
    pub tokens: Vec<LinkView>,
}

/// Issues a read-only link for the list (e.g. for a vendor).
#[utoipa::path(post, path = "/v1/lists/{list_id}/read-only-tokens", tag = "lists",
    security(("bearer" = [])),
    params(("list_id" = Uuid, Path)), request_body = ReadOnlyTokenRequest,
    responses(
        (status = 201, body = ReadOnlyToken),
        (status = 404, description = "No such list, deleted, or not a member", body = ErrorBody),
        (status = 409, description = "The list has 100 working links already", body = ErrorBody),
        (status = 422, description = "A lifetime past the server's maximum", body = ErrorBody),
    ))]
pub async fn create_link(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(list_id): ApiPath<Uuid>,
    body: ApiJson<ReadOnlyTokenRequest>,
) -> Result<(StatusCode, Json<ReadOnlyToken>), ApiError> {
    live_list(&state, list_id, &caller).await?;
    state.limit_writes(&caller).await?;
    let max = state.config.auth.read_only_link_max_hours.max(1);
    let hours = body
        .value
        .expires_in_hours
        .unwrap_or(DEFAULT_HOURS.min(max));
    if hours > max {
        return Err(ApiError::invalid(format!(
            "expires_in_hours must be 1 to {max}"
        )));
    }
    if state.directory.read_only_links(list_id).await?.len() >= MAX_LINKS_PER_LIST {
        return Err(ApiError::conflict(
            "too_many_links",
            format!("a list has at most {MAX_LINKS_PER_LIST} working links; revoke one first"),
        ));
    }
    let expires_at = Utc::now() + chrono::Duration::hours(i64::from(hours));
    let link = state
        .directory
        .create_read_only_link(list_id, caller.user_id, expires_at)
        .await?;
    let token = state
        .tokens
        .issue_read_only(caller.user_id, list_id, link.id, link.expires_at);
    Ok((
        StatusCode::CREATED,
        Json(ReadOnlyToken {
            id: link.id,
            token,
            list_id,
            expires_at: link.expires_at,
        }),
    ))
}

/// The list's links that still work.
#[utoipa::path(get, path = "/v1/lists/{list_id}/read-only-tokens", tag = "lists",
    security(("bearer" = [])),
    params(("list_id" = Uuid, Path)),
    responses(
        (status = 200, body = LinkList),
        (status = 404, description = "No such list, deleted, or not a member", body = ErrorBody),
    ))]
pub async fn list_links(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(list_id): ApiPath<Uuid>,
) -> Result<Json<LinkList>, ApiError> {
    live_list(&state, list_id, &caller).await?;
    let links = state.directory.read_only_links(list_id).await?;
    Ok(Json(LinkList {
        tokens: links.into_iter().map(LinkView::from).collect(),
    }))
}

/// Revokes a link: it stops syncing at once, on every replica.
#[utoipa::path(delete, path = "/v1/lists/{list_id}/read-only-tokens/{token_id}", tag = "lists",
    security(("bearer" = [])),
    params(("list_id" = Uuid, Path), ("token_id" = Uuid, Path)),
    responses(
        (status = 204, description = "Revoked (or revoked already)"),
        (status = 404, description = "No such link on this list, or not a member", body = ErrorBody),
    ))]
pub async fn revoke_link(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((list_id, token_id)): ApiPath<(Uuid, Uuid)>,
) -> Result<StatusCode, ApiError> {
    live_list(&state, list_id, &caller).await?;
    state.limit_writes(&caller).await?;
    state
        .directory
        .revoke_read_only_link(list_id, token_id)
        .await?
        .ok_or(ApiError::NotFound)?;
    tracing::info!(%list_id, link = %token_id, "read-only link revoked");
    state.rooms.revoke_link(list_id, token_id).await;
    Ok(StatusCode::NO_CONTENT)
}
