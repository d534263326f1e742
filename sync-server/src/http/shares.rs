//! Shares: a list frozen at its current version and sent to one of the
//! family's vendors over WhatsApp. The share, its vendor link and the
//! outbox job are created in one transaction, keyed by (list, version,
//! vendor): tapping "send" again sends nothing new until the list changes.
//! Any member of the list's family shares and follows shares.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use larder_crdt::list::ListDoc;
use larder_storage::StoreError;
use larder_storage::vendors::{NewShare, Reply, Share, ShareCreated, StatusEvent};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;
use yrs::{Doc, Transact};

use super::access::{live_list, require_member, visible_list};
use super::check::text;
use super::extract::{ApiJson, ApiPath, ApiQuery, Caller, Validate};
use super::pages::{next_page, page_limit};
use crate::app::AppState;
use crate::auth::tokens::hash_secret;
use crate::error::{ApiError, ErrorBody};
use crate::snapshot::Snapshot;

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/v1/lists/{list_id}/shares",
            post(create_share).get(list_shares),
        )
        .route("/v1/shares/{share_id}", get(get_share))
        .route("/v1/shares/{share_id}/link", delete(revoke_share_link))
}

/// A status WhatsApp reported for the share's message.
#[derive(Debug, Serialize, ToSchema)]
pub struct StatusView {
    pub wamid: String,
    #[schema(example = "delivered")]
    pub status: String,
    pub at: DateTime<Utc>,
    pub error_code: Option<i32>,
    pub error_title: Option<String>,
}

impl From<StatusEvent> for StatusView {
    fn from(e: StatusEvent) -> Self {
        StatusView {
            wamid: e.wamid,
            status: e.status,
            at: e.occurred_at,
            error_code: e.error_code,
            error_title: e.error_title,
        }
    }
}

/// A message the vendor sent back.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReplyView {
    pub id: Uuid,
    /// `text`, `button`, or another WhatsApp message type.
    pub kind: String,
    pub body: Option<String>,
    pub sender_name: Option<String>,
    pub received_at: DateTime<Utc>,
}

impl From<Reply> for ReplyView {
    fn from(r: Reply) -> Self {
        ReplyView {
            id: r.id,
            kind: r.kind,
            body: r.body,
            sender_name: r.sender_name,
            received_at: r.received_at,
        }
    }
}

/// Why a share failed.
#[derive(Debug, Serialize, ToSchema)]
pub struct ShareError {
    /// The WhatsApp error code, when WhatsApp gave one.
    pub code: Option<i32>,
    pub message: String,
}

/// A share with its history.
#[derive(Debug, Serialize, ToSchema)]
pub struct ShareView {
    pub id: Uuid,
    pub list_id: Uuid,
    pub vendor_id: Uuid,
    pub vendor_name: Option<String>,
    pub shared_by: Option<Uuid>,
    /// The snapshot's version, e.g. `v42`.
    pub version: String,
    /// `pending`, `sent`, `delivered`, `read` or `failed`.
    #[schema(example = "delivered")]
    pub status: String,
    /// Why a pending share waits (sending off, rate limits, retries).
    pub detail: Option<String>,
    pub error: Option<ShareError>,
    pub note: Option<String>,
    /// The vendor's page: `GET /s/{token}`.
    pub link: Option<String>,
    pub link_expires_at: Option<DateTime<Utc>>,
    pub link_revoked_at: Option<DateTime<Utc>>,
    /// A read-only token that syncs the live list (`GET /v1/sync/{list_id}`)
    /// while the link works.
    pub sync_token: Option<String>,
    pub snapshot: Snapshot,
    /// Statuses in the order they happened.
    pub statuses: Vec<StatusView>,
    pub replies: Vec<ReplyView>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SharePage {
    pub shares: Vec<ShareView>,
    /// Pass as `cursor` for the next (older) page; absent on the last page.
    pub next_cursor: Option<Uuid>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateShareRequest {
    /// A vendor of the list's family.
    pub vendor_id: Uuid,
    /// A note for the vendor, up to 500 characters.
    #[serde(default)]
    pub note: Option<String>,
}

impl Validate for CreateShareRequest {
    fn validate(&self) -> Result<(), String> {
        text("note", &self.note)
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ShareQuery {
    /// Page size, 1 to 200 (default 50).
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<Uuid>,
}

/// A share as the family sees it, with its statuses and replies; its
/// link on `base`.
async fn share_view(
    state: &AppState,
    share: Share,
    base: Option<&str>,
) -> Result<ShareView, ApiError> {
    let snapshot: Snapshot = serde_json::from_str(&share.snapshot)
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("share {} snapshot: {e}", share.id)))?;
    let statuses = state.vendors.share_statuses(share.id).await?;
    let replies = state.vendors.share_replies(share.id).await?;
    let vendor_name = state.vendors.vendor(share.vendor_id).await?.map(|v| v.name);
    let working =
        share.link_revoked_at.is_none() && share.link_expires_at.is_some_and(|at| at > Utc::now());
    let sync_token = match (share.link_id, share.link_expires_at, share.shared_by) {
        (Some(link), Some(expires), Some(by)) if working => Some(state.tokens.issue_read_only(
            by,
            share.list_id,
            link,
            expires,
        )),
        _ => None,
    };
    Ok(ShareView {
        id: share.id,
        list_id: share.list_id,
        vendor_id: share.vendor_id,
        vendor_name,
        shared_by: share.shared_by,
        version: snapshot.version.clone(),
        status: share.status,
        detail: share.detail,
        error: share.error_message.map(|message| ShareError {
            code: share.error_code,
            message,
        }),
        note: share.note,
        link: base.map(|b| format!("{b}/s/{}", state.tokens.share_page_token(share.id))),
        link_expires_at: share.link_expires_at,
        link_revoked_at: share.link_revoked_at,
        sync_token,
        snapshot,
        statuses: statuses.into_iter().map(StatusView::from).collect(),
        replies: replies.into_iter().map(ReplyView::from).collect(),
        created_at: share.created_at,
        updated_at: share.updated_at,
    })
}

/// Where the family's view of a vendor link points: the configured public
/// URL, else the address the request came to. (Messages to vendors only
/// ever carry the configured one.)
fn public_base(state: &AppState, headers: &HeaderMap) -> Option<String> {
    if let Some(url) = state.config.whatsapp.public_url() {
        return Some(url);
    }
    let host = headers.get(header::HOST)?.to_str().ok()?;
    let plausible = !host.is_empty()
        && host.len() <= 255
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b));
    if !plausible {
        return None;
    }
    let https = state.config.rate_limits.trust_forwarded_for
        && headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|p| p.eq_ignore_ascii_case("https"));
    Some(format!("{}://{host}", if https { "https" } else { "http" }))
}

/// Refuses a share past the family's daily allowance (`429` with the
/// time until its oldest share of the day ages out).
async fn limit_family_shares(state: &AppState, family_id: Uuid) -> Result<(), ApiError> {
    let day = chrono::Duration::hours(24);
    let (count, first) = state
        .vendors
        .family_shares_since(family_id, Utc::now() - day)
        .await?;
    let cap = i64::from(state.config.whatsapp.shares_per_family_per_day);
    if count < cap {
        return Ok(());
    }
    let retry_after = first
        .map(|at| (at + day - Utc::now()).to_std().unwrap_or_default())
        .unwrap_or(std::time::Duration::from_secs(3600));
    Err(ApiError::RateLimited { retry_after })
}

/// Freezes the list as stored now: its items and the sequence they reflect.
async fn read_list(
    state: &AppState,
    list_id: Uuid,
) -> Result<(larder_crdt::list::ListSnapshot, i64), ApiError> {
    let stored = match state.store.load_doc(list_id).await {
        Ok(stored) if stored.is_deleted => return Err(ApiError::NotFound),
        Ok(stored) => stored,
        Err(StoreError::ListNotFound(_)) => return Err(ApiError::NotFound),
        Err(e) => {
            tracing::warn!(error = %e, %list_id, "cannot load the list to share");
            return Err(ApiError::Unavailable);
        }
    };
    let doc = Doc::new();
    larder_crdt::state::apply_stored(&doc, stored.updates())
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("list {list_id} does not load: {e}")))?;
    let list = ListDoc::new(&doc).read(&doc.transact());
    let seq = i64::try_from(stored.head_seq).unwrap_or(i64::MAX);
    Ok((list, seq))
}

/// Sends the list, frozen as it is now, to a vendor of the family. The
/// same version shared with the same vendor again returns the first share
/// (200) and sends nothing.
#[utoipa::path(post, path = "/v1/lists/{list_id}/shares", tag = "shares", security(("bearer" = [])),
    params(("list_id" = Uuid, Path)), request_body = CreateShareRequest,
    responses(
        (status = 201, description = "Shared; the message is queued", body = ShareView),
        (status = 200, description = "This version was shared with this vendor already", body = ShareView),
        (status = 404, description = "No such list, deleted, or not a member", body = ErrorBody),
        (status = 422, description = "Not a vendor of the family, or invalid body", body = ErrorBody),
    ))]
async fn create_share(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(list_id): ApiPath<Uuid>,
    headers: HeaderMap,
    body: ApiJson<CreateShareRequest>,
) -> Result<(StatusCode, Json<ShareView>), ApiError> {
    let row = live_list(&state, list_id, &caller).await?;
    let request = body.value;
    let vendor = state
        .vendors
        .vendor(request.vendor_id)
        .await?
        .filter(|v| v.family_id == row.family_id && v.deleted_at.is_none())
        .ok_or_else(|| ApiError::invalid("vendor_id is not a vendor of this family"))?;
    state.limit_writes(&caller).await?;
    let family = require_member(&state, row.family_id, &caller).await?;
    limit_family_shares(&state, row.family_id).await?;
    let (list, seq) = read_list(&state, list_id).await?;
    let id = Uuid::now_v7();
    let token = state.tokens.share_page_token(id);
    let list_name = list.meta.name.clone().unwrap_or_else(|| row.name.clone());
    let note = request.note.filter(|n| !n.trim().is_empty());
    let snapshot = Snapshot::freeze(&list, &family.name, &list_name, seq, note.clone());
    let hours = state.config.whatsapp.share_link_hours();
    let created = state
        .vendors
        .create_share(&NewShare {
            id,
            list_id,
            vendor_id: vendor.id,
            shared_by: caller.user_id,
            snapshot_seq: seq,
            snapshot: serde_json::to_string(&snapshot).map_err(|e| ApiError::Internal(e.into()))?,
            rendered_text: snapshot.render_text(
                state
                    .config
                    .whatsapp
                    .public_url()
                    .map(|base| format!("{base}/s/{token}"))
                    .as_deref(),
            ),
            note,
            page_token_hash: hash_secret(&token),
            link_expires_at: Utc::now() + chrono::Duration::hours(hours),
            detail: state.config.whatsapp.disabled_reason().map(str::to_owned),
        })
        .await?;
    let base = public_base(&state, &headers);
    match created {
        ShareCreated::New(share) => {
            tracing::info!(share_id = %share.id, %list_id, version = %snapshot.version, "list shared");
            state.outbox_wake.notify_one();
            let view = share_view(&state, share, base.as_deref()).await?;
            Ok((StatusCode::CREATED, Json(view)))
        }
        ShareCreated::Exists(share) => {
            if share.status == "pending" {
                state.outbox_wake.notify_one();
            }
            let view = share_view(&state, share, base.as_deref()).await?;
            Ok((StatusCode::OK, Json(view)))
        }
    }
}

/// The list's shares, newest first, with their statuses and replies.
#[utoipa::path(get, path = "/v1/lists/{list_id}/shares", tag = "shares", security(("bearer" = [])),
    params(("list_id" = Uuid, Path), ShareQuery),
    responses(
        (status = 200, body = SharePage),
        (status = 404, description = "No such list, or not a member", body = ErrorBody),
    ))]
async fn list_shares(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(list_id): ApiPath<Uuid>,
    ApiQuery(query): ApiQuery<ShareQuery>,
    headers: HeaderMap,
) -> Result<Json<SharePage>, ApiError> {
    visible_list(&state, list_id, &caller).await?;
    let limit = page_limit(query.limit)?;
    let mut rows = state
        .vendors
        .list_shares(list_id, query.cursor, limit + 1)
        .await?;
    let next_cursor = next_page(&mut rows, limit, |s| s.id);
    let base = public_base(&state, &headers);
    let mut shares = Vec::with_capacity(rows.len());
    for share in rows {
        shares.push(share_view(&state, share, base.as_deref()).await?);
    }
    Ok(Json(SharePage {
        shares,
        next_cursor,
    }))
}

/// The share if the caller may see its list.
async fn visible_share(
    state: &AppState,
    share_id: Uuid,
    caller: &Caller,
) -> Result<Share, ApiError> {
    let share = state
        .vendors
        .share(share_id)
        .await?
        .ok_or(ApiError::NotFound)?;
    visible_list(state, share.list_id, caller).await?;
    Ok(share)
}

/// One share with its statuses and replies.
#[utoipa::path(get, path = "/v1/shares/{share_id}", tag = "shares", security(("bearer" = [])),
    params(("share_id" = Uuid, Path)),
    responses(
        (status = 200, body = ShareView),
        (status = 404, description = "No such share, or not a member", body = ErrorBody),
    ))]
async fn get_share(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(share_id): ApiPath<Uuid>,
    headers: HeaderMap,
) -> Result<Json<ShareView>, ApiError> {
    let share = visible_share(&state, share_id, &caller).await?;
    let base = public_base(&state, &headers);
    Ok(Json(share_view(&state, share, base.as_deref()).await?))
}

/// Revokes the share's vendor link: its page and its sync token stop at
/// once, on every replica.
#[utoipa::path(delete, path = "/v1/shares/{share_id}/link", tag = "shares", security(("bearer" = [])),
    params(("share_id" = Uuid, Path)),
    responses(
        (status = 204, description = "Revoked"),
        (status = 404, description = "No such share or link, or not a member", body = ErrorBody),
    ))]
async fn revoke_share_link(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(share_id): ApiPath<Uuid>,
) -> Result<StatusCode, ApiError> {
    let share = visible_share(&state, share_id, &caller).await?;
    let link = share.link_id.ok_or(ApiError::NotFound)?;
    state.limit_writes(&caller).await?;
    state
        .directory
        .revoke_read_only_link(share.list_id, link)
        .await?
        .ok_or(ApiError::NotFound)?;
    state.rooms.revoke_link(share.list_id, link).await;
    Ok(StatusCode::NO_CONTENT)
}
