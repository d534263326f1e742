//! HTTP routes, one `router()` per area, merged in `app.rs`.

pub mod health;
pub mod sync;
