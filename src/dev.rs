//! `altinn-sync dev`: the simulator in-process with the demo world, and the worker against it,
//! the local RabbitMQ and the local PostgreSQL. The README's "try it".

use std::net::SocketAddr;
use std::path::PathBuf;

use tokio_util::sync::CancellationToken;

use crate::sim::{self, Simulator, World};
use crate::state;
use crate::worker::{self, WorkerSettings};

/// The demo world and the published, test-only key its Maskinporten client trusts.
const DEMO_WORLD: &str = include_str!("../deploy/sim/demo-world.json");
const DEMO_KEY: &str = include_str!("../deploy/sim/test-only-maskinporten-key.pem");
const SCOPES: &str = "altinn:accessmanagement/authorizedparties \
                      altinn:clientdelegations.read altinn:clientdelegations.write";

#[derive(Debug, Clone, clap::Args)]
pub struct DevArgs {
    /// Where the in-process simulator listens (Maskinporten and Altinn both).
    #[arg(long, env = "ALTINN_SIM_LISTEN", default_value = "127.0.0.1:8090")]
    pub sim_listen: SocketAddr,
    #[command(flatten)]
    pub worker: WorkerSettings,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the simulator could not start")]
    Simulator(#[from] sim::Error),
    #[error("could not write the demo key to {path}")]
    Key {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("could not prepare the database")]
    Database(#[from] state::Error),
    #[error(transparent)]
    Worker(#[from] worker::Error),
}

/// Runs the simulator and the worker until `shutdown`.
pub async fn run(args: DevArgs, shutdown: CancellationToken) -> Result<(), Error> {
    let world: World = serde_json::from_str(DEMO_WORLD).expect("the embedded demo world parses");
    let simulator = Simulator::new();
    simulator.load(world).await;
    let listener = tokio::net::TcpListener::bind(args.sim_listen)
        .await
        .map_err(|source| sim::Error::Bind {
            addr: args.sim_listen,
            source,
        })?;
    let addr = listener.local_addr().unwrap_or(args.sim_listen);
    let sim_stopped = shutdown.child_token();
    let served = tokio::spawn(sim::serve(listener, simulator, sim_stopped.clone()));

    let mut settings = args.worker;
    if settings.altinn.altinn_base_url.is_some() {
        tracing::warn!(
            "dev ignores the ALTINN_* and MASKINPORTEN_* settings: it uses its own simulator"
        );
    }
    let key = std::env::temp_dir().join("altinn-sync-dev-test-only-key.pem");
    std::fs::write(&key, DEMO_KEY).map_err(|source| Error::Key {
        path: key.clone(),
        source,
    })?;
    settings.altinn.altinn_base_url = Some(format!("http://{addr}"));
    settings.altinn.maskinporten_url = Some(format!("http://{addr}/"));
    settings.altinn.maskinporten_client_id = Some("demo-client".into());
    settings.altinn.maskinporten_kid = Some("demo-kid".into());
    settings.altinn.maskinporten_key_file = Some(key);
    settings.altinn.maskinporten_scopes = Some(SCOPES.into());

    // The simulator starts empty: a reconcile of every firm makes this database's idea of
    // what Altinn holds match it again, exactly as the nightly run repairs drift.
    let pool = state::connect(&settings.db).await?;
    state::migrate(&pool).await?;
    let firms = request_reconcile(&pool).await?;
    pool.close().await;

    tracing::info!(simulator = %addr, firms_reconciled = firms, "dev mode: the Altinn simulator \
        runs in-process with the demo world (deploy/sim/demo-world.json)");
    let exchange = &settings.ingest.events_exchange;
    let publish = |key: &str, file: &str| {
        format!("altinn-sync publish --exchange {exchange} --routing-key {key} schemas/examples/demo/{file}")
    };
    eprintln!(
        "\naltinn-sync dev: simulator at http://{addr}, worker starting. In another terminal:\n  \
         {}\n  {}\n  altinn-sync sync --firm 912345610\n  curl -s http://{addr}/_sim/delegations\n\
         then {} and sync again. Ctrl-C stops both.\n",
        publish("RoleChanged", "01-kari-role-changed.json"),
        publish("ClientAssigned", "02-kari-client-assigned.json"),
        publish("ClientRemoved", "05-kari-client-removed.json"),
    );
    let outcome = worker::run(&settings, shutdown.clone()).await;
    sim_stopped.cancel();
    let _ = served.await;
    Ok(outcome?)
}

/// Records a `NightlyReconcile` for every firm, as the ingest would record the command.
async fn request_reconcile(pool: &sqlx::PgPool) -> Result<u64, state::Error> {
    let firms: i64 = sqlx::query_scalar("SELECT count(*) FROM firms")
        .fetch_one(pool)
        .await?;
    if firms > 0 {
        sqlx::query(
            r#"INSERT INTO commands (command_id, command_type, firm, requested_at)
               VALUES (gen_random_uuid(), 'NightlyReconcile', NULL, now())"#,
        )
        .execute(pool)
        .await?;
    }
    Ok(firms as u64)
}
