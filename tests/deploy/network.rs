//! `deploy/kubernetes/base/networkpolicy.yaml` and the ServiceMonitor component: who may reach
//! the pods, whom they may reach, and what a Prometheus Operator selects.

use std::collections::BTreeSet;

use serde_norway::Value;

use crate::checks::{port_of, seq, str_of, yaml};
use crate::code::{self, default_of};
use crate::kubernetes::{base, config_literals, settings};

/// The namespace label that admits a namespace's pods to the worker's admin port.
pub const ADMIN_ACCESS: (&str, &str) = ("altinn-sync/admin-access", "true");
/// The label the ServiceMonitor carries for a Prometheus's `serviceMonitorSelector`.
pub const SERVICE_MONITOR_SELECTED_BY: (&str, &str) = ("release", "kube-prometheus-stack");

const DNS: u16 = 53;
const POSTGRES: u16 = 5432;
const AMQPS: u16 = 5671;
const HTTPS: u16 = 443;

const OVERLAYS: [&str; 2] = ["test", "prod"];

/// What is wrong with a NetworkPolicy: it does not govern both directions, a rule admits every
/// peer (no `from`/`to`) or every port, an address block is not a CIDR, or a peer selects pods
/// (the base's `labels` with `includeSelectors` would add altinn-sync's own labels to it, so it
/// would match nothing but altinn-sync).
pub fn policy_problems(policy: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let spec = &policy["spec"];
    let types: Vec<&str> = spec["policyTypes"]
        .as_sequence()
        .map(|t| t.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if !(types.contains(&"Ingress") && types.contains(&"Egress")) {
        problems.push(format!("policyTypes {types:?}: both Ingress and Egress"));
    }
    for (direction, peers) in [("ingress", "from"), ("egress", "to")] {
        let rules = spec[direction].as_sequence().map_or(&[][..], Vec::as_slice);
        for (i, rule) in rules.iter().enumerate() {
            let what = format!("{direction} rule {i}");
            match rule[peers].as_sequence() {
                Some(list) if !list.is_empty() => {
                    for peer in list {
                        if !peer["podSelector"].is_null() {
                            problems.push(format!("{what}: a podSelector peer"));
                        }
                        if let Some(cidr) = peer["ipBlock"]["cidr"].as_str()
                            && !is_cidr(cidr)
                        {
                            problems.push(format!("{what}: {cidr} is not a CIDR"));
                        }
                    }
                }
                _ => problems.push(format!("{what} admits every peer")),
            }
            if rule["ports"].as_sequence().is_none_or(Vec::is_empty) {
                problems.push(format!("{what} admits every port"));
            }
        }
    }
    problems
}

fn is_cidr(text: &str) -> bool {
    text.split_once('/').is_some_and(|(addr, len)| {
        addr.parse::<std::net::IpAddr>().is_ok() && len.parse::<u8>().is_ok_and(|l| l <= 128)
    })
}

fn ports(rule: &Value) -> BTreeSet<u16> {
    seq(&rule["ports"], "ports")
        .iter()
        .map(|p| u16::try_from(p["port"].as_u64().expect("a numeric port")).unwrap())
        .collect()
}

fn egress_ports(policy: &Value) -> BTreeSet<u16> {
    seq(&policy["spec"]["egress"], "egress")
        .iter()
        .flat_map(ports)
        .collect()
}

/// The policy whose pod selector matches these pod labels; exactly one must.
fn policy_for(pod_labels: &Value) -> Value {
    let base = base();
    let matching: Vec<&Value> = base
        .iter()
        .filter(|(key, _)| key.starts_with("NetworkPolicy/"))
        .map(|(_, policy)| policy)
        .filter(|policy| {
            let selector = &policy["spec"]["podSelector"]["matchLabels"];
            selector
                .as_mapping()
                .expect("a podSelector with matchLabels")
                .iter()
                .all(|(k, v)| &pod_labels[k] == v)
        })
        .collect();
    assert_eq!(
        matching.len(),
        1,
        "pods labelled {pod_labels:?}: one NetworkPolicy must select them"
    );
    matching[0].clone()
}

fn worker_policy() -> Value {
    policy_for(&base()["Deployment"]["spec"]["template"]["metadata"]["labels"])
}

fn reconcile_policy() -> Value {
    policy_for(&base()["CronJob"]["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"])
}

fn readme() -> String {
    code::read("deploy/kubernetes/README.md")
}

#[test]
fn every_policy_names_its_peers_and_ports() {
    let base = base();
    let policies: Vec<_> = base
        .iter()
        .filter(|(key, _)| key.starts_with("NetworkPolicy/"))
        .collect();
    assert!(policies.len() >= 2, "the worker's and the reconcile's");
    for (name, policy) in policies {
        let problems = policy_problems(policy);
        assert!(problems.is_empty(), "{name}: {problems:?}");
    }
}

#[test]
fn the_admin_port_admits_only_namespaces_with_the_documented_label() {
    let policy = worker_policy();
    let ingress = seq(&policy["spec"]["ingress"], "ingress");
    assert_eq!(ingress.len(), 1, "one ingress rule: the admin port");
    let admin = port_of(&default_of("run", "ADMIN_LISTEN").unwrap());
    let listen = &config_literals(&yaml(&code::read(
        "deploy/kubernetes/base/kustomization.yaml",
    )))["ADMIN_LISTEN"];
    assert_eq!(
        port_of(listen),
        admin,
        "the ConfigMap keeps the default port"
    );
    assert_eq!(ports(&ingress[0]), BTreeSet::from([admin]));
    let peers = seq(&ingress[0]["from"], "from");
    assert_eq!(peers.len(), 1);
    let labels = peers[0]["namespaceSelector"]["matchLabels"]
        .as_mapping()
        .expect("a namespaceSelector");
    assert_eq!(labels.len(), 1);
    let (key, value) = ADMIN_ACCESS;
    assert_eq!(labels.get(key).and_then(Value::as_str), Some(value));
    assert!(
        readme().contains(&format!("{key}={value}")),
        "the README says how to label a namespace: kubectl label namespace NS {key}={value}"
    );
    assert!(
        reconcile_policy()["spec"]["ingress"].is_null(),
        "nothing may connect to the reconcile"
    );
}

#[test]
fn the_worker_reaches_dns_postgres_rabbitmq_altinn_maskinporten_and_the_collector_only() {
    let policy = worker_policy();
    for overlay in OVERLAYS {
        let settings = settings(overlay);
        for url in ["ALTINN_BASE_URL", "MASKINPORTEN_URL"] {
            let host = settings[url]
                .strip_prefix("https://")
                .unwrap_or_else(|| panic!("{overlay}: {url} is not https"));
            assert!(!host.contains(':'), "{overlay}: {url} on a port not 443");
        }
        // The collector: its namespace is admitted, on its port.
        let otlp = &settings["OTEL_EXPORTER_OTLP_ENDPOINT"];
        let host = otlp
            .strip_prefix("http://")
            .unwrap()
            .split(':')
            .next()
            .unwrap();
        let namespace = host.split('.').nth(1).expect("SERVICE.NAMESPACE");
        let rule = seq(&policy["spec"]["egress"], "egress")
            .iter()
            .find(|r| {
                r["to"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
                    .as_str()
                    == Some(namespace)
            })
            .unwrap_or_else(|| panic!("{overlay}: no egress to the collector's {namespace}"));
        assert_eq!(ports(rule), BTreeSet::from([port_of(otlp)]), "{otlp}");
    }
    let otlp = port_of(&settings("prod")["OTEL_EXPORTER_OTLP_ENDPOINT"]);
    assert_eq!(
        egress_ports(&policy),
        BTreeSet::from([DNS, POSTGRES, AMQPS, HTTPS, otlp])
    );
    // HTTPS goes to public addresses only, not to the cluster or the private networks.
    let https = seq(&policy["spec"]["egress"], "egress")
        .iter()
        .find(|r| ports(r).contains(&HTTPS))
        .unwrap();
    let except: Vec<&str> = seq(&https["to"][0]["ipBlock"]["except"], "except")
        .iter()
        .map(|c| str_of(c, "cidr"))
        .collect();
    for private in ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"] {
        assert!(except.contains(&private), "443 is open to {private}");
    }
}

#[test]
fn the_reconcile_reaches_dns_and_rabbitmq_only() {
    // Like its env (no DATABASE_URL): the job only publishes a command.
    assert_eq!(
        egress_ports(&reconcile_policy()),
        BTreeSet::from([DNS, AMQPS])
    );
}

/// Each overlay replaces the address block of every rule for PostgreSQL and RabbitMQ, and
/// nothing else: the JSON patch paths still point at those rules of the base.
#[test]
fn the_overlays_set_the_database_and_broker_address_blocks() {
    let base = base();
    for overlay in OVERLAYS {
        let kustomization = yaml(&code::read(&format!(
            "deploy/kubernetes/overlays/{overlay}/kustomization.yaml"
        )));
        let mut patched = BTreeSet::new();
        for patch in seq(&kustomization["patches"], "patches") {
            if patch["target"]["kind"].as_str() != Some("NetworkPolicy") {
                continue;
            }
            let name = str_of(&patch["target"]["name"], "target name");
            let policy = &base[&format!("NetworkPolicy/{name}")];
            for op in seq(&yaml(str_of(&patch["patch"], "patch")), "ops") {
                let path = str_of(&op["path"], "path");
                let rule = path
                    .strip_prefix("/spec/egress/")
                    .and_then(|p| p.strip_suffix("/to/0/ipBlock/cidr"))
                    .and_then(|i| i.parse::<usize>().ok())
                    .unwrap_or_else(|| panic!("{overlay}: {path} is not an egress address"));
                let rule = &seq(&policy["spec"]["egress"], "egress")[rule];
                assert!(
                    rule["to"][0]["ipBlock"]["cidr"].is_string(),
                    "{overlay}: {name} {path} is no address block"
                );
                let ports = ports(rule);
                assert!(
                    ports == BTreeSet::from([POSTGRES]) || ports == BTreeSet::from([AMQPS]),
                    "{overlay}: {name} {path} is the rule for {ports:?}"
                );
                assert!(is_cidr(str_of(&op["value"], "value")));
                patched.insert((name.to_owned(), path.to_owned()));
            }
        }
        // Every database and broker rule of the base is patched.
        for (key, policy) in base.iter().filter(|(k, _)| k.starts_with("NetworkPolicy/")) {
            for (i, rule) in seq(&policy["spec"]["egress"], "egress").iter().enumerate() {
                let ports = ports(rule);
                if ports.contains(&POSTGRES) || ports.contains(&AMQPS) {
                    let name = key.trim_start_matches("NetworkPolicy/").to_owned();
                    let path = format!("/spec/egress/{i}/to/0/ipBlock/cidr");
                    assert!(
                        patched.contains(&(name, path.clone())),
                        "{overlay} does not set {key} {path}"
                    );
                }
            }
        }
    }
}

#[test]
fn the_service_monitor_is_labelled_for_the_documented_selector_and_selects_the_service() {
    let monitor = yaml(&code::read(
        "deploy/kubernetes/components/servicemonitor/servicemonitor.yaml",
    ));
    let (key, value) = SERVICE_MONITOR_SELECTED_BY;
    assert_eq!(
        monitor["metadata"]["labels"][key].as_str(),
        Some(value),
        "a Prometheus with a serviceMonitorSelector never picks up an unlabelled ServiceMonitor"
    );
    let readme = readme();
    assert!(readme.contains("serviceMonitorSelector"));
    assert!(
        readme.contains(&format!("{key}: {value}")),
        "the README names the label"
    );
    // It selects the Service by the labels the base gives every resource.
    let kustomization = yaml(&code::read("deploy/kubernetes/base/kustomization.yaml"));
    let common = &seq(&kustomization["labels"], "labels")[0]["pairs"];
    for (k, v) in monitor["spec"]["selector"]["matchLabels"]
        .as_mapping()
        .expect("matchLabels")
    {
        assert_eq!(&common[k], v, "the Service has no label {k:?}={v:?}");
    }
    let service = &base()["Service"];
    let port = str_of(
        &seq(&monitor["spec"]["endpoints"], "endpoints")[0]["port"],
        "port",
    );
    assert!(
        seq(&service["spec"]["ports"], "ports")
            .iter()
            .any(|p| p["name"].as_str() == Some(port)),
        "the Service has no port named {port}"
    );
}
