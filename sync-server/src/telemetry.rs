//! Logging (`RUST_LOG`-style filtering, pretty or JSON lines) and metrics
//! (a Prometheus recorder, rendered at `GET /metrics`).

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

/// Buckets of the latency histograms, in seconds (0.5 ms to 10 s).
const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0,
];

static METRICS: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The process's metrics recorder, installed on first use. Several servers
/// in one process (tests) share it. `None` when another recorder was
/// installed first.
pub fn metrics() -> Option<PrometheusHandle> {
    METRICS
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &LATENCY_BUCKETS)
                .expect("latency buckets are not empty");
            match builder.install_recorder() {
                Ok(handle) => {
                    let upkeep = handle.clone();
                    // Histogram upkeep, off the async runtime.
                    std::thread::Builder::new()
                        .name("metrics-upkeep".into())
                        .spawn(move || {
                            loop {
                                std::thread::sleep(Duration::from_secs(5));
                                upkeep.run_upkeep();
                            }
                        })
                        .ok()?;
                    Some(handle)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "metrics recorder not installed; /metrics stays empty");
                    None
                }
            }
        })
        .clone()
}

/// Installs the global subscriber; `format` is `pretty` or `json`.
pub fn init(format: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    // Colours only for a person at a terminal, not in a log file.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()));
    let result = if format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
    if result.is_err() {
        // Already installed (tests start several servers in one process).
    }
}
