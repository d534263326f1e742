//! Families, their members and invitations. Any member reads; admins
//! rename the family, manage members and invite. A family always keeps at
//! least one admin.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use larder_storage::directory::{
    Acceptance, Created, Family, IdempotencyRecord, Member, MemberChange,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{ApiJson, ApiPath, Caller, ClientIp, Validate, body_hash, check, idempotency_key};
use crate::app::AppState;
use crate::auth::tokens::{hash_secret, random_token};
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
        .route("/v1/families/{family_id}/invitations", post(invite))
        .route("/v1/invitations/{code}/accept", post(accept))
}

/// A role in a family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Admin,
    Member,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Member => "member",
        }
    }
    fn parse(text: &str) -> Role {
        if text == "admin" {
            Role::Admin
        } else {
            Role::Member
        }
    }
}

/// A family, with the caller's role in it.
#[derive(Debug, Serialize, ToSchema)]
pub struct FamilyView {
    pub id: Uuid,
    pub name: String,
    pub role: Role,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<Family> for FamilyView {
    fn from(f: Family) -> Self {
        FamilyView {
            id: f.id,
            name: f.name,
            role: Role::parse(&f.role),
            created_at: f.created_at,
            updated_at: f.updated_at,
        }
    }
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

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InvitationRequest {
    /// Role the invitee gets (default `member`).
    #[serde(default)]
    pub role: Option<Role>,
}

impl Validate for InvitationRequest {
    fn validate(&self) -> Result<(), String> {
        Ok(())
    }
}

/// A one-time invitation code; only its hash is stored, so it is shown once.
#[derive(Debug, Serialize, ToSchema)]
pub struct InvitationView {
    pub code: String,
    pub family_id: Uuid,
    pub role: Role,
    pub expires_at: DateTime<Utc>,
}

/// The caller's membership of `family_id`; 404 when they are not a member
/// (whether or not the family exists).
pub async fn require_member(
    state: &AppState,
    family_id: Uuid,
    caller: &Caller,
) -> Result<Family, ApiError> {
    state
        .directory
        .family_for(family_id, caller.user_id)
        .await?
        .ok_or(ApiError::NotFound)
}

fn require_admin(family: &Family) -> Result<(), ApiError> {
    if family.role == "admin" {
        Ok(())
    } else {
        Err(admin_required())
    }
}

fn admin_required() -> ApiError {
    ApiError::forbidden("admin_required", "only a family admin may do this")
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

/// Creates a one-time invitation code (admins). It expires after
/// `--invitation-ttl-hours`.
#[utoipa::path(post, path = "/v1/families/{family_id}/invitations", tag = "families",
    security(("bearer" = [])),
    params(("family_id" = Uuid, Path)), request_body = InvitationRequest,
    responses(
        (status = 201, body = InvitationView),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 404, description = "Not a member", body = ErrorBody),
    ))]
async fn invite(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(family_id): ApiPath<Uuid>,
    body: ApiJson<InvitationRequest>,
) -> Result<(StatusCode, Json<InvitationView>), ApiError> {
    let family = require_member(&state, family_id, &caller).await?;
    require_admin(&family)?;
    state.limit_writes(&caller).await?;
    let role = body.value.role.unwrap_or(Role::Member);
    let code = random_token(16);
    let expires_at = Utc::now()
        + chrono::Duration::from_std(state.config.auth.invitation_ttl())
            .map_err(|e| ApiError::Internal(e.into()))?;
    state
        .directory
        .create_invitation(
            family_id,
            &hash_secret(&code),
            role.as_str(),
            caller.user_id,
            expires_at,
        )
        .await?
        // Demoted or removed since the check above.
        .ok_or_else(admin_required)?;
    Ok((
        StatusCode::CREATED,
        Json(InvitationView {
            code,
            family_id,
            role,
            expires_at,
        }),
    ))
}

/// Joins a family with an invitation code; the code is spent.
#[utoipa::path(post, path = "/v1/invitations/{code}/accept", tag = "families",
    security(("bearer" = [])),
    params(("code" = String, Path)),
    responses(
        (status = 200, description = "Joined", body = FamilyView),
        (status = 404, description = "Unknown code", body = ErrorBody),
        (status = 409, description = "Already a member", body = ErrorBody),
        (status = 410, description = "Expired or used", body = ErrorBody),
    ))]
async fn accept(
    State(state): State<AppState>,
    caller: Caller,
    ip: ClientIp,
    ApiPath(code): ApiPath<String>,
) -> Result<Json<FamilyView>, ApiError> {
    state.limit_auth(ip).await?;
    state.limit_writes(&caller).await?;
    if code.is_empty() || code.len() > 128 {
        return Err(ApiError::NotFound);
    }
    let family_id = match state
        .directory
        .accept_invitation(&hash_secret(&code), caller.user_id)
        .await?
    {
        Acceptance::Joined { family_id, .. } => family_id,
        Acceptance::AlreadyMember { .. } => {
            return Err(ApiError::conflict(
                "already_member",
                "you are a member of this family already",
            ));
        }
        Acceptance::Expired => {
            return Err(ApiError::new(
                StatusCode::GONE,
                "invitation_expired",
                "this invitation expired; ask for a new one",
            ));
        }
        Acceptance::Used => {
            return Err(ApiError::new(
                StatusCode::GONE,
                "invitation_used",
                "this invitation was used already",
            ));
        }
        Acceptance::Unknown => return Err(ApiError::NotFound),
    };
    Ok(Json(
        require_member(&state, family_id, &caller).await?.into(),
    ))
}
