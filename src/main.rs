use std::io::Read;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use tokio_util::sync::CancellationToken;

use altinn_sync::cli::{Cli, Command};
use altinn_sync::{publish, state, sync, telemetry, worker};

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
    match execute(cli.command).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, cause = %format!("{e:#}"), "altinn-sync failed");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn execute(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Run(settings) => {
            let shutdown = shutdown_on_signal();
            worker::run(&settings, shutdown).await?;
        }
        Command::Dev(args) => {
            altinn_sync::dev::run(*args, shutdown_on_signal()).await?;
        }
        Command::Sync(args) => {
            let command = serde_json::json!({
                "command_id": uuid::Uuid::new_v4(),
                "command_type": "SyncNow",
                "requested_at": now(),
                "requested_by": args.requested_by,
                "firm": {"org_number": args.firm},
                "after_sequence": args.after_sequence,
            });
            send_command(&args.broker.amqp_url, &args.topology_prefix, &command).await?;
        }
        Command::Reconcile(args) => {
            let command = serde_json::json!({
                "command_id": uuid::Uuid::new_v4(),
                "command_type": "NightlyReconcile",
                "requested_at": now(),
                "requested_by": args.requested_by,
                "firm": args.firm.map(|f| serde_json::json!({"org_number": f})),
            });
            send_command(&args.broker.amqp_url, &args.topology_prefix, &command).await?;
        }
        Command::Parked { db, firm, json } => {
            let pool = connect_migrated(&db).await?;
            let rows = sync::parked(&pool, firm.as_deref()).await?;
            let paused = sync::paused(&pool, firm.as_deref()).await?;
            if json {
                let all = serde_json::json!({"paused_firms": paused, "parked_changes": rows});
                println!("{}", serde_json::to_string_pretty(&all)?);
                return Ok(());
            }
            for p in &paused {
                println!(
                    "firm {} PAUSED since {} ({} changes waiting): {}; next try {}, or at once \
                     on a sync-now or `altinn-sync retry --firm {}`",
                    p.firm,
                    p.since,
                    p.pending,
                    p.reason
                        .as_deref()
                        .unwrap_or("Altinn refused the system user"),
                    p.until.map_or_else(|| "now".to_owned(), |t| t.to_string()),
                    p.firm
                );
            }
            if rows.is_empty() {
                eprintln!("no parked changes");
            } else {
                for r in rows {
                    println!(
                        "{} firm={} employee={} client={} {} {} (attempts {}): {}",
                        r.id,
                        r.firm,
                        r.employee_id,
                        r.client_org_number,
                        r.action,
                        r.package,
                        r.attempts,
                        r.explanation.as_deref().unwrap_or("-")
                    );
                }
            }
        }
        Command::Retry { db, firm, id } => {
            let pool = connect_migrated(&db).await?;
            let n = sync::retry(&pool, &firm, id).await?;
            println!("{n} parked changes of firm {firm} re-queued");
        }
        Command::AltinnSim(args) => {
            altinn_sync::sim::run(&args, shutdown_on_signal()).await?;
        }
        Command::Doctor(args) => {
            let checks = altinn_sync::doctor::run(&args).await?;
            print!("{}", altinn_sync::doctor::render(&checks));
            if checks.iter().any(|c| !c.ok) {
                anyhow::bail!("the Altinn setup is not complete; see the failed checks above");
            }
        }
        Command::Migrate(db) => {
            let pool = state::connect(&db)
                .await
                .context("connecting to PostgreSQL")?;
            state::migrate(&pool).await?;
            println!("migrations applied");
        }
        Command::Publish(args) => {
            let body = if args.file.as_os_str() == "-" {
                let mut buf = Vec::new();
                std::io::stdin().read_to_end(&mut buf)?;
                buf
            } else {
                std::fs::read(&args.file)
                    .with_context(|| format!("reading {}", args.file.display()))?
            };
            publish::publish(
                &args.broker.amqp_url,
                &args.exchange,
                &args.routing_key,
                &body,
            )
            .await?;
            println!(
                "published to {} with routing key {}",
                args.exchange, args.routing_key
            );
        }
        Command::Desired { db, firm, json } => {
            let pool = connect_migrated(&db).await?;
            let grants = state::desired_grants(&pool, &firm).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&grants)?);
            } else if grants.is_empty() {
                eprintln!("firm {firm} has no desired grants");
            } else {
                println!("{:<36}  {:<9}  PACKAGE", "EMPLOYEE_ID", "CLIENT");
                for g in grants {
                    println!(
                        "{}  {:<9}  {}",
                        g.employee_id, g.client_org_number, g.package
                    );
                }
            }
        }
        Command::Explain {
            db,
            firm,
            employee,
            json,
        } => {
            let pool = connect_migrated(&db).await?;
            let Some(explanation) = state::explain(&pool, &firm, employee).await? else {
                anyhow::bail!("firm {firm} is not known: no event for it has been applied");
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&explanation)?);
            } else {
                println!("{explanation}");
            }
        }
        Command::RebuildDesired { db, role_mapping } => {
            let pool = connect_migrated(&db).await?;
            if let state::Realigned::Rebuilt { added, removed } =
                state::align_role_mapping(&pool, &role_mapping, true).await?
            {
                println!(
                    "desired grants rebuilt with {role_mapping}: {added} added, {removed} removed"
                );
            }
        }
        Command::DeadLetters {
            db,
            firm,
            limit,
            json,
        } => {
            let pool = connect_migrated(&db).await?;
            let rows = state::list_dead_letters(&pool, firm.as_deref(), limit).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                for r in rows {
                    println!(
                        "{} {} {} {} firm={} message_id={} {}: {}",
                        r.id,
                        r.received_at.format("%Y-%m-%dT%H:%M:%SZ"),
                        r.queue,
                        r.routing_key,
                        r.firm.as_deref().unwrap_or("-"),
                        r.message_id.as_deref().unwrap_or("-"),
                        r.reason_code,
                        r.reason
                    );
                }
            }
        }
        Command::Resequence { db, firm, force } => {
            let pool = connect_migrated(&db).await?;
            match state::resequence(&pool, &firm, force).await? {
                Some(state::Resequenced::Done { old_high_water }) => println!(
                    "firm {firm}: high-water mark {old_high_water} cleared and hold lifted; \
                     the next event for each fact wins. Replay the firm's dead letters in order."
                ),
                Some(state::Resequenced::NotHeld) => anyhow::bail!(
                    "firm {firm} is not on hold after a sequence regression; \
                     add --force to reset its sequences anyway"
                ),
                None => anyhow::bail!("firm {firm} is not known"),
            }
        }
        Command::Prune {
            db,
            retention_days,
            audit_retention_days,
        } => {
            let pool = connect_migrated(&db).await?;
            let days = |d: u64| Duration::from_secs(d.saturating_mul(24 * 3600));
            let retention = state::Retention {
                days: days(retention_days),
                audit: days(audit_retention_days),
            };
            let o = state::prune(&pool, &retention).await?;
            println!(
                "pruned {} processed event ids, {} tombstones, {} finished outbox rows, {} handled \
                 commands, {} dead letters, {} sequence regressions and {} audit rows",
                o.processed_events,
                o.tombstones,
                o.outbox_rows,
                o.commands,
                o.dead_letters,
                o.sequence_regressions,
                o.audit_rows
            );
        }
    }
    Ok(())
}

/// Publishes a command to the worker's command exchange.
async fn send_command(
    amqp_url: &str,
    prefix: &str,
    command: &serde_json::Value,
) -> anyhow::Result<()> {
    let exchange = format!("{prefix}.commands");
    let kind = command["command_type"].as_str().unwrap_or_default();
    let body = serde_json::to_vec(command)?;
    publish::publish(amqp_url, &exchange, kind, &body).await?;
    println!("{kind} {} published to {exchange}", command["command_id"]);
    Ok(())
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

async fn connect_migrated(db: &state::DbSettings) -> anyhow::Result<sqlx::PgPool> {
    let pool = state::connect(db)
        .await
        .context("connecting to PostgreSQL")?;
    state::migrate(&pool).await?;
    Ok(pool)
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
