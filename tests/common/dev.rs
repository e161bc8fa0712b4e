//! `altinn-sync dev` started as a user starts it, and what its guide says: the simulator's
//! address, the `export` line the other commands need, the admin API's address and the token.

use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStderr, Command};

use super::TestApp;

pub struct Dev {
    pub child: Child,
    /// Standard error after the guide.
    pub lines: Lines<BufReader<ChildStderr>>,
    /// Standard error up to the end of the guide.
    pub guide: Vec<String>,
    pub sim: String,
    pub admin: String,
    pub exported: Vec<(String, String)>,
    /// The admin token dev printed on standard output (never in the log).
    pub token: String,
}

impl Dev {
    /// Starts dev on `app`'s database and topology, on free ports, with `env` on top.
    pub async fn start(app: &TestApp, env: &[(&str, &str)]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_altinn-sync"))
            .arg("dev")
            .env("DATABASE_URL", &app.settings.db.database_url)
            .env("AMQP_URL", &app.settings.broker.amqp_url)
            .env("TOPOLOGY_PREFIX", &app.settings.ingest.topology_prefix)
            .env("EVENTS_EXCHANGE", &app.settings.ingest.events_exchange)
            // Free ports: the guide names the ones taken.
            .env("ALTINN_SIM_LISTEN", "127.0.0.1:0")
            .env("ADMIN_LISTEN", "127.0.0.1:0")
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .current_dir(std::env::temp_dir())
            .stderr(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let token = BufReader::new(child.stdout.take().unwrap())
            .lines()
            .next_line()
            .await
            .unwrap()
            .and_then(|l| l.strip_prefix("ADMIN_TOKEN=").map(str::to_owned))
            .expect("dev prints ADMIN_TOKEN=... on standard output");
        let (mut guide, mut sim, mut exported, mut admin) = (Vec::new(), None, None, None);
        let after = |line: &str, text: &str| {
            let rest = line.split(text).nth(1)?.split_whitespace().next()?;
            Some(rest.trim_end_matches('.').to_owned())
        };
        while sim.is_none() || exported.is_none() || admin.is_none() {
            let line = lines
                .next_line()
                .await
                .unwrap()
                .expect("dev prints its guide");
            sim = sim.or_else(|| after(&line, "simulator at "));
            admin = admin.or_else(|| after(&line, "admin API (health, metrics and /v1) is at "));
            if let Some(vars) = line.trim().strip_prefix("export ") {
                exported = Some(
                    vars.split_whitespace()
                        .map(|kv| {
                            let (k, v) = kv.split_once('=').unwrap();
                            (k.to_owned(), v.to_owned())
                        })
                        .collect(),
                );
            }
            guide.push(line);
        }
        Self {
            child,
            lines,
            guide,
            sim: sim.unwrap(),
            admin: admin.unwrap(),
            exported: exported.unwrap(),
            token,
        }
    }
}
