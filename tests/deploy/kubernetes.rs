//! `deploy/kubernetes/`: the kustomize base and overlays agree with the code.

use std::collections::BTreeMap;
use std::path::Path;

use serde_norway::Value;

use crate::checks::{
    container_env_names, port_of, probe_problems, seq, str_of, unknown_env, yaml, yaml_documents,
};
use crate::code::{self, default_of, env_names, parse_invocation};

const KUSTOMIZATIONS: [&str; 4] = [
    "deploy/kubernetes/base",
    "deploy/kubernetes/overlays/test",
    "deploy/kubernetes/overlays/prod",
    "deploy/kubernetes/components/servicemonitor",
];

/// The base's resources by kind (one of each), the NetworkPolicies (one per component) by
/// `NetworkPolicy/NAME`.
pub fn base() -> BTreeMap<String, Value> {
    let kustomization = yaml(&code::read("deploy/kubernetes/base/kustomization.yaml"));
    let mut by_kind = BTreeMap::new();
    for resource in seq(&kustomization["resources"], "resources") {
        let path = format!("deploy/kubernetes/base/{}", str_of(resource, "resource"));
        for doc in yaml_documents(&code::read(&path)) {
            let mut kind = str_of(&doc["kind"], "kind").to_owned();
            if kind == "NetworkPolicy" {
                kind = format!("{kind}/{}", str_of(&doc["metadata"]["name"], "name"));
            }
            assert!(
                by_kind.insert(kind.clone(), doc).is_none(),
                "two {kind}s in the base"
            );
        }
    }
    by_kind
}

/// `KEY=VALUE` literals of the `altinn-sync` ConfigMap generator of a kustomization.
pub fn config_literals(kustomization: &Value) -> BTreeMap<String, String> {
    let generators = seq(&kustomization["configMapGenerator"], "configMapGenerator");
    let generator = generators
        .iter()
        .find(|g| g["name"].as_str() == Some("altinn-sync"))
        .expect("a configMapGenerator named altinn-sync");
    seq(&generator["literals"], "literals")
        .iter()
        .map(|l| {
            let (k, v) = str_of(l, "literal")
                .split_once('=')
                .expect("KEY=VALUE literal");
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

/// The settings a worker gets in an overlay: the base's literals merged with the overlay's.
pub fn settings(overlay: &str) -> BTreeMap<String, String> {
    let base = yaml(&code::read("deploy/kubernetes/base/kustomization.yaml"));
    let over = yaml(&code::read(&format!(
        "deploy/kubernetes/overlays/{overlay}/kustomization.yaml"
    )));
    let generator = &seq(&over["configMapGenerator"], "configMapGenerator")[0];
    assert_eq!(
        generator["behavior"].as_str(),
        Some("merge"),
        "{overlay} must merge into the base's ConfigMap, not replace it"
    );
    let mut merged = config_literals(&base);
    merged.extend(config_literals(&over));
    merged
}

fn worker_container(deployment: &Value) -> &Value {
    let containers = seq(
        &deployment["spec"]["template"]["spec"]["containers"],
        "containers",
    );
    assert_eq!(containers.len(), 1, "one container, the worker");
    &containers[0]
}

fn args(container: &Value) -> Vec<String> {
    seq(&container["args"], "args")
        .iter()
        .map(|a| str_of(a, "arg").to_owned())
        .collect()
}

#[test]
fn every_kustomization_names_resources_and_components_that_exist() {
    for dir in KUSTOMIZATIONS {
        let kustomization = yaml(&code::read(&format!("{dir}/kustomization.yaml")));
        let mut listed = 0;
        for key in ["resources", "components"] {
            for entry in kustomization[key].as_sequence().into_iter().flatten() {
                let path = code::repo().join(dir).join(str_of(entry, key));
                let exists = path.is_file() || path.join("kustomization.yaml").is_file();
                assert!(
                    exists,
                    "{dir}: {key} entry {} does not exist",
                    path.display()
                );
                listed += 1;
            }
        }
        assert!(listed > 0, "{dir} lists nothing");
    }
}

#[test]
fn probes_and_ports_use_the_admin_listener_the_config_map_sets() {
    let base = base();
    let deployment = &base["Deployment"];
    let container = worker_container(deployment);
    let literals = config_literals(&yaml(&code::read(
        "deploy/kubernetes/base/kustomization.yaml",
    )));
    let listen = &literals["ADMIN_LISTEN"];
    // The address must parse as the code's flag does (a SocketAddr), and listen beyond loopback.
    let addr: std::net::SocketAddr = listen.parse().expect("ADMIN_LISTEN is an address");
    assert!(
        addr.ip().is_unspecified(),
        "{listen}: probes come from the kubelet"
    );
    let port = port_of(listen);
    assert!(code::has_literal("/healthz") && code::has_literal("/readyz"));

    let liveness = probe_problems(&container["livenessProbe"], "/healthz", port, container);
    let readiness = probe_problems(&container["readinessProbe"], "/readyz", port, container);
    assert!(liveness.is_empty(), "liveness: {liveness:?}");
    assert!(readiness.is_empty(), "readiness: {readiness:?}");

    let service = &base["Service"];
    let service_port = &seq(&service["spec"]["ports"], "ports")[0];
    assert_eq!(service_port["port"].as_u64(), Some(u64::from(port)));
    let target = str_of(&service_port["targetPort"], "targetPort");
    assert!(
        seq(&container["ports"], "ports")
            .iter()
            .any(|p| p["name"].as_str() == Some(target)
                && p["containerPort"].as_u64() == Some(u64::from(port))),
        "the Service's targetPort {target} is not the container's admin port"
    );
    let annotations = &deployment["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(
        annotations["prometheus.io/port"].as_str(),
        Some(&*port.to_string())
    );
    assert_eq!(annotations["prometheus.io/path"].as_str(), Some("/metrics"));

    let pod_labels = &deployment["spec"]["template"]["metadata"]["labels"];
    for selector in [
        &service["spec"]["selector"],
        &base["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"],
    ] {
        for (k, v) in selector.as_mapping().expect("a selector") {
            assert_eq!(&pod_labels[k], v, "selector {k:?} does not match the pods");
        }
    }
}

#[test]
fn every_env_name_the_manifests_set_is_read_by_the_command_they_run() {
    let base = base();
    let run = env_names("run");
    let container = worker_container(&base["Deployment"]);
    assert_eq!(parse_invocation(&args(container)).unwrap(), "run");
    let unknown = unknown_env(container_env_names(container), &run);
    assert!(
        unknown.is_empty(),
        "Deployment sets {unknown:?}, unknown to `run`"
    );

    for overlay in ["test", "prod"] {
        let settings = settings(overlay);
        let unknown = unknown_env(settings.keys().map(String::as_str), &run);
        assert!(
            unknown.is_empty(),
            "{overlay}'s ConfigMap sets {unknown:?}, unknown to `run`"
        );
    }

    let cron = &base["CronJob"];
    let job = &seq(
        &cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"],
        "containers",
    )[0];
    let reconcile = env_names("reconcile");
    let unknown = unknown_env(container_env_names(job), &reconcile);
    assert!(
        unknown.is_empty(),
        "CronJob sets {unknown:?}, unknown to `reconcile`"
    );
    let literals = settings("prod");
    for env in seq(&job["env"], "env") {
        if let Some(key) = env["valueFrom"]["configMapKeyRef"]["key"].as_str() {
            assert!(
                literals.contains_key(key),
                "CronJob reads {key}, not in the ConfigMap"
            );
        }
    }
}

#[test]
fn the_cron_job_publishes_a_nightly_reconcile_at_two_in_oslo_one_at_a_time() {
    let cron = &base()["CronJob"];
    let spec = &cron["spec"];
    assert_eq!(spec["schedule"].as_str(), Some("0 2 * * *"));
    assert_eq!(spec["timeZone"].as_str(), Some("Europe/Oslo"));
    assert_eq!(spec["concurrencyPolicy"].as_str(), Some("Forbid"));
    let pod = &spec["jobTemplate"]["spec"]["template"]["spec"];
    let container = &seq(&pod["containers"], "containers")[0];
    assert_eq!(parse_invocation(&args(container)).unwrap(), "reconcile");
    assert_eq!(
        container["image"],
        worker_container(&base()["Deployment"])["image"],
        "the job runs the worker's image"
    );
    assert_ne!(pod["restartPolicy"].as_str(), Some("Always"));
    // The job needs only the broker: it must not be handed the database's password.
    let names = container_env_names(container);
    assert!(names.contains(&"AMQP_URL_FILE"), "{names:?}");
    assert!(
        !names
            .iter()
            .any(|n| n.starts_with("DATABASE_URL") || *n == "AMQP_URL"),
        "{names:?}"
    );
}

#[test]
fn the_pod_outlives_the_workers_shutdown_bound_and_runs_locked_down() {
    let base = base();
    let pod = &base["Deployment"]["spec"]["template"]["spec"];
    let grace: u64 = default_of("run", "SHUTDOWN_GRACE_SECS")
        .expect("run has SHUTDOWN_GRACE_SECS")
        .parse()
        .unwrap();
    let configured: u64 = settings("prod")
        .get("SHUTDOWN_GRACE_SECS")
        .map_or(grace, |v| v.parse().unwrap());
    let termination = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
    assert!(
        termination > grace.max(configured),
        "terminationGracePeriodSeconds {termination} must exceed SHUTDOWN_GRACE_SECS {grace}"
    );

    let security = &pod["securityContext"];
    assert_eq!(security["runAsNonRoot"].as_bool(), Some(true));
    assert!(security["runAsUser"].as_u64().is_some_and(|u| u != 0));
    let fs_group = security["fsGroup"].as_u64().expect("an fsGroup");
    let container = worker_container(&base["Deployment"]);
    let own = &container["securityContext"];
    assert_eq!(own["readOnlyRootFilesystem"].as_bool(), Some(true));
    assert_eq!(own["allowPrivilegeEscalation"].as_bool(), Some(false));
    for kind in ["requests", "limits"] {
        assert!(
            container["resources"][kind]["memory"].as_str().is_some(),
            "no memory {kind}"
        );
    }
    assert_eq!(
        base["PodDisruptionBudget"]["spec"]["maxUnavailable"].as_u64(),
        Some(1)
    );
    assert!(fs_group > 0);
}

#[test]
fn secrets_are_mounted_where_the_settings_point_and_urls_come_from_secrets() {
    let base = base();
    let pod = &base["Deployment"]["spec"]["template"]["spec"];
    let container = worker_container(&base["Deployment"]);
    let literals = settings("prod");
    for (setting, volume) in [
        ("ADMIN_TOKENS_FILE", "admin-tokens"),
        ("MASKINPORTEN_KEY_FILE", "maskinporten-key"),
        ("DATABASE_URL_FILE", "database-url"),
        ("AMQP_URL_FILE", "amqp-url"),
    ] {
        let file = Path::new(&literals[setting]);
        let mount = seq(&container["volumeMounts"], "volumeMounts")
            .iter()
            .find(|m| m["name"].as_str() == Some(volume))
            .unwrap_or_else(|| panic!("{volume} is not mounted"));
        let dir = str_of(&mount["mountPath"], "mountPath");
        let relative = file
            .strip_prefix(dir)
            .unwrap_or_else(|_| panic!("{setting}={} is not under {dir}", file.display()));
        let secret = &seq(&pod["volumes"], "volumes")
            .iter()
            .find(|v| v["name"].as_str() == Some(volume))
            .unwrap()["secret"];
        assert!(
            secret["secretName"].as_str().is_some(),
            "{volume} is not a Secret"
        );
        assert!(
            seq(&secret["items"], "items")
                .iter()
                .any(|i| i["path"].as_str() == relative.to_str()),
            "{setting}: the Secret projects no {}",
            relative.display()
        );
        // Group-readable for the fsGroup, never world-readable (run refuses that token file).
        assert_eq!(secret["defaultMode"].as_u64(), Some(0o440), "{volume} mode");
    }
    // The URLs carry passwords: read from the mounted files, never in the environment.
    let env = container_env_names(container);
    for url in ["DATABASE_URL", "AMQP_URL"] {
        assert!(
            !literals.contains_key(url),
            "{url} carries a password: not in a ConfigMap"
        );
        assert!(!env.contains(&url), "{url} is in the environment");
    }
}

#[test]
fn the_overlays_point_at_altinn_tt02_and_production() {
    for (overlay, altinn, maskinporten) in [
        (
            "test",
            "https://platform.tt02.altinn.no",
            "https://test.maskinporten.no/",
        ),
        (
            "prod",
            "https://platform.altinn.no",
            "https://maskinporten.no/",
        ),
    ] {
        let settings = settings(overlay);
        assert_eq!(settings["ALTINN_BASE_URL"], altinn, "{overlay}");
        assert_eq!(settings["MASKINPORTEN_URL"], maskinporten, "{overlay}");
        // All six Altinn settings together, or `run` refuses to start.
        for name in [
            "MASKINPORTEN_CLIENT_ID",
            "MASKINPORTEN_KID",
            "MASKINPORTEN_KEY_FILE",
            "MASKINPORTEN_SCOPES",
        ] {
            assert!(settings.contains_key(name), "{overlay} lacks {name}");
        }
        // The base URL form: the SDK appends /v1/traces.
        let otlp = &settings["OTEL_EXPORTER_OTLP_ENDPOINT"];
        assert!(!otlp.ends_with("/v1/traces"), "{overlay}: {otlp}");
    }
    assert_eq!(settings("prod")["ALLOW_SYNTHETIC_NIN"], "false");
}

/// `kubectl kustomize` (no cluster needed) renders both overlays into manifests whose
/// Deployment and CronJob refer to the generated ConfigMap. Skipped where kubectl is missing;
/// the parsing tests above cover the rest.
#[test]
fn the_overlays_render_with_kubectl_kustomize() {
    let Ok(version) = std::process::Command::new("kubectl")
        .args(["version", "--client"])
        .output()
    else {
        eprintln!("kubectl is not installed: rendering skipped");
        return;
    };
    assert!(version.status.success());
    for overlay in ["test", "prod"] {
        let out = std::process::Command::new("kubectl")
            .arg("kustomize")
            .arg(
                code::repo()
                    .join("deploy/kubernetes/overlays")
                    .join(overlay),
            )
            .output()
            .unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(
            out.status.success(),
            "{overlay}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let docs = yaml_documents(&text);
        let config_map = docs
            .iter()
            .find(|d| d["kind"].as_str() == Some("ConfigMap"))
            .expect("a ConfigMap");
        let name = str_of(&config_map["metadata"]["name"], "name");
        assert!(name.starts_with("altinn-sync-"), "hashed name, got {name}");
        let deployment = docs
            .iter()
            .find(|d| d["kind"].as_str() == Some("Deployment"))
            .unwrap();
        let container = worker_container(deployment);
        assert_eq!(
            container["envFrom"][0]["configMapRef"]["name"].as_str(),
            Some(name)
        );
        let settings = settings(overlay);
        for (k, v) in &settings {
            assert_eq!(
                config_map["data"][k.as_str()].as_str(),
                Some(v.as_str()),
                "{k}"
            );
        }
    }
}
