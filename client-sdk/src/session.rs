//! The signed-in session: tokens from the REST API, kept in the data
//! directory (`session.json`, mode 0600) so an app restart stays signed
//! in. The access token is refreshed shortly before it expires, and on
//! demand when the server says it expired (close code 4440); each refresh
//! token works once, so the new one is on disk before it is used.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::Method;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use uuid::Uuid;

use crate::rest::{Rest, RestError};

/// Tokens of a signed-in user, as stored.
#[derive(Clone, Serialize, Deserialize)]
pub struct Session {
    pub user_id: Uuid,
    pub email: String,
    pub display_name: String,
    pub access_token: String,
    pub access_token_expires_at: DateTime<Utc>,
    pub refresh_token: String,
    pub refresh_token_expires_at: DateTime<Utc>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("user_id", &self.user_id)
            .field("email", &self.email)
            .field("access_token_expires_at", &self.access_token_expires_at)
            .finish_non_exhaustive()
    }
}

/// Why there is no usable access token.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuthError {
    /// Nobody is signed in, or the server refused the refresh token (signed
    /// out elsewhere, expired, revoked): sign in again.
    #[error("signed out: {0}")]
    SignedOut(String),
    /// The server could not be asked; try again later.
    #[error("{0}")]
    Unreachable(RestError),
    #[error("cannot keep the session on the device: {0}")]
    Storage(String),
}

/// The server's answer to sign-up, sign-in and refresh.
#[derive(Deserialize)]
struct SessionBody {
    user: UserBody,
    access_token: String,
    access_token_expires_at: DateTime<Utc>,
    refresh_token: String,
    refresh_token_expires_at: DateTime<Utc>,
}

#[derive(Deserialize)]
struct UserBody {
    id: Uuid,
    email: String,
    display_name: String,
}

impl From<SessionBody> for Session {
    fn from(b: SessionBody) -> Session {
        Session {
            user_id: b.user.id,
            email: b.user.email,
            display_name: b.user.display_name,
            access_token: b.access_token,
            access_token_expires_at: b.access_token_expires_at,
            refresh_token: b.refresh_token,
            refresh_token_expires_at: b.refresh_token_expires_at,
        }
    }
}

/// The session manager of one client.
#[derive(Debug)]
pub(crate) struct Auth {
    path: PathBuf,
    margin: Duration,
    session: Mutex<Option<Session>>,
}

impl Auth {
    /// Reads the stored session, if any.
    pub(crate) fn open(dir: &Path, margin: Duration) -> Result<Auth, AuthError> {
        let path = dir.join("session.json");
        let session = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).ok(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(AuthError::Storage(e.to_string())),
        };
        Ok(Auth {
            path,
            margin,
            session: Mutex::new(session),
        })
    }

    pub(crate) async fn current(&self) -> Option<Session> {
        self.session.lock().await.clone()
    }

    /// Creates an account and signs in.
    pub(crate) async fn sign_up(
        &self,
        rest: &Rest,
        email: &str,
        password: &str,
        display_name: &str,
    ) -> Result<Session, RestError> {
        let body =
            serde_json::json!({"email": email, "password": password, "display_name": display_name});
        let answer: SessionBody = rest
            .call(Method::POST, "/v1/auth/signup", None, Some(&body))
            .await?;
        self.keep(answer.into()).await
    }

    /// Signs in with a password.
    pub(crate) async fn sign_in(
        &self,
        rest: &Rest,
        email: &str,
        password: &str,
    ) -> Result<Session, RestError> {
        let body = serde_json::json!({"email": email, "password": password});
        let answer: SessionBody = rest
            .call(Method::POST, "/v1/auth/login", None, Some(&body))
            .await?;
        self.keep(answer.into()).await
    }

    /// Forgets the session (on the device; local lists stay).
    pub(crate) async fn sign_out(&self, rest: &Rest) {
        let session = self.session.lock().await.take();
        if let Some(session) = session {
            let body = serde_json::json!({"refresh_token": session.refresh_token});
            let _ = rest
                .call::<serde_json::Value>(
                    Method::POST,
                    "/v1/auth/logout",
                    Some(&session.access_token),
                    Some(&body),
                )
                .await;
        }
        let _ = std::fs::remove_file(&self.path);
    }

    /// An access token good for at least the refresh margin, refreshed
    /// first when it is not.
    pub(crate) async fn access_token(&self, rest: &Rest) -> Result<Session, AuthError> {
        let mut guard = self.session.lock().await;
        let Some(session) = guard.clone() else {
            return Err(AuthError::SignedOut("nobody is signed in".into()));
        };
        let margin = chrono::Duration::from_std(self.margin).unwrap_or_default();
        if session.access_token_expires_at - margin > Utc::now() {
            return Ok(session);
        }
        let fresh = self.refresh_locked(rest, &session, &mut guard).await?;
        Ok(fresh)
    }

    /// Refreshes now, unless the token changed since `stale` was read (a
    /// refresh that raced ours already did it).
    pub(crate) async fn refresh(&self, rest: &Rest, stale: &str) -> Result<Session, AuthError> {
        let mut guard = self.session.lock().await;
        let Some(session) = guard.clone() else {
            return Err(AuthError::SignedOut("nobody is signed in".into()));
        };
        if session.access_token != stale {
            return Ok(session);
        }
        self.refresh_locked(rest, &session, &mut guard).await
    }

    async fn refresh_locked(
        &self,
        rest: &Rest,
        session: &Session,
        slot: &mut Option<Session>,
    ) -> Result<Session, AuthError> {
        let body = serde_json::json!({"refresh_token": session.refresh_token});
        let answer: Result<SessionBody, RestError> = rest
            .call(Method::POST, "/v1/auth/refresh", None, Some(&body))
            .await;
        match answer {
            Ok(answer) => {
                let fresh = Session::from(answer);
                // On disk before anything uses it: the old refresh token is
                // spent (a retry within the server's grace period returns
                // the same new one, so a crash here loses nothing). Kept in
                // memory even when the disk refuses it, since the old token
                // no longer works; the next refresh writes again.
                if let Err(e) = write_private(&self.path, &fresh) {
                    tracing::warn!(error = %e, "cannot keep the refreshed session on the device");
                }
                *slot = Some(fresh.clone());
                Ok(fresh)
            }
            Err(RestError::Api {
                status: 401,
                message,
                ..
            }) => {
                *slot = None;
                let _ = std::fs::remove_file(&self.path);
                Err(AuthError::SignedOut(message))
            }
            Err(e) => Err(AuthError::Unreachable(e)),
        }
    }

    async fn keep(&self, session: Session) -> Result<Session, RestError> {
        let mut slot = self.session.lock().await;
        write_private(&self.path, &session).map_err(|e| RestError::Api {
            status: 0,
            code: "session_not_kept".into(),
            message: e,
        })?;
        *slot = Some(session.clone());
        Ok(session)
    }
}

/// Writes the session to `path` readable by the owner only: a new file of
/// mode 0600, synced, renamed over the old one.
fn write_private(path: &Path, session: &Session) -> Result<(), String> {
    use std::io::Write;
    let bytes = serde_json::to_vec_pretty(session).expect("a session serializes");
    let tmp = path.with_extension("json.tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let write = || -> std::io::Result<()> {
        let mut file = options.open(&tmp)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    };
    write().map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_file_is_private_and_reads_back() {
        let dir = std::env::temp_dir().join(format!("larder-session-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let session = Session {
            user_id: Uuid::new_v4(),
            email: "ann@example.com".into(),
            display_name: "Ann".into(),
            access_token: "a".into(),
            access_token_expires_at: Utc::now(),
            refresh_token: "r".into(),
            refresh_token_expires_at: Utc::now(),
        };
        write_private(&dir.join("session.json"), &session).unwrap();
        write_private(&dir.join("session.json"), &session).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.join("session.json"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let auth = Auth::open(&dir, Duration::from_secs(60)).unwrap();
        let read = auth.session.try_lock().unwrap().clone().expect("kept");
        assert_eq!(read.user_id, session.user_id);
        assert!(!format!("{read:?}").contains("refresh_token:"));
        let _ = std::fs::remove_dir_all(dir);
    }
}
