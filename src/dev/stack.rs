//! The stack dev starts: the simulator, the demo key and admin token, the database and the
//! queues, then the worker, and the order they stop in.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, DropGuard};
use uuid::Uuid;

use super::demo::{CLIENT_ID, DEMO_EVENTS, DEMO_FIRM, DEMO_KEY, DEMO_WORLD, KID, SCOPES};
use super::guide::{Known, guide};
use super::{DevArgs, Error};
use crate::admin;
use crate::altinn::AltinnSettings;
use crate::contract::{Command, CommandKind};
use crate::ingest;
use crate::sim::{self, Simulator, World};
use crate::state::{self, DbSettings};
use crate::worker::{self, WorkerSettings};

/// Runs the simulator and the worker until `shutdown`.
pub async fn run(args: DevArgs, shutdown: CancellationToken) -> Result<(), Error> {
    let DevArgs {
        sim_listen,
        worker: mut settings,
    } = args;
    keep_apart(&mut settings);
    let simulator = RunningSimulator::start(sim_listen).await?;
    let key = DemoFile::write("pem", DEMO_KEY)?;
    point_at_simulator(&mut settings.altinn, simulator.addr, key.path());
    let (tokens, dev_token) = admin_token(&mut settings)?;
    let admin = admin::Server::bind_with(&settings.admin).await?;
    let known = prepare_database(&settings.db).await?;
    declare_topology(&settings).await?;

    tracing::info!(
        simulator = %simulator.addr, firms_to_reconcile = known.firms,
        "dev: the Altinn simulator runs in-process with the demo world; starting the worker"
    );
    eprintln!(
        "{}",
        guide(simulator.addr, admin.local_addr(), &settings, &known)
    );
    if let Some(token) = &dev_token {
        println!("ADMIN_TOKEN={token}");
    }

    let outcome = worker::run_bound(&settings, admin, shutdown).await;
    simulator.stop().await;
    drop(key);
    drop(tokens);
    Ok(outcome?)
}

/// Warns of the Altinn settings dev ignores, and gives dev its own database, queues and
/// exchange where the user left `run`'s.
fn keep_apart(settings: &mut WorkerSettings) {
    let ignored = given_altinn_settings(&settings.altinn);
    if !ignored.is_empty() {
        tracing::warn!(
            ignored = %ignored.join(", "),
            "dev uses its in-process Altinn simulator and ignores these settings: nothing is \
             sent to a real Altinn or Maskinporten"
        );
    }

    for (name, value) in own_defaults(settings) {
        tracing::info!(setting = name, value = %value,
            "dev keeps apart from run: it uses its own database, queues and exchange");
    }
}

/// The simulator with the demo world, serving on its own task.
struct RunningSimulator {
    addr: SocketAddr,
    /// Not a child of `shutdown`: the simulator outlives the worker, which may still be
    /// delivering while it stops. Dropped on every way out of `run`.
    stop: DropGuard,
    served: JoinHandle<()>,
}

impl RunningSimulator {
    async fn start(listen: SocketAddr) -> Result<Self, Error> {
        #[expect(
            clippy::expect_used,
            reason = "built into the binary; a unit test parses it"
        )]
        let world: World =
            serde_json::from_str(DEMO_WORLD).expect("the embedded demo world parses");
        let simulator = Simulator::new();
        simulator.load(world).await;
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|source| sim::Error::Bind {
                addr: listen,
                source,
            })?;
        let addr = listener.local_addr().unwrap_or(listen);
        let stop = CancellationToken::new();
        let served = tokio::spawn(sim::serve(listener, simulator, stop.clone()));
        Ok(Self {
            addr,
            stop: stop.drop_guard(),
            served,
        })
    }

    /// Stops the simulator once the worker has stopped, and waits for it.
    async fn stop(self) {
        drop(self.stop);
        let _ = self.served.await;
    }
}

/// A token for every firm, unless the user brought a token file: printed on standard output
/// for the guide's curl lines, never logged. Returns the token file (removed when dropped) and
/// the token when dev's own is used.
fn admin_token(settings: &mut WorkerSettings) -> Result<(DemoFile, Option<String>), Error> {
    let token = admin::tokens::generate("dev", "*").map_err(Error::Token)?;
    let tokens = DemoFile::write("tokens", &format!("{}\n", token.line))?;
    let dev_token = if settings.admin.admin_tokens_file.is_none() {
        settings.admin.admin_tokens_file = Some(tokens.path().to_owned());
        Some(token.token)
    } else {
        None
    };
    Ok((tokens, dev_token))
}

/// Migrates, and asks for a reconcile of every firm already known.
async fn prepare_database(db: &DbSettings) -> Result<Known, state::Error> {
    let pool = state::connect(db).await?;
    state::migrate(&pool).await?;
    let known = reconcile_known_firms(&pool).await?;
    pool.close().await;
    Ok(known)
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

/// A secret dev writes for the worker to read (the demo key, the admin tokens: the worker reads
/// both from files), readable by the user alone and removed when dropped. Created exclusively,
/// so an existing file or link is never followed or overwritten.
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

#[cfg(test)]
mod tests {
    use super::*;

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
