//! Runs one command: the long-running ones until `shutdown`, the others once, printing what
//! their operation returns (each answer formats itself; `--json` prints it as JSON).
//!
//! `anyhow` is used here, at the process's edge, as in `main`: a command's failure is only
//! ever printed.

use std::io::Read;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use super::{Command, OpsArgs, PublishArgs};
use crate::{admin, ops, publish, state, worker};

pub async fn execute(mut command: Command, shutdown: CancellationToken) -> anyhow::Result<()> {
    super::Secrets::read(|var| std::env::var(var).ok())?.apply(&mut command);
    match command {
        Command::Run(settings) => worker::run(&settings, shutdown).await?,
        Command::Dev(args) => crate::dev::run(*args, shutdown).await?,
        Command::AltinnSim(args) => crate::sim::run(&args, shutdown).await?,
        Command::Publish(args) => publish_file(&args).await?,
        c @ (Command::Sync(_)
        | Command::Reconcile(_)
        | Command::Openapi
        | Command::Healthcheck { .. }
        | Command::AdminToken { .. }
        | Command::Doctor(_)) => tools(c).await?,
        c @ (Command::Status(_)
        | Command::Explain { .. }
        | Command::Plan(_)
        | Command::Parked { .. }
        | Command::Retry { .. }
        | Command::Staged(_)
        | Command::Approve(_)
        | Command::Reject(_)
        | Command::Audit(_)) => operate(c).await?,
        c => maintain(c).await?,
    }
    Ok(())
}

/// Requests to the worker, and the tools around it.
async fn tools(command: Command) -> anyhow::Result<()> {
    match command {
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
        Command::Openapi => println!("{}", admin::api::openapi_json()),
        Command::Healthcheck { admin_listen } => admin::healthcheck(admin_listen).await?,
        Command::AdminToken {
            name,
            firms,
            read_only,
        } => {
            let access = if read_only {
                admin::tokens::Access::Read
            } else {
                admin::tokens::Access::Write
            };
            let new = admin::tokens::generate_with(&name, &firms, access)?;
            println!(
                "token (give it to {name}; it is not stored anywhere): {}",
                new.token
            );
            println!("line for ADMIN_TOKENS_FILE:\n{}", new.line);
        }
        Command::Doctor(args) => {
            let checks = crate::doctor::run(&args).await?;
            print!("{}", crate::doctor::render(&checks));
            if checks.iter().any(|c| !c.ok) {
                anyhow::bail!("the Altinn setup is not complete; see the failed checks above");
            }
        }
        other => anyhow::bail!("not a tool command: {other:?}"),
    }
    Ok(())
}

/// The operations on one firm (see [`ops`]).
async fn operate(command: Command) -> anyhow::Result<()> {
    match command {
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
                .approve(&a.firm, d.which.ids.as_deref(), &a.actor)
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
                .reject(&a.firm, d.which.ids.as_deref(), &a.actor)
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
        other => anyhow::bail!("not an operation: {other:?}"),
    }
    Ok(())
}

/// The database's upkeep: migrations, rebuilds, dead letters, sequences and pruning.
async fn maintain(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Migrate(db) => {
            let pool = state::connect(&db)
                .await
                .context("connecting to PostgreSQL")?;
            state::migrate(&pool).await?;
            println!("migrations applied");
        }
        Command::Desired { db, firm, json } => {
            let grants = state::desired_grants(&connect_migrated(&db).await?, &firm).await?;
            output(json, &state::DesiredGrants(grants))?;
        }
        Command::RebuildDesired { db, role_mapping } => {
            let pool = connect_migrated(&db).await?;
            if let state::Realigned::Rebuilt { added, removed } =
                state::align_role_mapping(&pool, &role_mapping, state::Rebuild::Always).await?
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
        Command::Resequence { db, firm, force } => resequence(&db, &firm, force).await?,
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

        other => anyhow::bail!("not a maintenance command: {other:?}"),
    }
    Ok(())
}

/// `resequence`: lifts a firm's hold after a sequence regression.
async fn resequence(db: &state::DbSettings, firm: &str, force: bool) -> anyhow::Result<()> {
    let pool = connect_migrated(db).await?;
    let on_healthy = if force {
        state::OnHealthy::Reset
    } else {
        state::OnHealthy::Refuse
    };
    match state::resequence(&pool, firm, on_healthy).await? {
        Some(done @ state::Resequenced::Done { .. }) => println!("firm {firm}: {done}"),
        Some(state::Resequenced::NotHeld) => anyhow::bail!(
            "firm {firm} is not on hold after a sequence regression; \
             add --force to reset its sequences anyway"
        ),
        None => anyhow::bail!("firm {firm} is not known"),
    }
    Ok(())
}

/// `publish`: one message from a file (or standard input) to an exchange.
async fn publish_file(args: &PublishArgs) -> anyhow::Result<()> {
    let body = if args.file.as_os_str() == "-" {
        let mut buf = Vec::new();
        std::io::stdin().read_to_end(&mut buf)?;
        buf
    } else {
        std::fs::read(&args.file).with_context(|| format!("reading {}", args.file.display()))?
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
async fn operations(args: &OpsArgs) -> anyhow::Result<ops::Ops> {
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
