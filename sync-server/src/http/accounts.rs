//! Accounts: sign-up, login, refresh-token rotation, logout, `GET /v1/me`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use larder_storage::directory::{Rotation, User};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::check;
use super::extract::{ApiJson, Caller, ClientIp, Validate};
use super::views::FamilyView;
use crate::app::AppState;
use crate::auth::password;
use crate::auth::tokens::{hash_secret, random_token};
use crate::error::{ApiError, ErrorBody};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/auth/signup", post(signup))
        .route("/v1/auth/login", post(login))
        .route("/v1/auth/refresh", post(refresh))
        .route("/v1/auth/logout", post(logout))
        .route("/v1/me", get(me))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignupRequest {
    /// Unique, case-insensitively.
    #[schema(example = "ann@example.com")]
    pub email: String,
    /// 8 to 128 characters.
    pub password: String,
    /// 1 to 100 characters.
    pub display_name: String,
}

impl Validate for SignupRequest {
    fn validate(&self) -> Result<(), String> {
        check::email(&self.email)?;
        check::password(&self.password)?;
        check::name("display_name", &self.display_name, 100)
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub email: String,
    pub password: String,
}

impl Validate for LoginRequest {
    fn validate(&self) -> Result<(), String> {
        if self.email.is_empty() || self.email.len() > 254 {
            return Err("email must be 1 to 254 characters".to_owned());
        }
        if self.password.is_empty() || self.password.chars().count() > 128 {
            return Err("password must be 1 to 128 characters".to_owned());
        }
        Ok(())
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    pub refresh_token: String,
}

impl Validate for RefreshRequest {
    fn validate(&self) -> Result<(), String> {
        if self.refresh_token.is_empty() || self.refresh_token.len() > 512 {
            return Err("refresh_token must be 1 to 512 characters".to_owned());
        }
        Ok(())
    }
}

/// A user as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserView {
    pub id: Uuid,
    pub email: String,
    pub display_name: String,
    pub created_at: DateTime<Utc>,
}

impl From<User> for UserView {
    fn from(u: User) -> Self {
        UserView {
            id: u.id,
            email: u.email,
            display_name: u.display_name,
            created_at: u.created_at,
        }
    }
}

/// Tokens of a signed-in user.
#[derive(Debug, Serialize, ToSchema)]
pub struct Session {
    pub user: UserView,
    /// Short-lived JWT: `Authorization: Bearer` on REST, `?token=` on the sync socket.
    pub access_token: String,
    pub access_token_expires_at: DateTime<Utc>,
    /// One-time token for `POST /v1/auth/refresh`; each use returns a new one.
    pub refresh_token: String,
    pub refresh_token_expires_at: DateTime<Utc>,
    #[schema(example = "Bearer")]
    pub token_type: &'static str,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Me {
    pub user: UserView,
    pub families: Vec<FamilyView>,
}

/// A fresh refresh token and when it expires.
fn new_refresh_token(state: &AppState) -> Result<(String, DateTime<Utc>), ApiError> {
    let expires = Utc::now()
        + chrono::Duration::from_std(state.config.auth.refresh_token_ttl())
            .map_err(|e| ApiError::Internal(e.into()))?;
    Ok((random_token(32), expires))
}

async fn new_session(state: &AppState, user: User) -> Result<Session, ApiError> {
    let (refresh_token, refresh_expires) = new_refresh_token(state)?;
    state
        .directory
        .insert_refresh_token(user.id, &hash_secret(&refresh_token), refresh_expires)
        .await?;
    Ok(session(state, user, refresh_token, refresh_expires))
}

fn session(
    state: &AppState,
    user: User,
    refresh_token: String,
    refresh_token_expires_at: DateTime<Utc>,
) -> Session {
    let (access_token, access_token_expires_at) = state
        .tokens
        .issue(user.id, state.config.auth.access_token_ttl());
    Session {
        user: user.into(),
        access_token,
        access_token_expires_at,
        refresh_token,
        refresh_token_expires_at,
        token_type: "Bearer",
    }
}

/// Creates an account and signs it in.
#[utoipa::path(post, path = "/v1/auth/signup", tag = "accounts", request_body = SignupRequest,
    responses(
        (status = 201, description = "Account created", body = Session),
        (status = 409, description = "Email taken", body = ErrorBody),
        (status = 422, description = "Invalid body", body = ErrorBody),
        (status = 429, description = "Rate limited", body = ErrorBody),
        (status = 503, description = "Too many sign-ins at once; Retry-After says when to retry", body = ErrorBody),
    ))]
async fn signup(
    State(state): State<AppState>,
    ip: ClientIp,
    body: ApiJson<SignupRequest>,
) -> Result<(StatusCode, Json<Session>), ApiError> {
    state.limit_auth(ip).await?;
    let SignupRequest {
        email,
        password,
        display_name,
    } = body.value;
    // Kept lower-cased (all of Unicode, not only ASCII) so that both
    // databases find and compare it the same way.
    let email = email.to_lowercase();
    if email.chars().count() > 254 {
        return Err(ApiError::invalid("email must be at most 254 characters"));
    }
    let hash = password::hash(password).await?;
    let user = state
        .directory
        .create_user(&email, &display_name, &hash)
        .await?
        .ok_or_else(|| ApiError::conflict("email_taken", "an account with this email exists"))?;
    tracing::info!(user_id = %user.id, "account created");
    Ok((StatusCode::CREATED, Json(new_session(&state, user).await?)))
}

/// Signs in with email and password.
#[utoipa::path(post, path = "/v1/auth/login", tag = "accounts", request_body = LoginRequest,
    responses(
        (status = 200, description = "Signed in", body = Session),
        (status = 401, description = "Wrong email or password", body = ErrorBody),
        (status = 429, description = "Too many attempts", body = ErrorBody),
        (status = 503, description = "Too many sign-ins at once; Retry-After says when to retry", body = ErrorBody),
    ))]
async fn login(
    State(state): State<AppState>,
    ip: ClientIp,
    body: ApiJson<LoginRequest>,
) -> Result<Json<Session>, ApiError> {
    state.limit_auth(ip).await?;
    let LoginRequest { email, password } = body.value;
    // Per account too: guessing one account's password from many
    // addresses is limited as well.
    state
        .rate_limit(
            &format!("login:{}", email.to_lowercase()),
            state.config.rate_limits.login_per_minute,
        )
        .await?;
    let user = state.directory.user_by_email(&email.to_lowercase()).await?;
    let stored = user.as_ref().map(|u| u.password_hash.clone());
    if !password::verify(password, stored).await? {
        metrics::counter!("larder_login_failures_total").increment(1);
        return Err(ApiError::unauthorized(
            "invalid_credentials",
            "wrong email or password",
        ));
    }
    let user = user.expect("a password matched, so the account exists");
    Ok(Json(new_session(&state, user).await?))
}

/// Trades a refresh token for new tokens. Each refresh token works once;
/// presenting a spent one revokes every token of that sign-in.
#[utoipa::path(post, path = "/v1/auth/refresh", tag = "accounts", request_body = RefreshRequest,
    responses(
        (status = 200, description = "New tokens", body = Session),
        (status = 401, description = "Unknown, expired, revoked or reused refresh token", body = ErrorBody),
    ))]
async fn refresh(
    State(state): State<AppState>,
    ip: ClientIp,
    body: ApiJson<RefreshRequest>,
) -> Result<Json<Session>, ApiError> {
    state.limit_auth(ip).await?;
    let (_, new_expires) = new_refresh_token(&state)?;
    // Derived from the old token: a retry within the grace period gets it again.
    let new_token = state
        .tokens
        .successor_refresh_token(&body.value.refresh_token);
    let rotation = state
        .directory
        .rotate_refresh_token(
            &hash_secret(&body.value.refresh_token),
            &hash_secret(&new_token),
            new_expires,
            state.config.auth.refresh_grace(),
        )
        .await?;
    let (user_id, new_expires) = match rotation {
        Rotation::Rotated { user_id } => (user_id, new_expires),
        Rotation::Replayed {
            user_id,
            expires_at,
        } => {
            metrics::counter!("larder_refresh_token_replays_total").increment(1);
            (user_id, expires_at)
        }
        Rotation::Reused => {
            tracing::warn!("a spent refresh token was presented; its sign-in is revoked");
            metrics::counter!("larder_refresh_token_reuse_total").increment(1);
            return Err(ApiError::unauthorized(
                "refresh_token_reused",
                "this refresh token was used before; sign in again",
            ));
        }
        Rotation::Expired => {
            return Err(ApiError::unauthorized(
                "refresh_token_expired",
                "the refresh token expired; sign in again",
            ));
        }
        Rotation::Unknown => {
            return Err(ApiError::unauthorized(
                "refresh_token_invalid",
                "unknown refresh token",
            ));
        }
    };
    let user =
        state.directory.user_by_id(user_id).await?.ok_or_else(|| {
            ApiError::unauthorized("refresh_token_invalid", "the account is gone")
        })?;
    Ok(Json(session(&state, user, new_token, new_expires)))
}

/// Signs out: the refresh token and every token rotated from it stop
/// working. Access tokens already issued stay valid until they expire.
#[utoipa::path(post, path = "/v1/auth/logout", tag = "accounts", request_body = RefreshRequest,
    responses((status = 204, description = "Signed out (also when the token was unknown)")))]
async fn logout(
    State(state): State<AppState>,
    ip: ClientIp,
    body: ApiJson<RefreshRequest>,
) -> Result<StatusCode, ApiError> {
    state.limit_auth(ip).await?;
    state
        .directory
        .revoke_refresh_token(&hash_secret(&body.value.refresh_token))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The signed-in user and their families.
#[utoipa::path(get, path = "/v1/me", tag = "accounts", security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller", body = Me),
        (status = 401, description = "No or bad token", body = ErrorBody),
    ))]
async fn me(State(state): State<AppState>, caller: Caller) -> Result<Json<Me>, ApiError> {
    let user = state
        .directory
        .user_by_id(caller.user_id)
        .await?
        .ok_or_else(|| ApiError::unauthorized("token_invalid", "the account is gone"))?;
    let families = state.directory.families_of(caller.user_id).await?;
    Ok(Json(Me {
        user: user.into(),
        families: families.into_iter().map(FamilyView::from).collect(),
    }))
}
