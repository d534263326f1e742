//! The Larder sync server.
//!
//! A library with a thin `main.rs`: [`run`] takes a configuration, a bound
//! listener and a shutdown token, so tests start real servers in-process.
//!
//! - [`config`]: flags and environment variables.
//! - [`app`] and [`routes`]: HTTP (health, the sync endpoint); [`api`]:
//!   the REST API (accounts, families, lists, OpenAPI).
//! - [`connection`]: one WebSocket connection and its limits.
//! - [`rooms`]: one actor per open list, the group committer, compaction.
//! - [`auth`]: passwords, tokens, what a token grants on a list;
//!   [`ratelimit`]: request rate limits.
//! - [`projector`]: list documents into relational rows.
//! - [`close`]: the WebSocket close codes.
#![forbid(unsafe_code)]

pub mod app;
pub mod auth;
pub mod close;
pub mod config;
pub mod connection;
pub mod error;
pub mod http;
pub mod projector;
pub mod ratelimit;
pub mod rooms;
pub mod serve;
pub mod snapshot;
pub mod telemetry;
pub mod web;
pub mod whatsapp;

use std::sync::Arc;

use anyhow::Context;
use larder_relay::{RedisRelay, RedisRelayConfig, Relay, SoloRelay};
use larder_storage::Store;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

pub use config::Config;

/// Opens the configured database (creating it if missing) and applies
/// migrations.
pub async fn open_database(
    config: &config::DatabaseConfig,
) -> anyhow::Result<larder_storage::Database> {
    Ok(larder_storage::Database::open(&config.url(), config.db_max_connections).await?)
}

/// Deletes expired idempotency keys every hour (a retry after 24 h is a new
/// request).
fn spawn_housekeeping(
    directory: larder_storage::directory::Directory,
    shutdown: CancellationToken,
    tracker: &TaskTracker,
) {
    tracker.spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(3600));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => match directory.purge_idempotency_keys().await {
                    Ok(0) => {}
                    Ok(purged) => tracing::debug!(purged, "expired idempotency keys deleted"),
                    Err(e) => tracing::debug!(error = %e, "cannot purge idempotency keys; will try again"),
                },
            }
        }
    });
}

/// Runs the server on `listener` until `shutdown` is cancelled, then drains:
/// stops accepting, closes sockets with 1001, stores everything rooms hold.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let relay: Arc<dyn Relay> = match &config.relay.redis_url {
        Some(url) => {
            tracing::info!(relay = %format!("Redis Pub/Sub at {}", config::redact_url(url)), "relay");
            Arc::new(
                RedisRelay::start(RedisRelayConfig::new(url.as_str()))
                    .context("invalid REDIS_URL")?,
            )
        }
        None => {
            tracing::info!(relay = "in process (a single replica)", "relay");
            Arc::new(SoloRelay::default())
        }
    };
    run_with_relay(config, listener, shutdown, relay).await
}

/// [`run`] with the relay given instead of taken from the configuration
/// (replicas in one process may share one, tests may use a faulty one).
pub async fn run_with_relay(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
    relay: Arc<dyn Relay>,
) -> anyhow::Result<()> {
    let tokens = Arc::new(auth::tokens::TokenKeys::load(
        config
            .auth
            .jwt_secret
            .as_ref()
            .map(secrecy::ExposeSecret::expose_secret),
        &config.database.data_dir,
    )?);
    let limiter = ratelimit::RateLimiter::new(config.relay.redis_url.as_deref())
        .context("invalid REDIS_URL")?;
    let database = open_database(&config.database).await?;
    tracing::info!(storage = %database.describe(), "storage open");
    let directory = database.directory.clone();
    let store: Arc<dyn Store> = database.store.clone();
    let replica_id = config.relay.replica_id.unwrap_or_else(Uuid::now_v7);
    // Installed before anything records, so nothing is lost.
    let _ = telemetry::metrics();
    let tracker = TaskTracker::new();
    let committer =
        rooms::commit::Committer::spawn(store.clone(), config.rooms.commit_window(), &tracker);
    let projections = database.projections.clone();
    let projector = projector::Projector::spawn(
        store.clone(),
        projections.clone(),
        config.projector.settings(),
        shutdown.clone(),
        &tracker,
    );
    let rooms = rooms::Rooms::new(rooms::RoomContext {
        store: store.clone(),
        relay,
        committer,
        projector,
        settings: config.rooms.clone(),
        limits: config.limits.clone(),
        gap_grace: config.relay.gap_grace(),
        replica_id,
        shutdown: shutdown.clone(),
        tracker: tracker.clone(),
    });
    rooms
        .context()
        .projector
        .read_open_lists_from(rooms.for_projector());
    rooms.start_relay_tasks(config.relay.catchup_interval());
    spawn_housekeeping(directory.clone(), shutdown.clone(), &tracker);
    let outbox_wake = Arc::new(tokio::sync::Notify::new());
    whatsapp::outbox::spawn(
        database.outbox.clone(),
        config.whatsapp.clone(),
        tokens.clone(),
        replica_id.to_string(),
        outbox_wake.clone(),
        shutdown.clone(),
        &tracker,
    )?;
    let state = app::AppState {
        config: Arc::new(config),
        store,
        rooms,
        tracker: tracker.clone(),
        directory,
        tokens,
        limiter,
        projections,
        vendors: database.vendors.clone(),
        outbox: database.outbox.clone(),
        outbox_wake,
    };
    tracing::info!(addr = %listener.local_addr()?, %replica_id, "larder listening");
    let limits = state.config.limits.serve_limits();
    serve::serve(listener, app::router(state), limits, shutdown).await;
    tracing::info!("draining rooms");
    tracker.close();
    tracker.wait().await;
    tracing::info!("stopped");
    Ok(())
}
