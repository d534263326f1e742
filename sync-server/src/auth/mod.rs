//! Who may do what: passwords ([`password`]), access tokens ([`tokens`]),
//! and the check that admits a sync socket to a list.
//!
//! Members of a family (any role) read and write its lists; a read-only
//! token (a vendor link) reads the one list it names for as long as its
//! issuer is a member and its link is neither revoked nor expired.
//! Whoever may not see a list is told it does not exist.

pub mod password;
pub mod tokens;

use chrono::{DateTime, Utc};
use larder_storage::directory::Directory;
use uuid::Uuid;

use crate::close::{self, CloseReason};
use tokens::{Scope, TokenError, TokenKeys};

/// What a connection may do with a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// May read and write.
    ReadWrite,
    /// May sync but not change anything (vendor links).
    ReadOnly,
}

impl Access {
    pub fn is_read_only(self) -> bool {
        self == Access::ReadOnly
    }
}

/// What a sync socket was granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketGrant {
    pub access: Access,
    /// The account the socket speaks for (a read-only token's issuer).
    pub user_id: Uuid,
    /// When the token expires: the socket is closed then.
    pub expires_at: DateTime<Utc>,
    /// The link a read-only token stands for.
    pub link_id: Option<Uuid>,
}

/// Checks again, while a socket is open, that its user may still see the
/// list. Revocations travel through the relay, which is best effort; this
/// check catches one it lost, and one that raced with the socket's join.
#[derive(Debug, Clone)]
pub struct AccessCheck {
    directory: Directory,
    list_id: Uuid,
    user_id: Uuid,
    link_id: Option<Uuid>,
}

impl AccessCheck {
    pub fn new(directory: Directory, list_id: Uuid, user_id: Uuid, link_id: Option<Uuid>) -> Self {
        AccessCheck {
            directory,
            list_id,
            user_id,
            link_id,
        }
    }

    /// `Err` with the close reason when access is gone. A database that
    /// does not answer keeps the socket open: the next check decides.
    pub async fn check(&self) -> Result<(), CloseReason> {
        if let Some(link) = self.link_id {
            match self
                .directory
                .read_only_link_is_live(self.list_id, link)
                .await
            {
                Ok(true) => {}
                Ok(false) => return Err(link_revoked()),
                Err(e) => {
                    tracing::debug!(error = %e, "cannot re-check a link; keeping the socket");
                }
            }
        }
        match self.directory.list_access(self.list_id, self.user_id).await {
            Ok(Some(access)) if !access.is_deleted => Ok(()),
            Ok(Some(_)) => Err(CloseReason::new(close::NOT_FOUND, "list deleted")),
            Ok(None) => Err(CloseReason::new(
                close::FORBIDDEN,
                "access to this list was revoked",
            )),
            Err(e) => {
                tracing::debug!(error = %e, "cannot re-check list access; keeping the socket");
                Ok(())
            }
        }
    }
}

/// Decides whether a socket bearing `token` may sync `list_id`, or the
/// close code and reason it gets.
pub async fn authorize_socket(
    keys: &TokenKeys,
    directory: &Directory,
    token: Option<&str>,
    list_id: Uuid,
) -> Result<SocketGrant, CloseReason> {
    let Some(token) = token.filter(|t| !t.is_empty()) else {
        return Err(CloseReason::new(
            close::UNAUTHORIZED,
            "token required: pass ?token= or Authorization: Bearer",
        ));
    };
    let claims = keys.verify(token).map_err(|e| {
        CloseReason::new(
            close::UNAUTHORIZED,
            match e {
                TokenError::Expired => "token expired: refresh it and reconnect",
                TokenError::Invalid => "token invalid",
            },
        )
    })?;
    let not_found = || CloseReason::new(close::NOT_FOUND, "list not found");
    let unavailable = |e: sqlx::Error| {
        tracing::warn!(error = %e, "cannot check list access");
        CloseReason::new(close::TRY_AGAIN_LATER, "storage unavailable")
    };
    let (access, link_id) = match claims.scope {
        Scope::Full => (Access::ReadWrite, None),
        Scope::Read if claims.list == Some(list_id) => {
            // Links issued before links had ids cannot be revoked: refused.
            let Some(link) = claims.jti else {
                return Err(CloseReason::new(
                    close::UNAUTHORIZED,
                    "this link is outdated: ask the family for a new one",
                ));
            };
            if !directory
                .read_only_link_is_live(list_id, link)
                .await
                .map_err(unavailable)?
            {
                return Err(link_revoked());
            }
            (Access::ReadOnly, Some(link))
        }
        Scope::Read => return Err(not_found()),
    };
    let membership = directory
        .list_access(list_id, claims.sub)
        .await
        .map_err(unavailable)?;
    match membership {
        None => Err(not_found()),
        Some(m) if m.is_deleted => Err(CloseReason::new(close::NOT_FOUND, "list deleted")),
        Some(_) => Ok(SocketGrant {
            access,
            user_id: claims.sub,
            expires_at: claims.expires_at(),
            link_id,
        }),
    }
}

/// The close reason of a socket whose link was revoked (or expired).
pub fn link_revoked() -> CloseReason {
    CloseReason::new(close::FORBIDDEN, "this link was revoked")
}
