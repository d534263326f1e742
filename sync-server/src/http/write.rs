//! Writes through a list's document from REST: the HTTP answer to a failed
//! write, and `?wait=projected`.

use std::time::Duration;

use axum::http::StatusCode;
use larder_storage::SeqRange;
use serde::Deserialize;
use utoipa::IntoParams;
use uuid::Uuid;

use crate::app::AppState;
use crate::error::ApiError;
use crate::rooms::write::WriteError;

/// How long `?wait=projected` waits.
const WAIT_LIMIT: Duration = Duration::from_secs(10);

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct WriteQuery {
    /// `projected`: answer once the relational rows reflect the write.
    pub wait: Option<String>,
}

impl WriteQuery {
    pub fn wants_projection(&self) -> Result<bool, ApiError> {
        match self.wait.as_deref() {
            None => Ok(false),
            Some("projected") => Ok(true),
            Some(_) => Err(ApiError::bad_request(
                "invalid_query",
                "wait must be `projected`",
            )),
        }
    }
}

/// The HTTP answer to a failed document write.
pub fn write_error(e: WriteError) -> ApiError {
    match e {
        WriteError::NotFound => ApiError::NotFound,
        WriteError::Missing(message) => ApiError::new(StatusCode::NOT_FOUND, "not_found", message),
        WriteError::Invalid(message) => ApiError::invalid(message),
        WriteError::Conflict(message) => ApiError::conflict("conflict", message),
        WriteError::Damaged(message) => ApiError::Internal(anyhow::anyhow!(message)),
        WriteError::Storage(e) => {
            tracing::warn!(error = %e, "cannot write the document");
            ApiError::Unavailable
        }
    }
}

/// Waits until the list's rows reflect `range` (when asked to); the status
/// becomes 202 when they do not within [`WAIT_LIMIT`].
pub async fn settle(
    state: &AppState,
    list_id: Uuid,
    range: Option<SeqRange>,
    wait: bool,
    done: StatusCode,
) -> Result<StatusCode, ApiError> {
    let Some(range) = range.filter(|_| wait) else {
        return Ok(done);
    };
    let deadline = tokio::time::Instant::now() + WAIT_LIMIT;
    loop {
        if state
            .projections
            .projected_seq(list_id)
            .await?
            .is_some_and(|seq| seq >= range.last)
        {
            return Ok(done);
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(StatusCode::ACCEPTED);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
