//! The command line. Every flag is also an environment variable; `--help` shows both.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::ingest::BrokerSettings;
use crate::policy::{DEFAULT_ROLE_MAPPING, RoleMapping};
use crate::state::DbSettings;
use crate::sync::FlushSettings;
use crate::telemetry::TelemetrySettings;
use crate::worker::WorkerSettings;

#[derive(Debug, Parser)]
#[command(name = "altinn-sync", version, about, long_about = None)]
pub struct Cli {
    #[command(flatten)]
    pub telemetry: TelemetrySettings,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the worker: consume AdminFlow events and commands into the desired state.
    Run(Box<WorkerSettings>),
    /// Try it: the Altinn simulator in-process with a demo world, and the worker against it,
    /// the local RabbitMQ and PostgreSQL.
    Dev(Box<crate::dev::DevArgs>),
    /// Create the database if needed and apply migrations, then exit.
    Migrate(DbSettings),
    /// Publish one JSON message with a publisher confirm (for operators, demos and tests).
    Publish(PublishArgs),
    /// Print a firm's desired grants, sorted by employee id, client and package.
    Desired {
        #[command(flatten)]
        db: DbSettings,
        /// The firm's organisation number.
        #[arg(long, env = "FIRM")]
        firm: String,
        /// Print a JSON array of {employee_id, client_org_number, package}.
        #[arg(long, env = "OUTPUT_JSON")]
        json: bool,
    },
    /// Recompute every desired grant from the facts, with the given role mapping.
    RebuildDesired {
        #[command(flatten)]
        db: DbSettings,
        #[arg(long, env = "ROLE_MAPPING", default_value = DEFAULT_ROLE_MAPPING)]
        role_mapping: RoleMapping,
    },
    /// Explain an employee's access: roles, clients, project-accountant slots, each package's
    /// state and a verdict ("why is my Altinn access missing?").
    Explain {
        #[command(flatten)]
        ops: OpsArgs,
        /// The employee's AdminFlow id.
        #[arg(long, env = "EMPLOYEE")]
        employee: uuid::Uuid,
    },
    /// A firm's status: its last sync and reconcile, and its changes by state.
    Status(OpsArgs),
    /// A dry run: what a sync of the firm would send now. Changes nothing.
    Plan(OpsArgs),
    /// Revokes the mass-revoke guard holds back until approved.
    Staged(OpsArgs),
    /// Release the firm's staged revokes (`--ids`, or `--all`): they are sent.
    Approve(DecideArgs),
    /// Drop the firm's staged revokes (`--ids`, or `--all`); the next plan stages again what
    /// AdminFlow still removes.
    Reject(DecideArgs),
    /// The firm's audit, newest first: every delivery, refusal, approval and retry, and who.
    Audit(AuditArgs),
    /// Ask the running worker's /healthz (on ADMIN_LISTEN); exits 0 when healthy. For the
    /// container's HEALTHCHECK, which has no curl.
    Healthcheck {
        #[arg(long, env = "ADMIN_LISTEN", default_value = "127.0.0.1:8080")]
        admin_listen: std::net::SocketAddr,
    },
    /// Print the admin API's OpenAPI document (committed as schemas/admin-api.openapi.json).
    Openapi,
    /// Make a new admin API token: prints the token once, and the line for ADMIN_TOKENS_FILE.
    AdminToken {
        /// Who holds it: recorded as the actor of what it does. [A-Za-z0-9._-]{1,64}
        #[arg(long)]
        name: String,
        /// `*` for every firm, or organisation numbers separated by commas.
        #[arg(long)]
        firms: String,
        /// A read-only token: every GET of the API, and 403 on every POST.
        #[arg(long)]
        read_only: bool,
    },
    /// List dead-lettered messages and why, newest first.
    DeadLetters {
        #[command(flatten)]
        db: DbSettings,
        /// Only this firm's dead letters.
        #[arg(long, env = "FIRM")]
        firm: Option<String>,
        /// How many to show.
        #[arg(long, env = "DEAD_LETTERS_LIMIT", default_value_t = 50)]
        limit: i64,
        /// Print JSON.
        #[arg(long, env = "OUTPUT_JSON")]
        json: bool,
    },
    /// Accept a firm's new sequence numbering after AdminFlow was restored from a backup.
    ///
    /// Every fact of the firm may then be overwritten by the next event that touches it. Replay
    /// the firm's `sequence-regression` dead letters afterwards.
    Resequence {
        #[command(flatten)]
        db: DbSettings,
        /// The firm's organisation number.
        #[arg(long, env = "FIRM")]
        firm: String,
        /// Also for a firm that is not on hold (its stale events could then win).
        #[arg(long)]
        force: bool,
    },
    /// Ask the worker to flush a firm to Altinn now (publishes a SyncNow command).
    Sync(SyncArgs),
    /// Ask the worker for a full reconcile with Altinn now (publishes a NightlyReconcile command).
    Reconcile(ReconcileArgs),
    /// List firms whose flush is paused, and changes Altinn refused for good with the
    /// explanation, newest first.
    Parked {
        #[command(flatten)]
        db: DbSettings,
        /// Only this firm's.
        #[arg(long, env = "FIRM")]
        firm: Option<String>,
        /// Print JSON.
        #[arg(long, env = "OUTPUT_JSON")]
        json: bool,
    },
    /// Re-queue a firm's parked changes, or one of them, for the next delivery.
    Retry {
        #[command(flatten)]
        ops: OpsArgs,
        /// Only the parked change with this id (from `parked`).
        #[arg(long)]
        id: Option<i64>,
    },
    /// Serve the Altinn and Maskinporten simulator (for tests, benchmarks and development).
    AltinnSim(crate::sim::SimArgs),
    /// Check a real Altinn setup step by step with run's settings, changing nothing: the key,
    /// Maskinporten, the token exchange, the firm's party, its clients and agents. Exits
    /// non-zero on any failure.
    Doctor(Box<crate::doctor::DoctorArgs>),
    /// Delete processed event ids and tombstones older than the retention period, then exit.
    Prune {
        #[command(flatten)]
        db: DbSettings,
        #[arg(long, env = "RETENTION_DAYS", default_value_t = 30)]
        retention_days: u64,
        #[arg(long, env = "AUDIT_RETENTION_DAYS", default_value_t = 400)]
        audit_retention_days: u64,
    },
}

#[derive(Debug, clap::Args)]
pub struct PublishArgs {
    #[command(flatten)]
    pub broker: BrokerSettings,
    /// Exchange to publish to, e.g. adminflow.events or altinn-sync.commands.
    #[arg(long, env = "PUBLISH_EXCHANGE")]
    pub exchange: String,
    /// Routing key: the event or command type.
    #[arg(long, env = "PUBLISH_ROUTING_KEY")]
    pub routing_key: String,
    /// The JSON file to publish, or - for standard input.
    pub file: PathBuf,
}

/// A firm, and the worker's settings its answers depend on (read from the same environment).
#[derive(Debug, clap::Args)]
pub struct OpsArgs {
    #[command(flatten)]
    pub db: DbSettings,
    #[command(flatten)]
    pub flush: FlushSettings,
    /// The worker's Altinn URL; only whether it is set matters here (without it nothing is
    /// sent to Altinn, and `explain` says so).
    #[arg(long, env = "ALTINN_BASE_URL", hide = true)]
    pub altinn_base_url: Option<String>,
    /// The firm's organisation number.
    #[arg(long, env = "FIRM")]
    pub firm: String,
    /// Print JSON, as the admin API serves it.
    #[arg(long, env = "OUTPUT_JSON")]
    pub json: bool,
    /// Who is acting, for the audit of approve, reject and retry.
    #[arg(long, env = "ACTOR", default_value = "cli")]
    pub actor: String,
}

impl OpsArgs {
    pub fn mode(&self) -> crate::ops::Mode {
        crate::ops::Mode {
            flush_on: self
                .altinn_base_url
                .as_deref()
                .is_some_and(|u| !u.trim().is_empty()),
            flush: self.flush.clone(),
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct DecideArgs {
    #[command(flatten)]
    pub ops: OpsArgs,
    #[command(flatten)]
    pub which: Which,
}

/// Which staged revokes: named, or every one. One of the two must be given, so a forgotten
/// `--ids` never releases a whole firm's staged revokes.
#[derive(Debug, clap::Args)]
#[group(required = true, multiple = false)]
pub struct Which {
    /// These staged revokes (ids from `staged`).
    #[arg(long, value_delimiter = ',')]
    pub ids: Option<Vec<i64>>,
    /// Every staged revoke of the firm.
    #[arg(long)]
    pub all: bool,
}

#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    #[command(flatten)]
    pub ops: OpsArgs,
    /// Only this employee's entries.
    #[arg(long)]
    pub employee: Option<uuid::Uuid>,
    /// Only this client's entries.
    #[arg(long)]
    pub client: Option<String>,
    /// How many (at most 500).
    #[arg(long, default_value_t = 50)]
    pub limit: i64,
    /// Entries older than this audit id (the previous page's `more: --before`).
    #[arg(long)]
    pub before: Option<i64>,
}

#[derive(Debug, clap::Args)]
pub struct SyncArgs {
    #[command(flatten)]
    pub broker: BrokerSettings,
    /// Prefix of the worker's queues and exchanges.
    #[arg(long, env = "TOPOLOGY_PREFIX", default_value = crate::ingest::DEFAULT_TOPOLOGY_PREFIX)]
    pub topology_prefix: String,
    /// The firm's organisation number.
    #[arg(long, env = "FIRM")]
    pub firm: String,
    /// Flush only once the firm's events up to this sequence are applied (waits up to 30 s).
    #[arg(long, env = "AFTER_SEQUENCE")]
    pub after_sequence: Option<i64>,
    /// Who asked, for the audit.
    #[arg(long, env = "REQUESTED_BY")]
    pub requested_by: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct ReconcileArgs {
    #[command(flatten)]
    pub broker: BrokerSettings,
    /// Prefix of the worker's queues and exchanges.
    #[arg(long, env = "TOPOLOGY_PREFIX", default_value = crate::ingest::DEFAULT_TOPOLOGY_PREFIX)]
    pub topology_prefix: String,
    /// Only this firm; every firm when left out.
    #[arg(long, env = "FIRM")]
    pub firm: Option<String>,
    /// Who asked, for the audit.
    #[arg(long, env = "REQUESTED_BY")]
    pub requested_by: Option<String>,
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    #[test]
    fn approving_or_rejecting_names_the_revokes_or_says_all() {
        for verb in ["approve", "reject"] {
            let parse = |extra: &[&str]| {
                let args = [&["altinn-sync", verb, "--firm", "912345610"], extra].concat();
                Cli::try_parse_from(args)
            };
            assert!(parse(&[]).is_err(), "{verb} without --ids or --all");
            assert!(parse(&["--ids", "1", "--all"]).is_err(), "{verb} with both");
            assert!(parse(&["--ids", "1,2"]).is_ok());
            assert!(parse(&["--all"]).is_ok());
        }
    }
}
