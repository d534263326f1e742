//! The axum application: shared state and the merged router.

use std::sync::Arc;

use axum::Router;
use larder_storage::Store;
use larder_storage::directory::Directory;
use tokio_util::task::TaskTracker;

use crate::auth::tokens::TokenKeys;
use crate::config::Config;
use crate::ratelimit::RateLimiter;
use crate::rooms::Rooms;

/// Handles shared by every request.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub store: Arc<dyn Store>,
    pub rooms: Rooms,
    pub tracker: TaskTracker,
    /// Accounts, families, list rows.
    pub directory: Directory,
    pub tokens: Arc<TokenKeys>,
    pub limiter: RateLimiter,
    /// The relational projection of list documents.
    pub projections: larder_storage::projection::Projections,
    /// Vendors and their shares.
    pub vendors: larder_storage::vendors::Vendors,
    /// The WhatsApp outbox and what WhatsApp reports.
    pub outbox: larder_storage::outbox::Outbox,
    /// Wakes this replica's outbox worker when a share is created.
    pub outbox_wake: Arc<tokio::sync::Notify>,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(crate::http::router())
        // Everything else is the web app (never under /v1).
        .fallback(crate::web::serve)
        .method_not_allowed_fallback(|| async {
            crate::error::ApiError::new(
                axum::http::StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this route does not take that method",
            )
        })
        .with_state(state)
}
