//! The checks catch bad manifests: each is shown failing on a small wrong input, so a passing
//! suite means the real files were checked, not that the checks cannot fail.

use crate::checks::{
    container_env_names, is_pinned, matcher_values, probe_problems, promql_problems, unknown_env,
    yaml,
};
use crate::code::{Series, env_names, parse_invocation};
use crate::compose::token_line_problems;
use crate::network::policy_problems;
use crate::observability::{binary_invocations, unaggregated_postgres_gauges, unknown_subcommand};

const BAD_CONTAINER: &str = r#"
name: altinn-sync
args: ["run"]
ports:
  - name: admin
    containerPort: 9090
env:
  - name: DATABASE_URL
    value: postgres://x
  - name: ADMIN_LISTN
    value: 0.0.0.0:8080
livenessProbe:
  httpGet:
    path: /health
    port: admin
"#;

#[test]
fn a_misspelt_env_name_is_caught() {
    let container = yaml(BAD_CONTAINER);
    let unknown = unknown_env(container_env_names(&container), &env_names("run"));
    assert_eq!(unknown, ["ADMIN_LISTN"]);
}

#[test]
fn a_probe_on_the_wrong_path_or_port_is_caught() {
    let container = yaml(BAD_CONTAINER);
    let problems = probe_problems(&container["livenessProbe"], "/healthz", 8080, &container);
    assert_eq!(problems.len(), 2, "{problems:?}");
}

#[test]
fn an_unknown_command_or_flag_is_caught() {
    assert!(parse_invocation(&["reconcile".into(), "--firm".into(), "912345610".into()]).is_ok());
    assert!(parse_invocation(&["reconcil".into()]).is_err());
    assert!(parse_invocation(&["reconcile".into(), "--every-firm".into()]).is_err());
    let invocations = binary_invocations(
        "Run `altinn-sync parkd --firm ORG`, or\n```sh\nkubectl -n altinn-sync exec deploy/x -- altinn-sync explain\n```",
    );
    assert_eq!(
        invocations.len(),
        2,
        "the namespace is not a command: {invocations:?}"
    );
    assert_eq!(
        unknown_subcommand(&crate::code::cli(), &invocations[0]).len(),
        1
    );
    assert!(unknown_subcommand(&crate::code::cli(), &invocations[1]).is_empty());
}

#[test]
fn a_series_the_code_does_not_export_is_caught() {
    let code = [r#"
        pub const READY: &str = "altinn_sync_ready";
        const BATCH: &str = "altinn_sync_batch_duration_seconds";
        fn f() { describe_histogram!(BATCH, "x"); gauge!(READY).set(1.0); }
    "#
    .to_owned()];
    let series = Series::from_sources(&code);
    assert!(
        series
            .histograms
            .contains("altinn_sync_batch_duration_seconds")
    );
    assert!(promql_problems("max(altinn_sync_ready) == 0", &series).is_empty());
    // A typo, a bucket of a gauge, a quantile of a gauge.
    assert_eq!(promql_problems("altinn_sync_redy == 0", &series).len(), 1);
    assert_eq!(
        promql_problems("altinn_sync_ready_bucket", &series).len(),
        1
    );
    assert!(
        promql_problems(
            "histogram_quantile(0.9, rate(altinn_sync_batch_duration_seconds_bucket[5m]))",
            &series
        )
        .is_empty()
    );
    assert_eq!(
        promql_problems("histogram_quantile(0.9, altinn_sync_ready)", &series).len(),
        1
    );
    assert_eq!(
        matcher_values(r#"sum(x{outcome="parked", action="grant"})"#),
        [
            ("outcome".into(), "parked".into()),
            ("action".into(), "grant".into())
        ]
    );
}

#[test]
fn a_sum_of_a_gauge_every_replica_exports_is_caught() {
    assert_eq!(
        unaggregated_postgres_gauges("sum(altinn_sync_dead_letters) > 0"),
        ["altinn_sync_dead_letters"]
    );
    assert!(unaggregated_postgres_gauges("max(altinn_sync_dead_letters) > 0").is_empty());
}

#[test]
fn a_malformed_token_line_or_an_unpinned_image_is_caught() {
    assert!(token_line_problems(&format!("ops {} *", "a".repeat(64))).is_empty());
    assert_eq!(
        token_line_problems(&format!("ops {} *", "A".repeat(64))).len(),
        1
    );
    assert_eq!(token_line_problems("ops abc 12345").len(), 2);
    assert_eq!(token_line_problems("ops *").len(), 1);
    assert!(is_pinned("prom/prometheus:v2.55.1"));
    assert!(is_pinned("localhost:5000/x@sha256:abcd"));
    assert!(!is_pinned("grafana/grafana"));
    assert!(!is_pinned("grafana/grafana:latest"));
    assert!(!is_pinned("localhost:5000/grafana"));
}

#[test]
fn a_policy_that_admits_everyone_is_caught() {
    let policy = yaml(
        "spec:\n  policyTypes: [Egress]\n  egress:\n    - to: [{podSelector: {matchLabels: {k8s-app: kube-dns}}}]\n    - ports: [{port: 443}]\n",
    );
    let problems = policy_problems(&policy);
    assert_eq!(problems.len(), 4, "{problems:?}");
}
