//! Invitations: admins issue one-time, expiring codes; whoever holds one
//! joins the family.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use larder_storage::directory::Acceptance;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::access::{admin_required, require_admin, require_member};
use super::extract::{ApiJson, ApiPath, Caller, ClientIp, Validate};
use super::views::{FamilyView, Role};
use crate::app::AppState;
use crate::auth::tokens::{hash_secret, random_token};
use crate::error::{ApiError, ErrorBody};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/families/{family_id}/invitations", post(invite))
        .route("/v1/invitations/{code}/accept", post(accept))
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
