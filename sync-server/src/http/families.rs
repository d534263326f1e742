//! Families and their members. Any member reads; admins rename the family
//! and manage members. A family always keeps at least one admin.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, patch, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use larder_storage::directory::{Created, Member, MemberChange};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::access::{admin_required, require_admin, require_member};
use super::check;
use super::extract::{ApiJson, ApiPath, Caller, Validate};
use super::idempotency::{created_response, idempotency_record};
use super::views::{FamilyView, Role};
use crate::app::AppState;
use crate::error::{ApiError, ErrorBody};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/families", post(create_family).get(my_families))
        .route(
            "/v1/families/{family_id}",
            get(get_family).patch(rename_family),
        )
        .route("/v1/families/{family_id}/members", get(members))
        .route(
            "/v1/families/{family_id}/members/{user_id}",
            patch(change_role).delete(remove_member),
        )
}

#[derive(Debug, Serialize, ToSchema)]
pub struct FamilyList {
    pub families: Vec<FamilyView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MemberView {
    pub user_id: Uuid,
    pub email: String,
    pub display_name: String,
    pub role: Role,
    pub joined_at: DateTime<Utc>,
}

impl From<Member> for MemberView {
    fn from(m: Member) -> Self {
        MemberView {
            user_id: m.user_id,
            email: m.email,
            display_name: m.display_name,
            role: Role::parse(&m.role),
            joined_at: m.joined_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MemberList {
    pub members: Vec<MemberView>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FamilyRequest {
    /// 1 to 100 characters.
    #[schema(example = "The Smiths")]
    pub name: String,
}

impl Validate for FamilyRequest {
    fn validate(&self) -> Result<(), String> {
        check::name("name", &self.name, 100)
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoleRequest {
    pub role: Role,
}

impl Validate for RoleRequest {
    fn validate(&self) -> Result<(), String> {
        Ok(())
    }
}

/// Creates a family; the caller becomes its admin. Honours `Idempotency-Key`.
#[utoipa::path(post, path = "/v1/families", tag = "families", security(("bearer" = [])),
    request_body = FamilyRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Retries with the same key return the first response")),
    responses(
        (status = 201, description = "Created", body = FamilyView),
        (status = 401, description = "No or bad token", body = ErrorBody),
        (status = 422, description = "Invalid body, or key reused with another body", body = ErrorBody),
    ))]
async fn create_family(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: ApiJson<FamilyRequest>,
) -> Result<Response, ApiError> {
    state.limit_writes(&caller).await?;
    let now = Utc::now();
    let id = Uuid::now_v7();
    let view = FamilyView {
        id,
        name: body.value.name.clone(),
        role: Role::Admin,
        created_at: now,
        updated_at: now,
    };
    let record = idempotency_record(
        &headers,
        &caller,
        "POST",
        "/v1/families".to_owned(),
        &body.raw,
        StatusCode::CREATED,
        &view,
    )?;
    let created = state
        .directory
        .create_family(id, &body.value.name, caller.user_id, now, record.as_ref())
        .await?;
    created_response(match created {
        Created::New(_) => Created::New(view),
        Created::Replay { status, body } => Created::Replay { status, body },
        Created::KeyReused => Created::KeyReused,
        Created::Exists => Created::Exists,
    })
}

/// The caller's families.
#[utoipa::path(get, path = "/v1/families", tag = "families", security(("bearer" = [])),
    responses((status = 200, body = FamilyList), (status = 401, body = ErrorBody)))]
async fn my_families(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<FamilyList>, ApiError> {
    let families = state.directory.families_of(caller.user_id).await?;
    Ok(Json(FamilyList {
        families: families.into_iter().map(FamilyView::from).collect(),
    }))
}

/// One of the caller's families.
#[utoipa::path(get, path = "/v1/families/{family_id}", tag = "families", security(("bearer" = [])),
    params(("family_id" = Uuid, Path)),
    responses((status = 200, body = FamilyView), (status = 404, description = "Not a member", body = ErrorBody)))]
async fn get_family(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(family_id): ApiPath<Uuid>,
) -> Result<Json<FamilyView>, ApiError> {
    Ok(Json(
        require_member(&state, family_id, &caller).await?.into(),
    ))
}

/// Renames a family (admins).
#[utoipa::path(patch, path = "/v1/families/{family_id}", tag = "families", security(("bearer" = [])),
    params(("family_id" = Uuid, Path)), request_body = FamilyRequest,
    responses(
        (status = 200, body = FamilyView),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 404, description = "Not a member", body = ErrorBody),
    ))]
async fn rename_family(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(family_id): ApiPath<Uuid>,
    body: ApiJson<FamilyRequest>,
) -> Result<Json<FamilyView>, ApiError> {
    let family = require_member(&state, family_id, &caller).await?;
    require_admin(&family)?;
    state.limit_writes(&caller).await?;
    state
        .directory
        .rename_family(family_id, &body.value.name)
        .await?;
    Ok(Json(
        require_member(&state, family_id, &caller).await?.into(),
    ))
}

/// The family's members.
#[utoipa::path(get, path = "/v1/families/{family_id}/members", tag = "families", security(("bearer" = [])),
    params(("family_id" = Uuid, Path)),
    responses((status = 200, body = MemberList), (status = 404, description = "Not a member", body = ErrorBody)))]
async fn members(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(family_id): ApiPath<Uuid>,
) -> Result<Json<MemberList>, ApiError> {
    require_member(&state, family_id, &caller).await?;
    let members = state.directory.members(family_id).await?;
    Ok(Json(MemberList {
        members: members.into_iter().map(MemberView::from).collect(),
    }))
}

/// Changes a member's role (admins). The last admin cannot be demoted.
#[utoipa::path(patch, path = "/v1/families/{family_id}/members/{user_id}", tag = "families",
    security(("bearer" = [])),
    params(("family_id" = Uuid, Path), ("user_id" = Uuid, Path)), request_body = RoleRequest,
    responses(
        (status = 200, body = MemberView),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 404, description = "No such member", body = ErrorBody),
        (status = 409, description = "The last admin", body = ErrorBody),
    ))]
async fn change_role(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((family_id, user_id)): ApiPath<(Uuid, Uuid)>,
    body: ApiJson<RoleRequest>,
) -> Result<Json<MemberView>, ApiError> {
    let family = require_member(&state, family_id, &caller).await?;
    require_admin(&family)?;
    state.limit_writes(&caller).await?;
    match state
        .directory
        .set_member_role(family_id, user_id, body.value.role.as_str(), caller.user_id)
        .await?
    {
        MemberChange::Done(Some(member)) => Ok(Json(member.into())),
        MemberChange::Done(None) | MemberChange::NotMember => Err(ApiError::NotFound),
        MemberChange::NotAdmin => Err(admin_required()),
        MemberChange::LastAdmin => Err(last_admin()),
    }
}

fn last_admin() -> ApiError {
    ApiError::conflict(
        "last_admin",
        "a family needs an admin: make someone else admin first",
    )
}

/// Removes a member (admins), or leaves the family (any member removing
/// themselves). Their open sockets on the family's lists close on every
/// replica at once.
#[utoipa::path(delete, path = "/v1/families/{family_id}/members/{user_id}", tag = "families",
    security(("bearer" = [])),
    params(("family_id" = Uuid, Path), ("user_id" = Uuid, Path)),
    responses(
        (status = 204, description = "Removed"),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 404, description = "No such member", body = ErrorBody),
        (status = 409, description = "The last admin", body = ErrorBody),
    ))]
async fn remove_member(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((family_id, user_id)): ApiPath<(Uuid, Uuid)>,
) -> Result<StatusCode, ApiError> {
    let family = require_member(&state, family_id, &caller).await?;
    if user_id != caller.user_id {
        require_admin(&family)?;
    }
    state.limit_writes(&caller).await?;
    match state
        .directory
        .remove_member(family_id, user_id, caller.user_id)
        .await?
    {
        MemberChange::Done(_) => {}
        MemberChange::NotMember => return Err(ApiError::NotFound),
        MemberChange::NotAdmin => return Err(admin_required()),
        MemberChange::LastAdmin => return Err(last_admin()),
    }
    tracing::info!(%family_id, %user_id, "member removed");
    for list_id in state.directory.family_list_ids(family_id).await? {
        state.rooms.revoke(list_id, Some(user_id)).await;
    }
    Ok(StatusCode::NO_CONTENT)
}
