use std::io::Read;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use tokio_util::sync::CancellationToken;

use altinn_sync::cli::{Cli, Command};
use altinn_sync::{admin, ops, publish, state, telemetry, worker};

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
        Command::Run(settings) => worker::run(&settings, shutdown_on_signal()).await?,
        Command::Dev(args) => altinn_sync::dev::run(*args, shutdown_on_signal()).await?,
        Command::AltinnSim(args) => altinn_sync::sim::run(&args, shutdown_on_signal()).await?,
        Command::Sync(a) => {
            let requested_by = a.requested_by.as_deref().unwrap_or("cli");
            let prefix = &a.topology_prefix;
            let id = ops::request_sync(
                &a.broker.amqp_url,
                prefix,
                &a.firm,
                a.after_sequence,
                requested_by,
            )
            .await?;
            println!("SyncNow {id} published to {prefix}.commands");
        }
        Command::Reconcile(a) => {
            let requested_by = a.requested_by.as_deref().unwrap_or("cli");
            let prefix = &a.topology_prefix;
            let id =
                ops::request_reconcile(&a.broker.amqp_url, prefix, a.firm.as_deref(), requested_by)
                    .await?;
            println!("NightlyReconcile {id} published to {prefix}.commands");
        }
        Command::Status(a) => output(a.json, &operations(&a).await?.status(&a.firm).await?)?,
        Command::Explain { ops: a, employee } => {
            output(
                a.json,
                &operations(&a).await?.explain(&a.firm, employee).await?,
            )?;
        }
        Command::Plan(a) => {
            let plan = operations(&a).await?.plan(&a.firm).await?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&plan)?);
            } else {
                print!("{}", ops::render_plan(&plan));
            }
        }
        Command::Parked { db, firm, json } => {
            let pool = connect_migrated(&db).await?;
            output(json, &ops::parked_list(&pool, firm.as_deref()).await?)?;
        }
        Command::Retry { ops: a, id } => {
            let n = operations(&a).await?.retry(&a.firm, id, &a.actor).await?;
            println!("{n} parked changes of firm {} re-queued", a.firm);
        }
        Command::Staged(a) => output(a.json, &operations(&a).await?.staged(&a.firm).await?)?,
        Command::Approve(d) => {
            let a = &d.ops;
            let n = operations(a)
                .await?
                .approve(&a.firm, d.ids.as_deref(), &a.actor)
                .await?;
            println!(
                "{n} staged revokes of firm {} approved: they are sent",
                a.firm
            );
        }
        Command::Reject(d) => {
            let a = &d.ops;
            let n = operations(a)
                .await?
                .reject(&a.firm, d.ids.as_deref(), &a.actor)
                .await?;
            println!("{n} staged revokes of firm {} rejected", a.firm);
        }
        Command::Audit(q) => {
            let a = &q.ops;
            let query = ops::AuditQuery {
                employee: q.employee,
                client: q.client.clone(),
                limit: Some(q.limit),
                before: q.before,
            };
            output(a.json, &operations(a).await?.audit(&a.firm, &query).await?)?;
        }
        Command::Openapi => println!("{}", admin::api::openapi_json()),
        Command::Healthcheck { admin_listen } => admin::healthcheck(admin_listen).await?,
        Command::AdminToken { name, firms } => {
            let new = admin::tokens::generate(&name, &firms).map_err(anyhow::Error::msg)?;
            println!(
                "token (give it to {name}; it is not stored anywhere): {}",
                new.token
            );
            println!("line for ADMIN_TOKENS_FILE:\n{}", new.line);
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
            let grants = state::desired_grants(&connect_migrated(&db).await?, &firm).await?;
            output(json, &state::DesiredGrants(grants))?;
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
            output(json, &state::DeadLetters(rows))?;
        }
        Command::Resequence { db, firm, force } => {
            let pool = connect_migrated(&db).await?;
            match state::resequence(&pool, &firm, force).await? {
                Some(done @ state::Resequenced::Done { .. }) => println!("firm {firm}: {done}"),
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
            println!("{}", state::prune(&pool, &retention).await?);
        }
    }
    Ok(())
}

/// Prints `value` as JSON, or as text for a person.
fn output<T: serde::Serialize + std::fmt::Display>(json: bool, value: &T) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(value)?);
    } else {
        print!("{value}");
        if !value.to_string().ends_with('\n') {
            println!();
        }
    }
    Ok(())
}

/// The operations, with the running workers' mode (the CLI's own settings when none runs).
async fn operations(args: &altinn_sync::cli::OpsArgs) -> anyhow::Result<ops::Ops> {
    let pool = connect_migrated(&args.db).await?;
    let mode = args.mode().observed(&pool).await?;
    Ok(ops::Ops::new(pool, mode))
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
