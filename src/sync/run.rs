//! The flush loop: sync-nows, reconciles and deliveries, each woken by its own signal.

use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Result;
use super::auto::auto_sync;
use super::commands::{handle_commands, handle_reconciles};
use super::dispatch::Dispatcher;
use crate::retry::{RetryPolicy, Retryable};
use crate::telemetry::ErrorChain;
use crate::telemetry::metrics::{self, CommandOutcome};

/// Plans sync-nows, runs reconciles and dispatches until `shutdown`, each in its own loop, so
/// a long nightly reconcile holds back neither a sync-now nor the deliveries. Each loop wakes
/// on its signal and every second, for retries that come due and other replicas' work.
pub async fn run(pool: PgPool, dispatcher: &Dispatcher, shutdown: CancellationToken) -> Result<()> {
    let mut listener = PgListener::connect_with(&pool).await?;
    listener.listen("altinn_sync_ingested").await?;
    let (commands, reconciles, planned) = (Notify::new(), Notify::new(), Notify::new());
    tokio::try_join!(
        relay_ingested(&mut listener, &shutdown, [&commands, &reconciles]),
        repeat("sync-now planning", &shutdown, &commands, || async {
            let handled = handle_commands(&pool, dispatcher.settings())
                .await
                .inspect_err(|_| metrics::command("SyncNow", CommandOutcome::Failed, 1))?;
            if handled > 0 {
                planned.notify_one();
            }
            Ok(())
        }),
        repeat("nightly reconcile", &shutdown, &reconciles, || async {
            let handled = handle_reconciles(&pool, dispatcher, &shutdown)
                .await
                .inspect_err(|_| metrics::command("NightlyReconcile", CommandOutcome::Failed, 1))?;
            if handled > 0 {
                planned.notify_one();
            }
            Ok(())
        }),
        repeat("dispatch", &shutdown, &planned, || async {
            dispatcher.drain(&shutdown).await?;
            dispatcher.remove_idle_agents().await.map(drop)
        }),
        automatic_sync(&pool, dispatcher, &shutdown, &commands),
    )?;
    Ok(())
}

/// Wakes `loops` on every notification that something was ingested, until `shutdown`.
async fn relay_ingested(
    listener: &mut PgListener,
    shutdown: &CancellationToken,
    loops: [&Notify; 2],
) -> Result<()> {
    let mut waits = RetryPolicy::DEFAULT.waits();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            received = listener.recv() => match received {
                Ok(_) => {
                    waits.reset();
                    for wake in loops {
                        wake.notify_one();
                    }
                }
                // sqlx reconnects on the next call; the loops' ticks cover the gap.
                Err(e) => {
                    let wait = waits.next_wait();
                    tracing::warn!(error = %ErrorChain(&e), retry_in = ?wait,
                        "lost the database notifications; reconnecting");
                    tokio::select! {
                        () = shutdown.cancelled() => return Ok(()),
                        () = tokio::time::sleep(wait) => {}
                    }
                }
            },
        }
    }
}

/// The automatic sync's loop, when it is on; a firm it syncs wakes the sync-now planning
/// (`commands`).
async fn automatic_sync(
    pool: &PgPool,
    dispatcher: &Dispatcher,
    shutdown: &CancellationToken,
    commands: &Notify,
) -> Result<()> {
    let Some(after) = dispatcher.settings().auto_sync_after() else {
        return Ok(());
    };
    // It wakes only on its tick: checked every second, a firm fires within a second of being
    // due.
    let never = Notify::new();
    repeat("automatic sync", shutdown, &never, || async {
        if !auto_sync(pool, after, None).await?.is_empty() {
            commands.notify_one();
        }
        Ok(())
    })
    .await
}

/// Runs `work` now, then on every `wake` and every second, until `shutdown`. A retryable
/// failure (the database away for a moment) is logged and retried; a fatal one ends the run.
async fn repeat<F, Fut>(
    what: &str,
    shutdown: &CancellationToken,
    wake: &Notify,
    mut work: F,
) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    loop {
        if let Err(e) = work().await {
            if !e.is_retryable() {
                return Err(e);
            }
            tracing::warn!(error = %ErrorChain(&e), "{what} failed; retrying");
        }
        let tick = Instant::now() + Duration::from_secs(1);
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            () = wake.notified() => {}
            () = tokio::time::sleep_until(tick) => {}
        }
    }
}
