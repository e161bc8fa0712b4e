//! `docker-compose.yml` and what it mounts: the whole stack comes up with no manual step, and
//! agrees with the code (commands, env names, ports) and with the other deploy files.

use std::collections::BTreeMap;

use serde_norway::Value;
use sha2::{Digest, Sha256};

use crate::checks::{is_pinned, port_of, seq, str_of, unknown_env, yaml};
use crate::code::{self, default_of, env_names, parse_invocation};

fn compose() -> Value {
    yaml(&code::read("docker-compose.yml"))
}

fn services(compose: &Value) -> &serde_norway::Mapping {
    compose["services"].as_mapping().expect("services")
}

/// Whether a service runs the image built from this repository.
fn runs_our_image(service: &Value) -> bool {
    !service["build"].is_null()
}

fn env(service: &Value) -> BTreeMap<String, String> {
    let Some(map) = service["environment"].as_mapping() else {
        return BTreeMap::new();
    };
    map.iter()
        .map(|(k, v)| {
            let value = match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                other => panic!("env value {other:?}"),
            };
            (str_of(k, "env name").to_owned(), value)
        })
        .collect()
}

/// Bind mounts as (host path, container path).
fn bind_mounts(service: &Value) -> Vec<(String, String)> {
    service["volumes"]
        .as_sequence()
        .into_iter()
        .flatten()
        .filter_map(|v| {
            let mut parts = str_of(v, "volume").split(':');
            let host = parts.next()?;
            let container = parts.next()?;
            host.starts_with("./")
                .then(|| (host.to_owned(), container.to_owned()))
        })
        .collect()
}

/// The repository file mounted at `container_path` in `service`.
fn host_file_at(service: &Value, container_path: &str) -> String {
    bind_mounts(service)
        .into_iter()
        .find(|(_, c)| c == container_path)
        .map(|(h, _)| h.trim_start_matches("./").to_owned())
        .unwrap_or_else(|| panic!("nothing is mounted at {container_path}"))
}

/// The invocations of the binary a service makes: its `command` (or a shell line in it, or the
/// script its entrypoint runs) split at `altinn-sync`.
fn invocations(service: &Value) -> Vec<Vec<String>> {
    let words = |v: &Value| -> Vec<String> {
        v.as_sequence()
            .map(|s| s.iter().map(|w| str_of(w, "word").to_owned()).collect())
            .unwrap_or_default()
    };
    let command = words(&service["command"]);
    let entrypoint = words(&service["entrypoint"]);
    let mut lines: Vec<String> = Vec::new();
    match entrypoint.as_slice() {
        [] => return vec![command],
        [sh, flag] if sh.ends_with("sh") && flag == "-c" => lines.extend(command),
        [sh, script] if sh.ends_with("sh") => {
            let host = host_file_at(service, script);
            lines.extend(code::read(&host).lines().map(str::to_owned));
        }
        other => panic!("unexpected entrypoint {other:?}"),
    }
    let mut found = Vec::new();
    for line in lines.iter().filter(|l| !l.trim_start().starts_with('#')) {
        for part in line.split(['&', ';', '|']) {
            let mut words = part.split_whitespace().skip_while(|w| *w != "altinn-sync");
            if words.next().is_some() {
                found.push(words.map(str::to_owned).collect());
            }
        }
    }
    found
}

#[test]
fn every_file_a_service_mounts_exists() {
    let compose = compose();
    let mut mounted = 0;
    for (name, service) in services(&compose) {
        for (host, _) in bind_mounts(service) {
            let path = code::repo().join(host.trim_start_matches("./"));
            assert!(
                path.exists(),
                "{name:?} mounts {host}, which does not exist"
            );
            mounted += 1;
        }
        if runs_our_image(service) {
            let context = str_of(&service["build"], "build context");
            assert!(code::repo().join(context).join("Dockerfile").is_file());
        }
    }
    assert!(mounted >= 10, "only {mounted} files mounted");
}

#[test]
fn the_whole_stack_is_there_with_pinned_images() {
    let compose = compose();
    let services = services(&compose);
    for wanted in [
        "rabbitmq",
        "postgres",
        "altinn-sim",
        "worker",
        "scheduler",
        "otel-collector",
        "jaeger",
        "prometheus",
        "grafana",
    ] {
        assert!(services.contains_key(wanted), "no {wanted} service");
    }
    for (name, service) in services {
        if !runs_our_image(service) {
            let image = str_of(&service["image"], "image");
            assert!(is_pinned(image), "{name:?}: {image} is not pinned");
        }
        let depends = &service["depends_on"];
        let deps: Vec<&Value> = match depends {
            Value::Sequence(s) => s.iter().collect(),
            Value::Mapping(m) => m.keys().collect(),
            _ => Vec::new(),
        };
        for dep in deps {
            assert!(
                services.contains_key(dep),
                "{name:?} depends on unknown {dep:?}"
            );
        }
    }
    // Preloaded RabbitMQ: the definitions file is mounted where rabbitmq.conf loads it from.
    let rabbitmq = &services["rabbitmq"];
    let conf = code::read(&host_file_at(rabbitmq, "/etc/rabbitmq/rabbitmq.conf"));
    let definitions = conf
        .lines()
        .find_map(|l| l.strip_prefix("load_definitions = "))
        .expect("rabbitmq.conf loads definitions");
    assert_eq!(
        host_file_at(rabbitmq, definitions),
        "deploy/rabbitmq/definitions.json"
    );
}

#[test]
fn every_altinn_sync_container_runs_a_real_command_with_env_names_it_reads() {
    let compose = compose();
    let mut seen = BTreeMap::new();
    for (name, service) in services(&compose) {
        if !runs_our_image(service) {
            continue;
        }
        let name = str_of(name, "service").to_owned();
        let calls = invocations(service);
        assert!(!calls.is_empty(), "{name} never runs altinn-sync");
        for args in calls {
            let sub = parse_invocation(&args).unwrap_or_else(|e| panic!("{name}: {e}"));
            let known = env_names(&sub);
            let unknown = unknown_env(env(service).keys().map(String::as_str), &known);
            assert!(
                unknown.is_empty(),
                "{name} sets {unknown:?}, unknown to `{sub}`"
            );
            seen.insert(name.clone(), sub);
        }
    }
    assert_eq!(seen.get("worker").map(String::as_str), Some("run"));
    assert_eq!(
        seen.get("altinn-sim").map(String::as_str),
        Some("altinn-sim")
    );
    assert_eq!(seen.get("scheduler").map(String::as_str), Some("reconcile"));
}

#[test]
fn the_worker_talks_to_the_simulator_collector_and_prometheus_on_their_ports() {
    let compose = compose();
    let services = services(&compose);
    let worker = &services["worker"];
    let worker_env = env(worker);

    // The simulator, wired as `altinn-sync dev` does: Altinn at http://HOST, Maskinporten at
    // http://HOST/ (the simulator checks the grant's aud against the Host it is called on).
    let sim = &services["altinn-sim"];
    let sim_env = env(sim);
    let sim_port = port_of(&sim_env["ALTINN_SIM_LISTEN"]);
    assert_eq!(
        worker_env["ALTINN_BASE_URL"],
        format!("http://altinn-sim:{sim_port}")
    );
    assert_eq!(
        worker_env["MASKINPORTEN_URL"],
        format!("http://altinn-sim:{sim_port}/")
    );
    let world_file = host_file_at(sim, &sim_env["ALTINN_SIM_WORLD"]);
    assert_eq!(world_file, "deploy/sim/demo-world.json");
    let world: serde_json::Value = serde_json::from_str(&code::read(&world_file)).unwrap();
    let client = &world["maskinportenClients"][0];
    assert_eq!(
        client["clientId"],
        worker_env["MASKINPORTEN_CLIENT_ID"].as_str()
    );
    assert_eq!(client["kid"], worker_env["MASKINPORTEN_KID"].as_str());
    assert_eq!(
        host_file_at(worker, &worker_env["MASKINPORTEN_KEY_FILE"]),
        "deploy/sim/test-only-maskinporten-key.pem"
    );
    for scope in client["scopes"].as_array().unwrap() {
        let scope = scope.as_str().unwrap();
        assert!(
            worker_env["MASKINPORTEN_SCOPES"]
                .split(' ')
                .any(|s| s == scope)
        );
    }

    // The admin listener is published and scraped on the port ADMIN_LISTEN opens.
    let admin_port = port_of(&worker_env["ADMIN_LISTEN"]);
    assert!(
        seq(&worker["ports"], "ports")
            .iter()
            .any(|p| p.as_str() == Some(&*format!("127.0.0.1:{admin_port}:{admin_port}"))),
        "the admin port {admin_port} is not published"
    );
    let prometheus = &services["prometheus"];
    let config = yaml(&code::read(&host_file_at(
        prometheus,
        "/etc/prometheus/prometheus.yml",
    )));
    let job = &seq(&config["scrape_configs"], "scrape_configs")[0];
    assert_eq!(job["metrics_path"].as_str(), Some("/metrics"));
    assert_eq!(
        job["static_configs"][0]["targets"][0].as_str(),
        Some(&*format!("worker:{admin_port}"))
    );
    let rules = str_of(&config["rule_files"][0], "rule_files");
    assert_eq!(
        host_file_at(prometheus, rules),
        "deploy/prometheus/alerts.yml"
    );

    // Traces: the base URL of the collector's OTLP/HTTP receiver; the SDK adds /v1/traces.
    let otlp = &worker_env["OTEL_EXPORTER_OTLP_ENDPOINT"];
    let collector = &services["otel-collector"];
    let config_path = str_of(&collector["command"][0], "command")
        .strip_prefix("--config=")
        .expect("--config=");
    let otel = yaml(&code::read(&host_file_at(collector, config_path)));
    let http = str_of(
        &otel["receivers"]["otlp"]["protocols"]["http"]["endpoint"],
        "http",
    );
    assert_eq!(otlp, &format!("http://otel-collector:{}", port_of(http)));
    let pipeline = &otel["service"]["pipelines"]["traces"];
    for (kind, key) in [("receivers", "receivers"), ("exporters", "exporters")] {
        for name in seq(&pipeline[key], key) {
            assert!(
                !otel[kind][name].is_null(),
                "pipeline uses undefined {name:?}"
            );
        }
    }
    let exporter = str_of(&otel["exporters"]["otlp/jaeger"]["endpoint"], "endpoint");
    assert!(services.contains_key(exporter.split(':').next().unwrap()));

    // Shutdown: Docker waits longer than the worker's bound before SIGKILL.
    let grace: u64 = default_of("run", "SHUTDOWN_GRACE_SECS")
        .unwrap()
        .parse()
        .unwrap();
    let stop: u64 = str_of(&worker["stop_grace_period"], "stop_grace_period")
        .trim_end_matches('s')
        .parse()
        .unwrap();
    assert!(stop > grace, "stop_grace_period {stop}s <= {grace}s");
}

/// PostgreSQL trusts every connection, RabbitMQ takes guest/guest and the demo token is public:
/// nothing is published beyond the machine compose runs on.
#[test]
fn every_published_port_is_on_the_loopback_address_only() {
    let compose = compose();
    for (name, service) in services(&compose) {
        let Some(ports) = service.get("ports") else {
            continue;
        };
        for port in seq(ports, "ports") {
            let port = port.as_str().expect("ports are written as strings");
            assert!(
                port.starts_with("127.0.0.1:"),
                "{name:?} publishes {port:?} beyond 127.0.0.1"
            );
        }
    }
}

#[test]
fn grafana_is_provisioned_with_the_dashboard_and_its_datasource() {
    let compose = compose();
    let grafana = &services(&compose)["grafana"];
    let provider = yaml(&code::read(
        "deploy/grafana/provisioning/dashboards/altinn-sync.yml",
    ));
    let dir = str_of(&provider["providers"][0]["options"]["path"], "path");
    assert_eq!(
        host_file_at(grafana, &format!("{dir}/altinn-sync.json")),
        "deploy/grafana/altinn-sync.json"
    );
    let mounts = bind_mounts(grafana);
    for sub in ["datasources", "dashboards"] {
        assert!(mounts.iter().any(
            |(h, c)| h == &format!("./deploy/grafana/provisioning/{sub}")
                && c == &format!("/etc/grafana/provisioning/{sub}")
        ));
    }
    let datasources = yaml(&code::read(
        "deploy/grafana/provisioning/datasources/prometheus.yml",
    ));
    let uid = str_of(&datasources["datasources"][0]["uid"], "uid");
    let dashboard: serde_json::Value =
        serde_json::from_str(&code::read("deploy/grafana/altinn-sync.json")).unwrap();
    assert_eq!(
        dashboard["templating"]["list"][0]["current"]["value"], uid,
        "the dashboard's datasource variable defaults to the provisioned Prometheus"
    );
}

/// A token file line, as issue 9 defines it: `NAME SHA256_HEX SCOPE`.
pub fn token_line_problems(line: &str) -> Vec<String> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let [name, hash, scope] = fields.as_slice() else {
        return vec![format!("{line:?}: not NAME SHA256_HEX SCOPE")];
    };
    let mut problems = Vec::new();
    let name_ok = (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !name_ok {
        problems.push(format!("bad name {name}"));
    }
    if hash.len() != 64
        || !hash
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
    {
        problems.push(format!("{hash} is not lowercase hex SHA-256"));
    }
    let scope_ok = *scope == "*"
        || scope
            .split(',')
            .all(|org| org.len() == 9 && org.chars().all(|c| c.is_ascii_digit()));
    if !scope_ok {
        problems.push(format!("bad scope {scope}"));
    }
    problems
}

#[test]
fn the_demo_admin_token_file_is_well_formed_and_its_documented_token_matches() {
    let compose = compose();
    let worker = &services(&compose)["worker"];
    let text = code::read("deploy/compose/admin-tokens");
    assert!(
        bind_mounts(worker)
            .iter()
            .any(|(h, _)| h == "./deploy/compose/admin-tokens"),
        "the worker does not mount the token file"
    );
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert_eq!(lines.len(), 1);
    let problems = token_line_problems(lines[0]);
    assert!(problems.is_empty(), "{problems:?}");
    // The plaintext demo token, documented in a comment, hashes to the line's hash.
    let token = text
        .lines()
        .find_map(|l| l.trim_start_matches('#').trim().strip_prefix("demo-only-"))
        .map(|rest| format!("demo-only-{rest}"))
        .expect("the demo token is documented");
    let hash = hex::encode(Sha256::digest(token.as_bytes()));
    assert_eq!(lines[0].split_whitespace().nth(1), Some(hash.as_str()));
    assert!(
        text.contains("NEVER USE"),
        "the demo token is marked as such"
    );
}

/// The scheduler's next run, computed by its own script with the system's `date` and tzdata.
fn next_run(after: &str) -> String {
    let date = |args: &[&str]| {
        let out = std::process::Command::new("date")
            .args(args)
            .env("TZ", "UTC")
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    let epoch = date(&["-d", after, "+%s"]);
    let out = std::process::Command::new("sh")
        .arg(code::repo().join("deploy/compose/nightly-reconcile.sh"))
        .args(["next-run", &epoch])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let next = String::from_utf8(out.stdout).unwrap();
    date(&["-d", &format!("@{}", next.trim()), "+%Y-%m-%dT%H:%MZ"])
}

#[test]
fn the_compose_scheduler_runs_at_two_oslo_time_through_daylight_saving() {
    // Winter (UTC+1), summer (UTC+2), just before and at 02:00, and the spring-forward night
    // without a 02:00 (run at 03:00, as cron does).
    assert_eq!(next_run("2026-01-15T10:00Z"), "2026-01-16T01:00Z");
    assert_eq!(next_run("2026-07-01T00:30Z"), "2026-07-02T00:00Z");
    assert_eq!(next_run("2026-01-15T00:59Z"), "2026-01-15T01:00Z");
    assert_eq!(next_run("2026-01-15T01:00Z"), "2026-01-16T01:00Z");
    assert_eq!(next_run("2026-03-28T12:00Z"), "2026-03-29T01:00Z");
}
