//! The axum application: shared state and the merged router.

use std::sync::Arc;

use axum::Router;
use larder_storage::Store;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::rooms::Rooms;
use crate::routes;

/// Handles shared by every request.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub store: Arc<dyn Store>,
    pub rooms: Rooms,
    pub tracker: TaskTracker,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(routes::health::router())
        .merge(routes::sync::router())
        .fallback(|| async { crate::error::ApiError::NotFound })
        .with_state(state)
}
