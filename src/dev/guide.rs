//! The guide dev prints once everything is up: what to run next, against this run's simulator,
//! database, exchange and admin API.

use std::net::SocketAddr;

use super::demo::DEMO_FIRM;
use crate::worker::WorkerSettings;

/// What the database already holds, for the guide.
pub(super) struct Known {
    /// Firms that a reconcile at start will align with the (empty) simulator.
    pub(super) firms: i64,
    /// How many of the demo events this database has applied already.
    pub(super) demo_events_seen: i64,
}

/// What to do next, with this run's simulator address, database, exchange and prefix.
pub(super) fn guide(
    addr: SocketAddr,
    admin: SocketAddr,
    settings: &WorkerSettings,
    known: &Known,
) -> String {
    let mut text = demo_steps(addr, settings);
    text.push_str(&known_notes(known));
    if settings.admin.admin_tokens_file.is_some() {
        text.push_str(&admin_api(admin));
    }
    text.push_str("\nCtrl-C stops the worker, then the simulator.\n");
    text
}

/// The demo itself: publish, sync and look at the simulator, in another terminal.
fn demo_steps(addr: SocketAddr, settings: &WorkerSettings) -> String {
    let ingest = &settings.ingest;
    let database = printable_database_url(&settings.db.database_url);
    let publish = |key: &str, file: &str| {
        format!("altinn-sync publish --routing-key {key:<14} schemas/examples/demo/{file}")
    };
    let sync = format!("altinn-sync sync --firm {DEMO_FIRM}");
    let curl = format!("curl -s http://{addr}/_sim/delegations");
    format!(
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
    )
}

/// A URL with a password is the user's to paste, not ours to print.
fn printable_database_url(url: &str) -> &str {
    let has_password = url
        .split_once("://")
        .and_then(|(_, rest)| rest.split_once('@'))
        .is_some_and(|(user, _)| user.contains(':'));
    if has_password {
        "<your DATABASE_URL>"
    } else {
        url
    }
}

/// What the demo does differently on a database that has seen it, or other firms, before.
fn known_notes(known: &Known) -> String {
    let mut text = String::new();
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
    text
}

fn admin_api(admin: SocketAddr) -> String {
    let api = format!("http://{admin}/v1/firms/{DEMO_FIRM}");
    format!(
        "\nThe admin API (health, metrics and /v1) is at http://{admin}. With the ADMIN_TOKEN \
         line dev prints on standard output:\n\
         \n  export ADMIN_TOKEN=...   # from standard output\
         \n  curl -s -H \"Authorization: Bearer $ADMIN_TOKEN\" {api}/status\
         \n  curl -s -X POST -H \"Authorization: Bearer $ADMIN_TOKEN\" {api}/sync\
         \n  curl -s http://{admin}/metrics | grep altinn_sync_deliveries_total\n"
    )
}
