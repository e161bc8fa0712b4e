//! `deploy/systemd/` and the `Dockerfile`: the commands they run exist, and they keep the
//! promises the Kubernetes manifests keep (non-root, shutdown bound, 02:00 Oslo).

use std::collections::BTreeMap;

use crate::checks::{is_pinned, unknown_env, yaml};
use crate::code::{self, default_of, env_names, parse_invocation};

/// A unit file's `Key=Value` lines, every value of a repeated key kept.
fn unit(path: &str) -> BTreeMap<String, Vec<String>> {
    let mut keys: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in code::read(path).lines() {
        let line = line.trim();
        if line.starts_with(['#', ';', '[']) || line.is_empty() {
            continue;
        }
        let (key, value) = line.split_once('=').expect("Key=Value");
        keys.entry(key.to_owned())
            .or_default()
            .push(value.to_owned());
    }
    keys
}

fn one<'a>(unit: &'a BTreeMap<String, Vec<String>>, key: &str) -> &'a str {
    unit.get(key)
        .and_then(|v| v.last())
        .unwrap_or_else(|| panic!("no {key}="))
}

/// The subcommand an `ExecStart=/path/altinn-sync ARGS` runs.
fn exec_start(unit: &BTreeMap<String, Vec<String>>) -> String {
    let mut words = one(unit, "ExecStart").split_whitespace();
    assert!(words.next().unwrap().ends_with("/altinn-sync"));
    parse_invocation(&words.map(str::to_owned).collect::<Vec<_>>()).unwrap()
}

fn seconds(value: &str) -> u64 {
    value.trim_end_matches('s').parse().unwrap()
}

#[test]
fn the_systemd_worker_restarts_on_failure_hardened_with_a_stop_bound_above_the_workers() {
    let service = unit("deploy/systemd/altinn-sync.service");
    assert_eq!(exec_start(&service), "run");
    assert_eq!(one(&service, "Restart"), "on-failure");
    assert!(one(&service, "EnvironmentFile").starts_with('/'));
    assert_ne!(one(&service, "User"), "root");
    for (key, value) in [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("CapabilityBoundingSet", ""),
    ] {
        assert_eq!(one(&service, key), value, "{key}");
    }
    let grace: u64 = default_of("run", "SHUTDOWN_GRACE_SECS")
        .unwrap()
        .parse()
        .unwrap();
    assert!(seconds(one(&service, "TimeoutStopSec")) > grace);

    // The example environment file sets only what `run` reads.
    let example = code::read("deploy/systemd/altinn-sync.env.example");
    let names: Vec<&str> = example
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.split_once('=').unwrap().0)
        .collect();
    let unknown = unknown_env(names, &env_names("run"));
    assert!(
        unknown.is_empty(),
        "altinn-sync.env.example sets {unknown:?}"
    );
}

#[test]
fn the_systemd_timer_publishes_the_reconcile_at_two_oslo_time() {
    let timer = unit("deploy/systemd/altinn-sync-reconcile.timer");
    assert_eq!(one(&timer, "OnCalendar"), "*-*-* 02:00 Europe/Oslo");
    assert_eq!(one(&timer, "Persistent"), "true");
    // A timer starts the service of its own name.
    let service = unit("deploy/systemd/altinn-sync-reconcile.service");
    assert_eq!(exec_start(&service), "reconcile");
    assert_eq!(one(&service, "Type"), "oneshot");
    let set: Vec<&str> = service
        .get("Environment")
        .into_iter()
        .flatten()
        .map(|e| e.split_once('=').unwrap().0)
        .collect();
    let unknown = unknown_env(set, &env_names("reconcile"));
    assert!(unknown.is_empty(), "the reconcile unit sets {unknown:?}");
}

#[test]
fn the_dockerfile_pins_caches_labels_runs_unprivileged_and_checks_health() {
    let dockerfile = code::read("Dockerfile");
    let lines: Vec<&str> = dockerfile
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect();
    let mut stages = Vec::new();
    for line in lines.iter().filter(|l| l.starts_with("FROM ")) {
        let words: Vec<&str> = line.split_whitespace().collect();
        let image = words[1];
        if !stages.contains(&image) {
            assert!(is_pinned(image), "{image} is not pinned");
        }
        if let [.., as_, name] = words.as_slice()
            && as_.eq_ignore_ascii_case("as")
        {
            stages.push(name);
        }
    }
    assert!(stages.len() >= 3, "chef, planner and builder stages");
    // Dependencies are cooked from the recipe before the sources are copied in.
    let cook = dockerfile.find("cargo chef cook").expect("cargo chef cook");
    let prepare = dockerfile
        .find("cargo chef prepare")
        .expect("cargo chef prepare");
    let last_copy = dockerfile.rfind("COPY . .").unwrap();
    assert!(prepare < cook && cook < last_copy);
    assert!(dockerfile.contains("--version"), "cargo-chef is pinned");
    for label in [
        "title",
        "description",
        "licenses",
        "version",
        "revision",
        "source",
    ] {
        assert!(
            dockerfile.contains(&format!("org.opencontainers.image.{label}=")),
            "no OCI label {label}"
        );
    }

    // The runtime stage installs nothing (no apt step, so no unpinned package, DL3008): what it
    // needs is in the base image or copied from a pinned stage.
    let runtime = &lines[lines.iter().rposition(|l| l.starts_with("FROM ")).unwrap()..];
    assert!(
        !runtime.iter().any(|l| l.starts_with("RUN ")),
        "the runtime stage runs {:?}",
        runtime.iter().find(|l| l.starts_with("RUN "))
    );

    // The runtime user is the one the manifests run as.
    let user = lines
        .iter()
        .rev()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("USER");
    let uid = user.split(':').next().unwrap();
    assert_ne!(uid, "0");
    let deployment = yaml(&code::read("deploy/kubernetes/base/deployment.yaml"));
    assert_eq!(
        deployment["spec"]["template"]["spec"]["securityContext"]["runAsUser"].as_u64(),
        uid.parse().ok()
    );

    // HEALTHCHECK runs the binary's own healthcheck (the slim image has no curl).
    let start = dockerfile.find("HEALTHCHECK").expect("HEALTHCHECK");
    let cmd = &dockerfile[start..];
    let cmd = &cmd[cmd.find("CMD [").expect("exec-form CMD") + 4..];
    let array: Vec<String> = serde_json::from_str(&cmd[..=cmd.find(']').unwrap()]).unwrap();
    assert!(array[0].ends_with("/altinn-sync"));
    assert_eq!(parse_invocation(&array[1..]).unwrap(), "healthcheck");
    let expose = lines
        .iter()
        .find_map(|l| l.strip_prefix("EXPOSE "))
        .expect("EXPOSE");
    let admin = default_of("run", "ADMIN_LISTEN").map(|a| crate::checks::port_of(&a));
    assert_eq!(expose.trim().parse().ok(), admin, "EXPOSE the admin port");
}
