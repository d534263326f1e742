//! Logging: `RUST_LOG`-style filtering, pretty or JSON lines.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber; `format` is `pretty` or `json`.
pub fn init(format: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let result = if format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
    if result.is_err() {
        // Already installed (tests start several servers in one process).
    }
}
