//! `larder serve` runs the server; `larder migrate` applies migrations;
//! `larder export` and `larder import` move an installation between
//! databases.
//! A failure to start is one line on stderr and exit status 1.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use larder_server::config::{Cli, Command};
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("larder: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("larder: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(config) => {
            larder_server::telemetry::init(&config.log_format);
            tracing::info!(config = %config.describe(), "starting");
            let listener = tokio::net::TcpListener::bind(config.listen)
                .await
                .with_context(|| format!("cannot listen on {}", config.listen))?;
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
            let database = larder_server::open_database(&database).await?;
            tracing::info!(storage = %database.describe(), "migrations applied");
            Ok(())
        }
        Command::Export(args) => {
            larder_server::telemetry::init("pretty");
            let database = larder_server::open_database(&args.database).await?;
            let file = std::fs::File::create_new(&args.output)
                .with_context(|| format!("cannot create {}", args.output.display()))?;
            let mut out = std::io::BufWriter::new(file);
            let moved = larder_storage::portable::export(&database, &mut out).await?;
            out.into_inner()
                .map_err(|e| e.into_error())
                .and_then(|file| file.sync_all())
                .with_context(|| format!("cannot write {}", args.output.display()))?;
            tracing::info!(
                from = %database.describe(),
                to = %args.output.display(),
                rows = moved.total(),
                "exported"
            );
            Ok(())
        }
        Command::Import(args) => {
            larder_server::telemetry::init("pretty");
            let database = larder_server::open_database(&args.database).await?;
            let file = std::fs::File::open(&args.input)
                .with_context(|| format!("cannot open {}", args.input.display()))?;
            let moved =
                larder_storage::portable::import(&database, std::io::BufReader::new(file)).await?;
            tracing::info!(
                from = %args.input.display(),
                to = %database.describe(),
                rows = moved.total(),
                "imported"
            );
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
