//! The shape of `src/`: every import points down the layer list (AGENTS.md), and no two files
//! depend on each other, directly or round a circle.
//!
//! It reads the source as text: every `crate::`, `super::`, `self::` and child-module path, in
//! `use` items and in code, becomes an edge from its file to the file that defines the module
//! it names. A `pub use` in a module's root that re-exports one of its own children is the
//! module's face, not a dependency, so it is followed through to the child instead of counted.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod graph;
mod size;
mod source;

use graph::{Edge, Graph};

/// Bottom first. A module may import from its own layer or any below; `main` is the binary.
const LAYERS: &[&[&str]] = &[
    &["contract", "telemetry", "retry", "policy"],
    &["state"],
    &["altinn", "sim"],
    &["sync", "ingest", "publish"],
    &["ops"],
    &["admin", "cli", "worker", "dev", "doctor"],
    &["main"],
];

fn layer_of(module: &str) -> usize {
    LAYERS
        .iter()
        .position(|layer| layer.contains(&module))
        .unwrap_or_else(|| {
            panic!("module `{module}` is in no layer: add it to LAYERS and AGENTS.md")
        })
}

fn graph() -> Graph {
    Graph::read(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"))
}

#[test]
fn every_top_level_module_has_a_layer() {
    for module in graph().top_level_modules() {
        layer_of(&module);
    }
}

#[test]
fn no_import_points_up_the_layers() {
    let graph = graph();
    let upward: Vec<&Edge> = graph
        .edges()
        .filter(|edge| {
            let (from, to) = (graph.top_of(edge.from), graph.top_of(edge.to));
            from != to && layer_of(&to) > layer_of(&from)
        })
        .collect();
    assert!(
        upward.is_empty(),
        "{} imports point up the layers:\n{}",
        upward.len(),
        graph.describe(&upward)
    );
}

#[test]
fn no_two_top_level_modules_depend_on_each_other() {
    let graph = graph();
    let circles = graph.module_circles();
    assert!(
        circles.is_empty(),
        "module circles: {}",
        circles
            .iter()
            .map(|c| c.join(" → "))
            .collect::<Vec<_>>()
            .join("; ")
    );
}

#[test]
fn no_import_circle_between_files() {
    let graph = graph();
    let circles = graph.file_circles();
    let described: Vec<String> = circles
        .iter()
        .map(|files| {
            let edges: Vec<&Edge> = graph
                .edges()
                .filter(|e| files.contains(&e.from) && files.contains(&e.to))
                .collect();
            let names: Vec<String> = files.iter().map(|&f| graph.name(f)).collect();
            format!(
                "{} files: {}\n{}",
                files.len(),
                names.join(", "),
                graph.describe(&edges)
            )
        })
        .collect();
    assert!(
        circles.is_empty(),
        "import circles:\n{}",
        described.join("\n")
    );
}

#[test]
fn the_reader_sees_the_imports_it_must() {
    // Guards the check itself: a reader that found nothing would pass everything above.
    let graph = graph();
    let main = graph.file("main.rs");
    assert!(
        graph
            .edges()
            .any(|e| graph.top_of(e.from) == "ingest" && graph.top_of(e.to) == "contract"),
        "ingest imports the contract"
    );
    assert!(
        graph.edges().any(|e| e.from == main),
        "main imports the library"
    );
    assert!(
        graph.edges().count() > 100,
        "{} edges",
        graph.edges().count()
    );
}

fn src() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Split along concepts before a file passes this many lines.
const MAX_FILE_LINES: usize = 500;
/// A longer function carries `// Long because …` right above it (with its docs and attributes).
const MAX_FN_LINES: usize = 60;

#[test]
fn no_file_is_over_500_lines() {
    let long: Vec<String> = size::source_files(&src())
        .iter()
        .filter(|f| f.lines.len() > MAX_FILE_LINES)
        .map(|f| format!("{} ({} lines)", f.name, f.lines.len()))
        .collect();
    assert!(
        long.is_empty(),
        "files over {MAX_FILE_LINES} lines: {long:?}"
    );
}

#[test]
fn no_function_is_over_60_lines_without_a_reason() {
    let mut long = Vec::new();
    for file in size::source_files(&src()) {
        for f in size::functions(&file) {
            let reason = size::preamble(&file, f.first).any(|l| l.starts_with("// Long because"));
            if f.lines() > MAX_FN_LINES && !reason {
                long.push(format!(
                    "{}:{} {} ({} lines)",
                    file.name,
                    f.first,
                    f.name,
                    f.lines()
                ));
            }
        }
    }
    assert!(
        long.is_empty(),
        "functions over {MAX_FN_LINES} lines with no `// Long because` above them:\n{}",
        long.join("\n")
    );
}

#[test]
fn every_static_query_is_checked_at_compile_time() {
    let mut unchecked = Vec::new();
    for file in size::source_files(&src()) {
        for line in size::unchecked_queries(&file) {
            let reason = file.lines[line.saturating_sub(4)..line]
                .iter()
                .any(|l| l.contains("// Built at run time"));
            if !reason {
                unchecked.push(format!("{}:{line}", file.name));
            }
        }
    }
    assert!(
        unchecked.is_empty(),
        "sqlx::query* calls the compiler does not check (use query!, or say `// Built at run \
         time: why` on one of the three lines above):\n{}",
        unchecked.join("\n")
    );
}

#[test]
fn the_counters_see_what_they_must() {
    // Guards the checks above: a reader that found nothing would pass everything.
    let files = size::source_files(&src());
    let functions: usize = files.iter().map(|f| size::functions(f).len()).sum();
    assert!(functions > 500, "{functions} functions");
    let main = files.iter().find(|f| f.name == "main.rs").unwrap();
    assert!(size::functions(main).iter().any(|f| f.name == "main"));
    let fixture = size::SourceFile {
        name: "fixture.rs".into(),
        lines: vec![],
        tokens: source::tokens("fn f() { sqlx::query(\"SELECT 1\"); sqlx::query!(\"SELECT 1\"); }"),
    };
    assert_eq!(size::unchecked_queries(&fixture), vec![1]);
    assert_eq!(size::functions(&fixture)[0].lines(), 1);
}
