//! `altinn-sync dev`: the simulator in-process with the demo world, and the worker against it,
//! the local RabbitMQ and the local PostgreSQL. The README's "try it".
//!
//! Start-up, in order, each failing fast with a hint: bind the simulator (so a taken port is
//! the first thing said), write the demo key where the worker reads it, migrate, ask for a
//! reconcile of every firm already known (the simulator starts empty, the database may not),
//! declare the queues (so the guide's `publish` works the moment it is printed), print the guide,
//! then run the worker. On shutdown the worker stops first, then the simulator, so deliveries
//! in flight are answered.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::admin;
use crate::altinn::AltinnSettings;
use crate::contract::{Command, CommandKind};
use crate::ingest;
use crate::sim::{self, Simulator, World};
use crate::state;
use crate::worker::{self, WorkerSettings};

/// The demo world and the published, test-only key its Maskinporten client trusts.
const DEMO_WORLD: &str = include_str!("../deploy/sim/demo-world.json");
const DEMO_KEY: &str = include_str!("../deploy/sim/test-only-maskinporten-key.pem");
/// The world's Maskinporten client (see `deploy/sim/README.md`).
const CLIENT_ID: &str = "demo-client";
const KID: &str = "demo-kid";
const SCOPES: &str = "altinn:accessmanagement/authorizedparties \
                      altinn:clientdelegations.read altinn:clientdelegations.write";
/// The demo firm, and the events the guide tells the user to publish, to notice when this
/// database has seen them already (they would then be duplicates and change nothing).
const DEMO_FIRM: &str = "912345610";
const DEMO_EVENTS: [&str; 5] = [
    include_str!("../schemas/examples/demo/01-kari-role-changed.json"),
    include_str!("../schemas/examples/demo/02-kari-client-assigned.json"),
    include_str!("../schemas/examples/demo/03-ola-role-changed.json"),
    include_str!("../schemas/examples/demo/04-project-accountant-to-ola.json"),
    include_str!("../schemas/examples/demo/05-kari-client-removed.json"),
];

#[derive(Debug, Clone, clap::Args)]
pub struct DevArgs {
    /// Where the in-process simulator listens (Maskinporten and Altinn both). Port 0 picks a
    /// free one; the guide printed at start names it.
    #[arg(long, env = "ALTINN_SIM_LISTEN", default_value = "127.0.0.1:8090")]
    pub sim_listen: SocketAddr,
    /// The worker's settings, as for `run`. The Altinn and Maskinporten ones are replaced by the
    /// simulator's.
    #[command(flatten)]
    pub worker: WorkerSettings,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the simulator could not start (is the port taken? choose another with --sim-listen)")]
    Simulator(#[from] sim::Error),
    #[error("could not write the demo key to {path}")]
    Key {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("could not prepare the database (is PostgreSQL running? see --database-url)")]
    Database(#[from] state::Error),
    #[error("could not reach RabbitMQ or declare the queues (is it running? see --amqp-url)")]
    Broker(#[from] lapin::Error),
    #[error(transparent)]
    Worker(#[from] worker::Error),
    #[error(transparent)]
    Admin(#[from] admin::Error),
    #[error("could not make the dev admin token")]
    Token(#[source] admin::tokens::Error),
}

/// Runs the simulator and the worker until `shutdown`.
pub async fn run(args: DevArgs, shutdown: CancellationToken) -> Result<(), Error> {
    let DevArgs {
        sim_listen,
        worker: mut settings,
    } = args;
    let ignored = given_altinn_settings(&settings.altinn);
    if !ignored.is_empty() {
        tracing::warn!(
            ignored = %ignored.join(", "),
            "dev uses its in-process Altinn simulator and ignores these settings: nothing is \
             sent to a real Altinn or Maskinporten"
        );
    }

    for (name, value) in own_defaults(&mut settings) {
        tracing::info!(setting = name, value = %value,
            "dev keeps apart from run: it uses its own database, queues and exchange");
    }
    #[expect(
        clippy::expect_used,
        reason = "built into the binary; a unit test parses it"
    )]
    let world: World = serde_json::from_str(DEMO_WORLD).expect("the embedded demo world parses");
    let simulator = Simulator::new();
    simulator.load(world).await;
    let listener = tokio::net::TcpListener::bind(sim_listen)
        .await
        .map_err(|source| sim::Error::Bind {
            addr: sim_listen,
            source,
        })?;
    let addr = listener.local_addr().unwrap_or(sim_listen);
    // Not a child of `shutdown`: the simulator outlives the worker, which may still be
    // delivering while it stops. Dropped on every way out of here.
    let stop_sim = CancellationToken::new();
    let stop_sim_on_exit = stop_sim.clone().drop_guard();
    let served = tokio::spawn(sim::serve(listener, simulator, stop_sim));

    let key = DemoFile::write("pem", DEMO_KEY)?;
    point_at_simulator(&mut settings.altinn, addr, key.path());
    // A token for every firm, unless the user brought a token file: printed on standard
    // output for the guide's curl lines, never logged.
    let token = admin::tokens::generate("dev", "*").map_err(Error::Token)?;
    let tokens = DemoFile::write("tokens", &format!("{}\n", token.line))?;
    let dev_token = if settings.admin.admin_tokens_file.is_none() {
        settings.admin.admin_tokens_file = Some(tokens.path().to_owned());
        Some(token.token)
    } else {
        None
    };
    let admin = admin::Server::bind(settings.admin.admin_listen).await?;

    let pool = state::connect(&settings.db).await?;
    state::migrate(&pool).await?;
    let known = reconcile_known_firms(&pool).await?;
    pool.close().await;

    declare_topology(&settings).await?;

    tracing::info!(
        simulator = %addr, firms_to_reconcile = known.firms,
        "dev: the Altinn simulator runs in-process with the demo world; starting the worker"
    );
    eprintln!("{}", guide(addr, admin.local_addr(), &settings, &known));
    if let Some(token) = &dev_token {
        println!("ADMIN_TOKEN={token}");
    }

    let outcome = worker::run_bound(&settings, admin, shutdown).await;
    drop(stop_sim_on_exit);
    let _ = served.await;
    drop(key);
    drop(tokens);
    Ok(outcome?)
}

/// dev's own database, queues and event exchange, where the settings are `run`'s defaults: on a
/// host that also runs the worker, dev must not reconcile its database against an empty
/// simulator, nor share its queues and AdminFlow's exchange. Returns what it changed (no
/// secrets: the default URL has no password).
fn own_defaults(settings: &mut WorkerSettings) -> Vec<(&'static str, String)> {
    let mut changed = Vec::new();
    let mut replace = |name, value: &mut String, default: &str, dev: &str| {
        if value == default {
            *value = dev.to_owned();
            changed.push((name, value.clone()));
        }
    };
    replace(
        "DATABASE_URL",
        &mut settings.db.database_url,
        state::DEFAULT_DATABASE_URL,
        DEV_DATABASE_URL,
    );
    replace(
        "TOPOLOGY_PREFIX",
        &mut settings.ingest.topology_prefix,
        ingest::DEFAULT_TOPOLOGY_PREFIX,
        DEV_TOPOLOGY_PREFIX,
    );
    replace(
        "EVENTS_EXCHANGE",
        &mut settings.ingest.events_exchange,
        ingest::DEFAULT_EVENTS_EXCHANGE,
        DEV_EVENTS_EXCHANGE,
    );
    changed
}

/// The names of the Altinn settings the user gave, which dev replaces. Names only: never values.
fn given_altinn_settings(altinn: &AltinnSettings) -> Vec<&'static str> {
    let given = |v: &Option<String>| v.as_deref().is_some_and(|s| !s.trim().is_empty());
    [
        ("ALTINN_BASE_URL", given(&altinn.altinn_base_url)),
        ("MASKINPORTEN_URL", given(&altinn.maskinporten_url)),
        (
            "MASKINPORTEN_CLIENT_ID",
            given(&altinn.maskinporten_client_id),
        ),
        ("MASKINPORTEN_KID", given(&altinn.maskinporten_kid)),
        (
            "MASKINPORTEN_KEY_FILE",
            altinn.maskinporten_key_file.is_some(),
        ),
        ("MASKINPORTEN_SCOPES", given(&altinn.maskinporten_scopes)),
    ]
    .into_iter()
    .filter_map(|(name, given)| given.then_some(name))
    .collect()
}

/// The six Altinn settings, all pointing at the in-process simulator and its demo client.
fn point_at_simulator(altinn: &mut AltinnSettings, addr: SocketAddr, key: &Path) {
    altinn.altinn_base_url = Some(format!("http://{addr}"));
    altinn.maskinporten_url = Some(format!("http://{addr}/"));
    altinn.maskinporten_client_id = Some(CLIENT_ID.into());
    altinn.maskinporten_kid = Some(KID.into());
    altinn.maskinporten_key_file = Some(key.to_owned());
    altinn.maskinporten_scopes = Some(SCOPES.into());
}

const DEV_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/altinn_sync_dev";
const DEV_TOPOLOGY_PREFIX: &str = "altinn-sync-dev";
const DEV_EVENTS_EXCHANGE: &str = "adminflow-dev.events";

/// The embedded test-only key in a file of this process's own (the worker reads its key from a
/// file), removed when dropped. Created exclusively, so an existing file or link is never
/// followed or overwritten.
/// A secret dev writes for the worker to read (the demo key, the admin tokens), readable by
/// the user alone and removed when dev stops.
struct DemoFile(PathBuf);

impl DemoFile {
    fn write(suffix: &str, contents: &str) -> Result<Self, Error> {
        let path = std::env::temp_dir().join(format!(
            "altinn-sync-dev-{}-{}.{suffix}",
            std::process::id(),
            Uuid::new_v4().simple()
        ));
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        options
            .open(&path)
            .and_then(|mut file| file.write_all(contents.as_bytes()))
            .map_err(|source| Error::Key {
                path: path.clone(),
                source,
            })?;
        Ok(Self(path))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for DemoFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// What the database already holds, for the guide.
struct Known {
    /// Firms that a reconcile at start will align with the (empty) simulator.
    firms: i64,
    /// How many of the demo events this database has applied already.
    demo_events_seen: i64,
}

/// The simulator starts empty, the database may not: a reconcile of every firm makes what the
/// worker believes Altinn holds match the simulator again, as the nightly run repairs drift.
async fn reconcile_known_firms(pool: &sqlx::PgPool) -> Result<Known, state::Error> {
    let demo_ids: Vec<Uuid> = DEMO_EVENTS
        .iter()
        // A unit test shows that every one parses and has an id.
        .filter_map(|text| {
            let event: serde_json::Value = serde_json::from_str(text).ok()?;
            Uuid::parse_str(event["event_id"].as_str()?).ok()
        })
        .collect();
    let seen = sqlx::query!(
        r#"SELECT (SELECT count(*) FROM firms) AS "firms!",
                  (SELECT count(*) FROM processed_events
                   WHERE firm = $1 AND event_id = ANY($2)) AS "demo_events_seen!""#,
        DEMO_FIRM,
        &demo_ids
    )
    .fetch_one(pool)
    .await?;
    let (firms, demo_events_seen) = (seen.firms, seen.demo_events_seen);
    if firms > 0 {
        let reconcile = Command {
            id: Uuid::new_v4(),
            requested_at: chrono::Utc::now(),
            requested_by: Some("altinn-sync dev".into()),
            kind: CommandKind::NightlyReconcile { firm: None },
        };
        let mut conn = pool.acquire().await?;
        state::record_commands(&mut conn, &[&reconcile]).await?;
    }
    Ok(Known {
        firms,
        demo_events_seen,
    })
}

/// Declares the worker's queues now, so a message published right after the guide is kept even
/// if the worker is still starting.
async fn declare_topology(settings: &WorkerSettings) -> Result<(), lapin::Error> {
    let conn = ingest::connect(&settings.broker.amqp_url).await?;
    let channel = conn.create_channel().await?;
    let declared = settings.ingest.topology().declare(&channel).await;
    let _ = conn.close(200, "declared".into()).await;
    declared
}

/// What to do next, with this run's simulator address, database, exchange and prefix.
fn guide(addr: SocketAddr, admin: SocketAddr, settings: &WorkerSettings, known: &Known) -> String {
    let ingest = &settings.ingest;
    // A URL with a password is the user's to paste, not ours to print.
    let url = &settings.db.database_url;
    let has_password = url
        .split_once("://")
        .and_then(|(_, rest)| rest.split_once('@'))
        .is_some_and(|(user, _)| user.contains(':'));
    let database = if has_password {
        "<your DATABASE_URL>"
    } else {
        url.as_str()
    };
    let publish = |key: &str, file: &str| {
        format!("altinn-sync publish --routing-key {key:<14} schemas/examples/demo/{file}")
    };
    let sync = format!("altinn-sync sync --firm {DEMO_FIRM}");
    let curl = format!("curl -s http://{addr}/_sim/delegations");
    let mut text = format!(
        "\naltinn-sync dev is ready. The Altinn simulator at http://{addr} holds the demo world:\n\
         firm {DEMO_FIRM}, client 998877660, Kari Nordmann and Ola Hansen. The worker flushes \
         to it.\n\
         In another terminal, in the repository:\n\
         \n  alias altinn-sync='cargo run --release --quiet --'\
         \n  export DATABASE_URL={database} TOPOLOGY_PREFIX={} PUBLISH_EXCHANGE={}\n\
         \n  {}\n  {}\n  {sync}\n  {curl}    # Kari now holds an access package\n\
         \n  {}\n  {sync}\n  {curl}    # [] : gone again\n",
        ingest.topology_prefix,
        ingest.events_exchange,
        publish("RoleChanged", "01-kari-role-changed.json"),
        publish("ClientAssigned", "02-kari-client-assigned.json"),
        publish("ClientRemoved", "05-kari-client-removed.json"),
    );
    if known.demo_events_seen > 0 {
        text.push_str(&format!(
            "\nNote: this database has applied {} of the 5 demo events already, so publishing \
             them again changes\nnothing (they are duplicates). For a fresh demo, start dev on a \
             new database, e.g.\nDATABASE_URL=postgres://postgres@127.0.0.1:5432/altinn_sync_demo2 \
             altinn-sync dev (it is created at start).\n",
            known.demo_events_seen
        ));
    }
    if known.firms > 0 {
        let firms = match known.firms {
            1 => "The firm already in the database is".to_owned(),
            n => format!("The {n} firms already in the database are"),
        };
        text.push_str(&format!(
            "\n{firms} reconciled with the fresh simulator now: \
             desired access is\ndelivered to it without a sync.\n"
        ));
    }
    if settings.admin.admin_tokens_file.is_some() {
        let api = format!("http://{admin}/v1/firms/{DEMO_FIRM}");
        text.push_str(&format!(
            "\nThe admin API (health, metrics and /v1) is at http://{admin}. With the ADMIN_TOKEN \
             line dev prints on standard output:\n\
             \n  export ADMIN_TOKEN=...   # from standard output\
             \n  curl -s -H \"Authorization: Bearer $ADMIN_TOKEN\" {api}/status\
             \n  curl -s -X POST -H \"Authorization: Bearer $ADMIN_TOKEN\" {api}/sync\
             \n  curl -s http://{admin}/metrics | grep altinn_sync_deliveries_total\n"
        ));
    }
    text.push_str("\nCtrl-C stops the worker, then the simulator.\n");
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_demo_world_and_events_parse() {
        let world: World = serde_json::from_str(DEMO_WORLD).unwrap();
        assert!(world.firms.iter().any(|f| f.org_number == DEMO_FIRM));
        for text in DEMO_EVENTS {
            let event: serde_json::Value = serde_json::from_str(text).unwrap();
            assert_eq!(event["firm"]["org_number"], DEMO_FIRM);
            assert!(Uuid::parse_str(event["event_id"].as_str().unwrap()).is_ok());
        }
    }

    #[test]
    fn only_the_names_of_given_altinn_settings_are_reported() {
        let altinn = AltinnSettings {
            altinn_base_url: Some("https://platform.altinn.no".into()),
            maskinporten_scopes: Some("  ".into()),
            maskinporten_key_file: Some("/secret/key.pem".into()),
            ..Default::default()
        };
        assert_eq!(
            given_altinn_settings(&altinn),
            ["ALTINN_BASE_URL", "MASKINPORTEN_KEY_FILE"]
        );
    }

    fn worker_settings(args: &[&str]) -> WorkerSettings {
        #[derive(clap::Parser)]
        struct Args {
            #[command(flatten)]
            worker: WorkerSettings,
        }
        <Args as clap::Parser>::try_parse_from(
            std::iter::once("altinn-sync").chain(args.iter().copied()),
        )
        .unwrap()
        .worker
    }

    #[test]
    fn dev_keeps_apart_from_runs_database_queues_and_exchange() {
        let mut settings = worker_settings(&[
            "--database-url",
            state::DEFAULT_DATABASE_URL,
            "--topology-prefix",
            ingest::DEFAULT_TOPOLOGY_PREFIX,
            "--events-exchange",
            ingest::DEFAULT_EVENTS_EXCHANGE,
        ]);
        let changed = own_defaults(&mut settings);
        assert_eq!(changed.len(), 3);
        assert_eq!(settings.db.database_url, DEV_DATABASE_URL);
        assert_eq!(settings.ingest.topology_prefix, "altinn-sync-dev");
        assert_eq!(settings.ingest.events_exchange, "adminflow-dev.events");

        let mut chosen = worker_settings(&[
            "--database-url",
            "postgres://postgres@127.0.0.1:5432/mine",
            "--topology-prefix",
            "mine",
            "--events-exchange",
            "mine.events",
        ]);
        assert!(
            own_defaults(&mut chosen).is_empty(),
            "the user's choice stands"
        );
        let addr: SocketAddr = "127.0.0.1:8090".parse().unwrap();
        let text = guide(
            addr,
            addr,
            &chosen,
            &Known {
                firms: 0,
                demo_events_seen: 0,
            },
        );
        assert!(
            text.contains(
                "export DATABASE_URL=postgres://postgres@127.0.0.1:5432/mine \
                 TOPOLOGY_PREFIX=mine PUBLISH_EXCHANGE=mine.events"
            ),
            "{text}"
        );
        chosen.db.database_url = "postgres://u:secret@db/x".into();
        let text = guide(
            addr,
            addr,
            &chosen,
            &Known {
                firms: 0,
                demo_events_seen: 0,
            },
        );
        assert!(!text.contains("secret"), "{text}");
    }

    #[test]
    fn the_simulator_replaces_every_altinn_setting() {
        let mut altinn = AltinnSettings {
            altinn_base_url: Some("https://platform.altinn.no".into()),
            maskinporten_url: Some("https://maskinporten.no/".into()),
            altinn_request_timeout_ms: 10_000,
            ..Default::default()
        };
        let addr: SocketAddr = "127.0.0.1:8090".parse().unwrap();
        point_at_simulator(&mut altinn, addr, Path::new("/tmp/k.pem"));
        let config = altinn.validate().unwrap().expect("complete settings");
        assert_eq!(config.altinn_base_url, "http://127.0.0.1:8090");
        assert_eq!(config.maskinporten_url, "http://127.0.0.1:8090/");
    }

    #[test]
    fn the_demo_key_file_is_private_and_removed() {
        let key = DemoFile::write("pem", DEMO_KEY).unwrap();
        let path = key.path().to_owned();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), DEMO_KEY);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "only the owner may read it");
        }
        drop(key);
        assert!(!path.exists());
    }
}
