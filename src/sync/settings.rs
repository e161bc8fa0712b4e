//! The flush's settings: pace, leases, retries and the guard rails.

use std::time::Duration;

use crate::altinn::Concurrency;

/// `REVOKE_GUARD_MIN`'s default: a large firm's mass removal, not a week's churn.
pub const DEFAULT_REVOKE_GUARD_MIN: u64 = 50;
/// `REVOKE_GUARD_SHARE`'s default: more than half of the firm's access.
pub const DEFAULT_REVOKE_GUARD_SHARE: f64 = 0.5;
/// `REVOKE_GUARD_SPREAD`'s default: at least two employees and two clients.
pub const DEFAULT_REVOKE_GUARD_SPREAD: u64 = 2;

/// Flush settings; every flag is also an environment variable.
#[derive(Debug, Clone, clap::Args)]
pub struct FlushSettings {
    /// First wait after a failed delivery, in milliseconds; it doubles (with jitter) per attempt.
    #[arg(long, env = "FLUSH_RETRY_INITIAL_MS", default_value_t = 1000)]
    pub flush_retry_initial_ms: u64,
    /// Longest wait between delivery attempts, in seconds.
    #[arg(long, env = "FLUSH_RETRY_MAX_SECS", default_value_t = 600)]
    pub flush_retry_max_secs: u64,
    /// A fixed number of Altinn calls in flight at once, over all firms. Unset (the default),
    /// the number adapts to Altinn's capacity between FLUSH_CONCURRENCY_MIN and
    /// FLUSH_CONCURRENCY_MAX: it grows while answers stay fast, and is cut on a 429, a 503,
    /// a timeout or a rising latency.
    #[arg(long, env = "FLUSH_CONCURRENCY", value_parser = clap::value_parser!(u64).range(1..))]
    pub flush_concurrency: Option<u64>,
    /// The adaptive limit's floor, and where it starts.
    #[arg(long, env = "FLUSH_CONCURRENCY_MIN", default_value_t = 16,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub flush_concurrency_min: u64,
    /// The adaptive limit's ceiling.
    #[arg(long, env = "FLUSH_CONCURRENCY_MAX", default_value_t = 256,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub flush_concurrency_max: u64,
    /// How long a dispatcher holds the rows it claimed; a killed worker's rows are taken over
    /// after this. Longer than the slowest Altinn call with its retries on one connection.
    #[arg(long, env = "FLUSH_LEASE_SECS", default_value_t = 120)]
    pub flush_lease_secs: u64,
    /// Remove an employee with no access left to manage as the firm's agent in Altinn
    /// (`cascade=false`: a person holding packages this worker does not manage is left alone).
    #[arg(long, env = "REMOVE_IDLE_AGENTS", default_value_t = false)]
    pub remove_idle_agents: bool,
    /// Altinn calls in flight at once for any one firm.
    #[arg(long, env = "FLUSH_CONCURRENCY_PER_FIRM", default_value_t = 4)]
    pub flush_concurrency_per_firm: usize,
    /// Make before break: the longest a revoke on a client waits for the grant of the client's
    /// new project accountant, in seconds. After that it is delivered anyway.
    #[arg(long, env = "MAKE_BEFORE_BREAK_MAX_SECS", default_value_t = 900)]
    pub make_before_break_max_secs: u64,
    /// The kill switch: `false` plans revokes but never sends them (they wait in the outbox,
    /// held) and stops idle-agent removal; grants still go out. `true` again sends them.
    #[arg(long, env = "REVOKES_ENABLED", default_value_t = true, action = clap::ArgAction::Set)]
    pub revokes_enabled: bool,
    /// The mass-revoke guard (`sync::guard`): besides a firm emptied, a firm's revokes are
    /// staged for approval when this many or more are planned or were sent without approval
    /// in the last 24 hours...
    #[arg(long, env = "REVOKE_GUARD_MIN", default_value_t = DEFAULT_REVOKE_GUARD_MIN)]
    pub revoke_guard_min: u64,
    /// ...they are more than this share of the firm's grants before them (0 to 1)...
    #[arg(long, env = "REVOKE_GUARD_SHARE", default_value_t = DEFAULT_REVOKE_GUARD_SHARE,
          value_parser = share)]
    pub revoke_guard_share: f64,
    /// ...and they concern at least this many employees and this many clients: one person
    /// leaving, or one client, is ordinary churn. 1 counts every revoke.
    #[arg(long, env = "REVOKE_GUARD_SPREAD", default_value_t = DEFAULT_REVOKE_GUARD_SPREAD,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub revoke_guard_spread: u64,
    /// Sync a firm by itself this many seconds after its desired grants last changed (and at
    /// most ten times as long after the first unsynced change). Unset: only on request and at
    /// the nightly reconcile.
    #[arg(long, env = "AUTO_SYNC_AFTER_SECS", value_parser = clap::value_parser!(u64).range(1..))]
    pub auto_sync_after_secs: Option<u64>,
}

impl FlushSettings {
    /// How many Altinn calls go out at once.
    pub fn concurrency(&self) -> Concurrency {
        let n = |v: u64| usize::try_from(v).unwrap_or(usize::MAX);
        match self.flush_concurrency {
            Some(fixed) => Concurrency::Fixed(n(fixed)),
            None => Concurrency::Adaptive {
                min: n(self.flush_concurrency_min),
                initial: n(self.flush_concurrency_min),
                max: n(self.flush_concurrency_max.max(self.flush_concurrency_min)),
            },
        }
    }

    /// The automatic sync's debounce, when it is on.
    pub fn auto_sync_after(&self) -> Option<Duration> {
        self.auto_sync_after_secs.map(Duration::from_secs)
    }
}

/// A share between 0 and 1.
fn share(s: &str) -> std::result::Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("`{s}` is not a share between 0 and 1")),
    }
}
