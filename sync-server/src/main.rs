//! `larder serve` runs the server; `larder migrate` applies migrations.

use clap::Parser;
use larder_server::config::{Cli, Command};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(config) => {
            larder_server::telemetry::init(&config.log_format);
            tracing::info!(config = %config.describe(), "starting");
            let listener = tokio::net::TcpListener::bind(config.listen).await?;
            let shutdown = CancellationToken::new();
            let signal = shutdown.clone();
            tokio::spawn(async move {
                wait_for_signal().await;
                tracing::info!("shutdown requested");
                signal.cancel();
            });
            larder_server::run(*config, listener, shutdown).await
        }
        Command::Migrate(database) => {
            larder_server::telemetry::init("pretty");
            larder_server::open_store(&database).await?;
            tracing::info!("migrations applied");
            Ok(())
        }
    }
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
