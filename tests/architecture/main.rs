//! The shape of `src/`: every import points down the layer list (AGENTS.md), and no two files
//! depend on each other, directly or round a circle.
//!
//! It reads the source as text: every `crate::`, `super::`, `self::` and child-module path, in
//! `use` items and in code, becomes an edge from its file to the file that defines the module
//! it names. A `pub use` in a module's root that re-exports one of its own children is the
//! module's face, not a dependency, so it is followed through to the child instead of counted.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod graph;
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
