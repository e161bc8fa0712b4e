//! What the code says, for the deploy files to agree with: the commands, their flags and env
//! names (from clap, the same definition the binary parses), the routes, and the Prometheus
//! series (string literals in `src/`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use altinn_sync::cli::Cli;
use clap::CommandFactory;

/// Read by the OpenTelemetry SDK itself, not by a clap flag (issue 10: pass no endpoint in code).
pub const OTEL_SDK_ENV: [&str; 3] = [
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_SERVICE_NAME",
];

/// The series issue 10 fixes by name; each must be exported and on the dashboard.
pub const REQUIRED_SERIES: [&str; 15] = [
    "altinn_sync_events_total",
    "altinn_sync_commands_total",
    "altinn_sync_batch_duration_seconds",
    "altinn_sync_outbox_rows",
    "altinn_sync_outbox_oldest_pending_seconds",
    "altinn_sync_altinn_requests_total",
    "altinn_sync_altinn_request_duration_seconds",
    "altinn_sync_deliveries_total",
    "altinn_sync_firms_paused",
    "altinn_sync_last_reconcile_timestamp_seconds",
    "altinn_sync_drift_grants_total",
    "altinn_sync_ready",
    "altinn_sync_oldest_pause_seconds",
    "altinn_sync_setup_error",
    "altinn_sync_dead_letters",
];

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn read(relative: &str) -> String {
    let path = repo().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every `.rs` file under `src/`, with its text.
pub fn sources() -> Vec<(PathBuf, String)> {
    fn walk(dir: &Path, out: &mut Vec<(PathBuf, String)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                out.push((path, text));
            }
        }
    }
    let mut out = Vec::new();
    walk(&repo().join("src"), &mut out);
    assert!(!out.is_empty(), "no sources under src/");
    out
}

/// The binary's command line, built (so global flags reach every subcommand).
pub fn cli() -> clap::Command {
    let mut cmd = Cli::command();
    cmd.build();
    cmd
}

/// The env names a subcommand reads: its flags', the global ones', and what the libraries read
/// from the environment themselves (the OTel SDK; tracing-subscriber's RUST_LOG, when the code
/// uses `EnvFilter::try_from_default_env`).
pub fn env_names(subcommand: &str) -> BTreeSet<String> {
    let cmd = cli();
    let sub = cmd
        .find_subcommand(subcommand)
        .unwrap_or_else(|| panic!("altinn-sync has no subcommand {subcommand}"));
    let mut names: BTreeSet<String> = cmd
        .get_arguments()
        .chain(sub.get_arguments())
        .filter_map(|a| a.get_env())
        .map(|e| e.to_string_lossy().into_owned())
        .collect();
    names.extend(OTEL_SDK_ENV.iter().map(|s| (*s).to_owned()));
    if sources()
        .iter()
        .any(|(_, text)| text.contains("EnvFilter::try_from_default_env"))
    {
        names.insert("RUST_LOG".into());
    }
    names
}

/// The default of the flag a subcommand reads from `env`, as clap shows it.
pub fn default_of(subcommand: &str, env: &str) -> Option<String> {
    let cmd = cli();
    let sub = cmd.find_subcommand(subcommand)?;
    let arg = sub
        .get_arguments()
        .find(|a| a.get_env().is_some_and(|e| e == env))?;
    arg.get_default_values()
        .first()
        .map(|v| v.to_string_lossy().into_owned())
}

/// Parses an invocation of the binary (words after `altinn-sync`) as the binary would, without
/// the test process's environment mattering for required flags; returns the subcommand.
pub fn parse_invocation(args: &[String]) -> Result<String, String> {
    let matches = cli()
        .try_get_matches_from(std::iter::once("altinn-sync".to_owned()).chain(args.to_vec()))
        .map_err(|e| format!("`altinn-sync {}`: {e}", args.join(" ")))?;
    matches
        .subcommand_name()
        .map(str::to_owned)
        .ok_or_else(|| format!("`altinn-sync {}` names no subcommand", args.join(" ")))
}

/// The Prometheus series the code names: every string literal `"altinn_sync_..."` in `src/`,
/// and which of them are histograms (named in a `histogram!`/`describe_histogram!` call,
/// directly or through a `const`).
#[derive(Debug, Default)]
pub struct Series {
    pub names: BTreeSet<String>,
    pub histograms: BTreeSet<String>,
}

impl Series {
    pub fn from_code() -> Self {
        let texts: Vec<String> = sources().into_iter().map(|(_, t)| t).collect();
        Self::from_sources(&texts)
    }

    pub fn from_sources(texts: &[String]) -> Self {
        let mut series = Self::default();
        let mut consts = BTreeMap::new();
        for text in texts {
            // Read from each opening `"altinn_sync_`, so a quote elsewhere (a char literal, a
            // raw string) cannot shift what counts as inside a literal.
            for (i, _) in text.match_indices("\"altinn_sync_") {
                if let Some(name) = text[i + 1..].split('"').next()
                    && is_series_name(name)
                {
                    series.names.insert(name.to_owned());
                }
            }
            // `const NAME: &str = "altinn_sync_...";`
            for line in text.lines() {
                let line = line.trim();
                let Some(rest) = line
                    .strip_prefix("pub const ")
                    .or_else(|| line.strip_prefix("const "))
                else {
                    continue;
                };
                if let Some((ident, value)) = rest.split_once(": &str = ")
                    && let Some(literal) = literals(value).into_iter().next()
                {
                    consts.insert(ident.trim().to_owned(), literal);
                }
            }
        }
        for text in texts {
            for (i, _) in text.match_indices("histogram!(") {
                let arg: String = text[i + "histogram!(".len()..]
                    .trim_start()
                    .chars()
                    .take_while(|c| !matches!(c, ',' | ')'))
                    .collect();
                let arg = arg.trim();
                let name = match literals(arg).into_iter().next() {
                    Some(literal) => Some(literal),
                    None => consts.get(arg).cloned(),
                };
                if let Some(name) = name.filter(|n| is_series_name(n)) {
                    series.histograms.insert(name);
                }
            }
        }
        series
    }

    /// Whether a name used in PromQL is exported: a series, or a histogram's `_bucket`, `_sum`
    /// or `_count`.
    pub fn exports(&self, used: &str) -> bool {
        if self.names.contains(used) {
            return true;
        }
        ["_bucket", "_sum", "_count"].iter().any(|suffix| {
            used.strip_suffix(suffix)
                .is_some_and(|base| self.histograms.contains(base))
        })
    }
}

fn is_series_name(s: &str) -> bool {
    s.strip_prefix("altinn_sync_").is_some_and(|rest| {
        !rest.is_empty() && rest.chars().all(|c| c.is_ascii_lowercase() || c == '_')
    })
}

/// The plain `"..."` string literals of a short piece of Rust (a `const`'s value, a macro's
/// first argument).
fn literals(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find('"') {
        let after = &rest[start + 1..];
        let Some(end) = after.find('"') else { break };
        out.push(after[..end].to_owned());
        rest = &after[end + 1..];
    }
    out
}

/// Whether `literal` appears as a string literal somewhere in `src/` (label values, routes).
pub fn has_literal(literal: &str) -> bool {
    let quoted = format!("\"{literal}\"");
    sources().iter().any(|(_, text)| text.contains(&quoted))
}
