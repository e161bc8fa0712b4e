//! The process: parse the command line, set up telemetry, turn signals into a shutdown token
//! and dispatch. Everything else is in the library.

use std::process::ExitCode;

use clap::Parser;
use tokio_util::sync::CancellationToken;

use altinn_sync::cli::{self, Cli, Command};
use altinn_sync::telemetry;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // One-shot commands print their result; their logs would only be noise, including lapin's
    // complaint when the runtime stops under its I/O thread.
    let default_filter = match cli.command {
        Command::Run(_) | Command::Dev(_) | Command::AltinnSim(_) => {
            "info,sqlx::postgres::notice=warn"
        }
        _ => "warn,sqlx::postgres::notice=warn,lapin=off",
    };
    let _guard = match telemetry::init(&cli.telemetry, default_filter) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let shutdown = match cli.command {
        Command::Run(_) | Command::Dev(_) | Command::AltinnSim(_) => shutdown_on_signal(),
        _ => CancellationToken::new(),
    };
    match cli::execute(cli.command, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, cause = %format!("{e:#}"), "altinn-sync failed");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The first SIGTERM or SIGINT starts a graceful shutdown; a second one exits at once.
fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let trigger = token.clone();
    // Lives as long as the process; there is nothing to join.
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "cannot listen for SIGTERM");
                    return;
                }
            };
        for n in 0.. {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            if n == 0 {
                tracing::info!(
                    "shutting down: finishing the batch in hand (signal again to force)"
                );
                trigger.cancel();
            } else {
                tracing::warn!(
                    "second signal: exiting now; unacked deliveries will be redelivered"
                );
                std::process::exit(130);
            }
        }
    });
    token
}
