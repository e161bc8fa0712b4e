//! The alert rules, the dashboard and the runbook name only series the code exports, and every
//! alert has its runbook section.

use std::collections::BTreeSet;

use serde_norway::Value;

use crate::checks::{matcher_values, promql_problems, seq, series_in, slug, str_of, yaml};
use crate::code::{self, REQUIRED_SERIES, Series};

/// Gauges every replica computes from PostgreSQL: rules must take their max(), not their sum.
const FROM_POSTGRES: [&str; 6] = [
    "altinn_sync_outbox_rows",
    "altinn_sync_outbox_oldest_pending_seconds",
    "altinn_sync_firms_paused",
    "altinn_sync_last_reconcile_timestamp_seconds",
    "altinn_sync_oldest_pause_seconds",
    "altinn_sync_dead_letters",
];

fn rules() -> Vec<Value> {
    let alerts = yaml(&code::read("deploy/prometheus/alerts.yml"));
    seq(&alerts["groups"], "groups")
        .iter()
        .flat_map(|g| seq(&g["rules"], "rules").to_vec())
        .collect()
}

fn rule<'a>(rules: &'a [Value], series: &str) -> &'a Value {
    rules
        .iter()
        .find(|r| str_of(&r["expr"], "expr").contains(series))
        .unwrap_or_else(|| panic!("no rule on {series}"))
}

/// Whether each PostgreSQL-computed gauge in `expr` is aggregated with max().
pub fn unaggregated_postgres_gauges(expr: &str) -> Vec<String> {
    let compact: String = expr.split_whitespace().collect();
    series_in(expr)
        .into_iter()
        .filter(|name| FROM_POSTGRES.contains(&name.as_str()))
        .filter(|name| {
            !(compact.contains(&format!("max({name}"))
                || compact.contains(&format!("max({name}{{"))
                || compact.contains(&format!("by(status)({name}")))
        })
        .collect()
}

fn dashboard_exprs() -> Vec<String> {
    let dashboard: serde_json::Value =
        serde_json::from_str(&code::read("deploy/grafana/altinn-sync.json")).unwrap();
    let mut ids = BTreeSet::new();
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        assert!(
            ids.insert(panel["id"].as_u64().unwrap()),
            "duplicate panel id"
        );
        assert!(panel["gridPos"]["w"].as_u64().is_some());
        for target in panel["targets"].as_array().into_iter().flatten() {
            assert_eq!(target["datasource"]["uid"], "${datasource}");
            exprs.push(target["expr"].as_str().unwrap().to_owned());
        }
    }
    exprs
}

#[test]
fn every_alert_names_only_exported_series_and_label_values() {
    let series = Series::from_code();
    for name in REQUIRED_SERIES {
        assert!(
            series.names.contains(name),
            "the code does not export {name}"
        );
    }
    let rules = rules();
    assert_eq!(rules.len(), 7, "one rule per alert of issue 10");
    for rule in &rules {
        let name = str_of(&rule["alert"], "alert");
        let expr = str_of(&rule["expr"], "expr");
        let problems = promql_problems(expr, &series);
        assert!(problems.is_empty(), "{name}: {problems:?}");
        for (label, value) in matcher_values(expr) {
            assert!(
                code::has_literal(&value),
                "{name}: {label}=\"{value}\" is no label value in the code"
            );
        }
        let unaggregated = unaggregated_postgres_gauges(expr);
        assert!(
            unaggregated.is_empty(),
            "{name}: take max() of {unaggregated:?}"
        );
    }
}

#[test]
fn the_alerts_fire_on_what_issue_10_asks() {
    let rules = rules();
    let expr = |series: &str| str_of(&rule(&rules, series)["expr"], "expr").to_owned();
    let after = |series: &str| rule(&rules, series)["for"].as_str().map(str::to_owned);
    assert!(expr("altinn_sync_dead_letters").ends_with("> 0"));
    assert!(expr("altinn_sync_outbox_oldest_pending_seconds").ends_with("> 3600"));
    assert!(expr("altinn_sync_oldest_pause_seconds").ends_with("> 1800"));
    assert!(expr("altinn_sync_setup_error").ends_with("> 0"));
    assert_eq!(after("altinn_sync_setup_error").as_deref(), Some("10m"));
    assert_eq!(
        expr("altinn_sync_last_reconcile_timestamp_seconds"),
        "time() - max(altinn_sync_last_reconcile_timestamp_seconds) > 26 * 3600"
    );
    let parked = expr("altinn_sync_deliveries_total");
    assert!(parked.contains("increase(altinn_sync_deliveries_total{outcome=\"parked\"}"));
    assert!(expr("altinn_sync_ready").contains("altinn_sync_ready == 0"));
    assert_eq!(after("altinn_sync_ready").as_deref(), Some("5m"));
}

#[test]
fn every_alert_links_its_runbook_section_which_says_how_to_confirm_and_what_to_do() {
    let runbook = code::read("docs/runbook.md");
    let sections: Vec<(String, &str)> = runbook
        .split("\n## ")
        .skip(1)
        .map(|s| {
            let (heading, body) = s.split_once('\n').unwrap_or((s, ""));
            (slug(heading), body)
        })
        .collect();
    for rule in rules() {
        let name = str_of(&rule["alert"], "alert");
        let url = str_of(&rule["annotations"]["runbook_url"], "runbook_url");
        let (file, anchor) = url.split_once('#').expect("url#anchor");
        assert!(file.ends_with("docs/runbook.md"), "{name}: {url}");
        assert!(rule["annotations"]["summary"].as_str().is_some());
        let (_, body) = sections
            .iter()
            .find(|(slug, _)| slug == anchor)
            .unwrap_or_else(|| panic!("{name}: no section #{anchor} in docs/runbook.md"));
        for part in ["**Means.**", "**Confirm.**", "**Do.**"] {
            assert!(body.contains(part), "{name}: the section has no {part}");
        }
        assert!(
            body.contains("altinn-sync ") || body.contains("curl "),
            "{name}: no command to confirm with"
        );
    }
}

#[test]
fn the_runbooks_commands_exist() {
    let runbook = code::read("docs/runbook.md");
    let cli = code::cli();
    let mut checked = 0;
    for words in binary_invocations(&runbook) {
        let problems = unknown_subcommand(&cli, &words);
        assert!(problems.is_empty(), "docs/runbook.md: {problems:?}");
        checked += 1;
    }
    assert!(checked >= 10, "only {checked} commands found");
}

/// The words after each `altinn-sync` that runs the binary, in code blocks and inline code:
/// at the start of a command, or after `--`, `&&`, `;`, a quote or `exec worker`; not a
/// namespace or user name (`-n altinn-sync`).
pub fn binary_invocations(markdown: &str) -> Vec<Vec<String>> {
    let mut texts: Vec<&str> = Vec::new();
    for (i, chunk) in markdown.split("```").enumerate() {
        if i % 2 == 1 {
            texts.extend(chunk.lines());
        } else {
            texts.extend(chunk.split('`').skip(1).step_by(2));
        }
    }
    let mut out = Vec::new();
    for text in texts {
        for (i, _) in text.match_indices("altinn-sync ") {
            let before = text[..i].trim_end();
            let runs = ["", "--", "&&", ";", "'", "worker"]
                .iter()
                .any(|p| before.ends_with(p) && (p.is_empty() == before.is_empty()));
            if runs {
                out.push(
                    text[i + "altinn-sync ".len()..]
                        .split_whitespace()
                        .map(|w| w.trim_end_matches('\'').to_owned())
                        .collect(),
                );
            }
        }
    }
    out
}

/// The first word must be a subcommand of the binary.
pub fn unknown_subcommand(cli: &clap::Command, words: &[String]) -> Vec<String> {
    match words.first() {
        Some(word) if cli.find_subcommand(word).is_some() => Vec::new(),
        other => vec![format!(
            "`altinn-sync {}` is no command",
            other.map_or("", String::as_str)
        )],
    }
}

#[test]
fn the_dashboard_shows_every_series_and_only_exported_ones() {
    let series = Series::from_code();
    let exprs = dashboard_exprs();
    assert!(exprs.len() >= REQUIRED_SERIES.len());
    let mut shown = BTreeSet::new();
    for expr in &exprs {
        let problems = promql_problems(expr, &series);
        assert!(problems.is_empty(), "{problems:?}");
        let unaggregated = unaggregated_postgres_gauges(expr);
        assert!(
            unaggregated.is_empty(),
            "`{expr}`: take max() of {unaggregated:?}"
        );
        for name in series_in(expr) {
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .filter(|b| series.histograms.contains(*b))
                .map_or(name.clone(), str::to_owned);
            shown.insert(base);
        }
    }
    for name in REQUIRED_SERIES {
        assert!(shown.contains(name), "the dashboard does not show {name}");
    }
    for histogram in [
        "altinn_sync_batch_duration_seconds",
        "altinn_sync_altinn_request_duration_seconds",
    ] {
        assert!(
            series.histograms.contains(histogram),
            "{histogram} is not a histogram in the code"
        );
        assert!(
            exprs
                .iter()
                .any(|e| e.contains("histogram_quantile")
                    && e.contains(&format!("{histogram}_bucket"))),
            "no quantile of {histogram}"
        );
    }
}
