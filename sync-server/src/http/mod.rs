//! The HTTP side of the server: one file per resource, each with its
//! `router()`, and the helpers they share in modules of their own. Handler
//! modules never import each other.
//!
//! - Resources: [`accounts`], [`families`], [`invitations`], [`lists`],
//!   [`items`], [`orders`], [`links`] (read-only tokens), [`vendors`],
//!   [`shares`], [`share_page`] (the vendor's page), [`webhooks`]
//!   (WhatsApp), [`sync`] (the y-websocket endpoint), [`health`] and
//!   [`openapi`].
//! - Shared: [`extract`] (every input passes through these extractors, so
//!   every refusal is a JSON error), [`access`] (who may see what),
//!   [`idempotency`], [`write`] (writes through a document), [`check`]
//!   (validation), [`pages`], [`limits`] and [`views`] (response shapes
//!   shown by several resources).

pub mod access;
pub mod accounts;
pub mod check;
pub mod extract;
pub mod families;
pub mod health;
pub mod idempotency;
pub mod invitations;
pub mod items;
pub mod limits;
pub mod links;
pub mod lists;
pub mod openapi;
pub mod orders;
pub mod pages;
pub mod share_page;
pub mod shares;
pub mod sync;
pub mod vendors;
pub mod views;
pub mod webhooks;
pub mod write;

use axum::Router;

use crate::app::AppState;
pub use extract::MAX_BODY_BYTES;

/// Every route of the server.
pub fn router() -> Router<AppState> {
    let api = Router::new()
        .merge(accounts::router())
        .merge(families::router())
        .merge(invitations::router())
        .merge(lists::router())
        .merge(links::router())
        .merge(items::router())
        .merge(orders::router())
        .merge(vendors::router())
        .merge(shares::router())
        .merge(openapi::router())
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES));
    Router::new()
        .merge(health::router())
        .merge(sync::router())
        .merge(share_page::router())
        .merge(webhooks::router())
        .merge(api)
}
