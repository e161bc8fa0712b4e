//! Files of `src/`, the modules they define, and the edges between them.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use crate::source::{Token, expand_use, tokens};

pub struct Edge {
    pub from: usize,
    pub to: usize,
    pub line: usize,
    pub path: String,
}

struct File {
    /// Relative to `src/`, e.g. `sync/plan.rs`.
    name: String,
    /// Module path, e.g. `["sync", "plan"]`; `main.rs` is `["main"]`, `lib.rs` is `[]`.
    module: Vec<String>,
    tokens: Vec<(Token, usize)>,
    /// Names a `pub use` re-exports from this module's own children, to the absolute path.
    exports: HashMap<String, Vec<String>>,
}

pub struct Graph {
    files: Vec<File>,
    modules: HashMap<Vec<String>, usize>,
    edges: Vec<Edge>,
}

impl Graph {
    pub fn read(src: PathBuf) -> Graph {
        let mut files = Vec::new();
        walk(&src, &src, &mut files);
        files.sort_by(|a: &File, b: &File| a.name.cmp(&b.name));
        let modules = files
            .iter()
            .enumerate()
            .map(|(i, f)| (f.module.clone(), i))
            .collect();
        let mut graph = Graph {
            files,
            modules,
            edges: Vec::new(),
        };
        for i in 0..graph.files.len() {
            let exports = graph.exports_of(i);
            graph.files[i].exports = exports;
        }
        for i in 0..graph.files.len() {
            let edges = graph.edges_of(i);
            graph.edges.extend(edges);
        }
        graph
    }

    pub fn edges(&self) -> impl Iterator<Item = &Edge> {
        self.edges.iter()
    }

    pub fn file(&self, name: &str) -> usize {
        self.files
            .iter()
            .position(|f| f.name == name)
            .unwrap_or_else(|| panic!("no src/{name}"))
    }

    pub fn name(&self, file: usize) -> String {
        self.files[file].name.clone()
    }

    pub fn top_of(&self, file: usize) -> String {
        self.files[file]
            .module
            .first()
            .cloned()
            .unwrap_or_else(|| "lib".into())
    }

    pub fn top_level_modules(&self) -> BTreeSet<String> {
        (0..self.files.len())
            .map(|f| self.top_of(f))
            .filter(|m| m != "lib")
            .collect()
    }

    pub fn describe(&self, edges: &[&Edge]) -> String {
        edges
            .iter()
            .map(|e| {
                format!(
                    "  src/{}:{} → src/{} ({})",
                    self.files[e.from].name, e.line, self.files[e.to].name, e.path
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Strongly connected sets of more than one file.
    pub fn file_circles(&self) -> Vec<BTreeSet<usize>> {
        let mut next: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); self.files.len()];
        for e in &self.edges {
            next[e.from].insert(e.to);
        }
        strongly_connected(&next)
    }

    pub fn module_circles(&self) -> Vec<Vec<String>> {
        let names: Vec<String> = self.top_level_modules().into_iter().collect();
        let index: HashMap<&str, usize> = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.as_str(), i))
            .collect();
        let mut next: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); names.len()];
        for e in &self.edges {
            let (from, to) = (self.top_of(e.from), self.top_of(e.to));
            if let (Some(&f), Some(&t)) = (index.get(from.as_str()), index.get(to.as_str()))
                && f != t
            {
                next[f].insert(t);
            }
        }
        strongly_connected(&next)
            .into_iter()
            .map(|set| set.into_iter().map(|i| names[i].clone()).collect())
            .collect()
    }

    /// The file defining the longest module prefix of `path`, and what is left of it; a name a
    /// module re-exports from one of its children resolves to that child.
    fn resolve(&self, path: &[String]) -> Option<(usize, Vec<String>)> {
        let mut resolved = None;
        for len in (0..=path.len()).rev() {
            if let Some(&file) = self.modules.get(&path[..len]) {
                if len > 0 || path.is_empty() {
                    resolved = Some((file, path[len..].to_vec()));
                }
                break;
            }
        }
        let (file, rest) = resolved?;
        if let Some(target) = rest.first().and_then(|n| self.files[file].exports.get(n)) {
            let mut through = target.clone();
            through.extend(rest[1..].iter().cloned());
            if through.len() > path.len() || through[..] != path[..] {
                return self.resolve(&through).or(Some((file, rest)));
            }
        }
        Some((file, rest))
    }

    fn exports_of(&self, file: usize) -> HashMap<String, Vec<String>> {
        let own = &self.files[file].module;
        let mut exports = HashMap::new();
        for item in uses(&self.files[file].module, &self.files[file].tokens) {
            if !item.public {
                continue;
            }
            for used in expand_use(&item.tree) {
                if used.binds == "*" {
                    continue;
                }
                let Some(abs) = self.absolute(file, &item.module, &used.segments, &HashMap::new())
                else {
                    continue;
                };
                if abs.len() > own.len() && abs.starts_with(own) {
                    exports.insert(used.binds.clone(), abs);
                }
            }
        }
        exports
    }

    fn edges_of(&self, file: usize) -> Vec<Edge> {
        let own = self.files[file].module.clone();
        let mut edges = Vec::new();
        let mut bound: HashMap<String, Vec<String>> = HashMap::new();
        let items = uses(&own, &self.files[file].tokens);
        for item in &items {
            for used in expand_use(&item.tree) {
                let Some(abs) = self.absolute(file, &item.module, &used.segments, &bound) else {
                    continue;
                };
                if used.binds != "*" {
                    bound.insert(used.binds.clone(), abs.clone());
                }
                // A module's root declaring its face: followed through `exports`, not an edge.
                let face = item.public && abs.len() > own.len() && abs.starts_with(&own);
                if !face {
                    self.push_edge(&mut edges, file, &abs, item.line, &used.segments);
                }
            }
        }
        for (line, module, path) in code_paths(&own, &self.files[file].tokens, &items) {
            if let Some(abs) = self.absolute(file, &module, &path, &bound) {
                self.push_edge(&mut edges, file, &abs, line, &path);
            }
        }
        edges
    }

    fn push_edge(
        &self,
        edges: &mut Vec<Edge>,
        from: usize,
        abs: &[String],
        line: usize,
        written: &[String],
    ) {
        if let Some((to, _)) = self.resolve(abs)
            && to != from
            && !self.files[to].module.is_empty()
        {
            edges.push(Edge {
                from,
                to,
                line,
                path: written.join("::"),
            });
        }
    }

    /// `path` as written in `module` of `file`, made absolute; `None` for another crate.
    fn absolute(
        &self,
        file: usize,
        module: &[String],
        path: &[String],
        bound: &HashMap<String, Vec<String>>,
    ) -> Option<Vec<String>> {
        let first = path.first()?;
        let mut abs: Vec<String>;
        let mut rest = &path[1..];
        match first.as_str() {
            "crate" => abs = Vec::new(),
            "altinn_sync" if self.files[file].name == "main.rs" => abs = Vec::new(),
            "self" => abs = module.to_vec(),
            "super" => {
                abs = module.to_vec();
                abs.pop();
                while rest.first().map(String::as_str) == Some("super") {
                    abs.pop();
                    rest = &rest[1..];
                }
            }
            name => {
                let mut child = module.to_vec();
                child.push(name.to_string());
                if self.modules.contains_key(&child) {
                    abs = child;
                } else if let Some(target) = bound.get(name) {
                    abs = target.clone();
                } else {
                    return None;
                }
            }
        }
        abs.extend(rest.iter().cloned());
        Some(abs)
    }
}

struct UseItem {
    line: usize,
    public: bool,
    /// The (inline) module the item sits in.
    module: Vec<String>,
    tree: Vec<Token>,
    span: (usize, usize),
}

/// Every `use` item, with the module it is written in (inline `mod x { }` included).
fn uses(base: &[String], tokens: &[(Token, usize)]) -> Vec<UseItem> {
    let mut items = Vec::new();
    walk_modules(base, tokens, |i, module| {
        if tokens[i].0 != Token::Ident("use".into()) {
            return None;
        }
        let end = (i..tokens.len()).find(|&j| tokens[j].0 == Token::Punct(';'))?;
        let public = matches!(tokens.get(i.wrapping_sub(1)), Some((Token::Ident(p), _)) if p == "pub")
            || matches!(tokens.get(i.wrapping_sub(1)), Some((Token::Punct(')'), _)))
                && matches!(tokens.get(i.wrapping_sub(4)), Some((Token::Ident(p), _)) if p == "pub");
        items.push(UseItem {
            line: tokens[i].1,
            public,
            module: module.to_vec(),
            tree: tokens[i + 1..end].iter().map(|(t, _)| t.clone()).collect(),
            span: (i, end),
        });
        Some(end)
    });
    items
}

/// Paths of two or more segments in code outside `use` items: (line, module, segments).
fn code_paths(
    base: &[String],
    tokens: &[(Token, usize)],
    items: &[UseItem],
) -> Vec<(usize, Vec<String>, Vec<String>)> {
    let mut paths = Vec::new();
    walk_modules(base, tokens, |i, module| {
        if let Some(item) = items.iter().find(|u| u.span.0 == i) {
            return Some(item.span.1);
        }
        let Token::Ident(first) = &tokens[i].0 else {
            return None;
        };
        if i > 0 && tokens[i - 1].0 == Token::Path
            || tokens.get(i + 1).map(|t| &t.0) != Some(&Token::Path)
        {
            return None;
        }
        let mut segments = vec![first.clone()];
        let mut j = i + 1;
        while tokens.get(j).map(|t| &t.0) == Some(&Token::Path) {
            match tokens.get(j + 1) {
                Some((Token::Ident(next), _)) => {
                    segments.push(next.clone());
                    j += 2;
                }
                _ => break,
            }
        }
        paths.push((tokens[i].1, module.to_vec(), segments));
        Some(j.saturating_sub(1))
    });
    paths
}

/// Calls `visit(index, module)` on every token, tracking inline modules by their braces;
/// `visit` returns the index of the last token it consumed, if more than one.
fn walk_modules(
    base: &[String],
    tokens: &[(Token, usize)],
    mut visit: impl FnMut(usize, &[String]) -> Option<usize>,
) {
    let mut module: Vec<String> = base.to_vec();
    let mut open: Vec<usize> = Vec::new(); // brace depth each inline module closes at
    let mut depth = 0;
    let mut i = 0;
    while i < tokens.len() {
        match &tokens[i].0 {
            Token::Punct('{') => depth += 1,
            Token::Punct('}') => {
                depth -= 1;
                if open.last() == Some(&depth) {
                    open.pop();
                    module.pop();
                }
            }
            Token::Ident(kw) if kw == "mod" => {
                if let (Some((Token::Ident(name), _)), Some((Token::Punct('{'), _))) =
                    (tokens.get(i + 1), tokens.get(i + 2))
                {
                    module.push(name.clone());
                    open.push(depth);
                    depth += 1;
                    i += 3;
                    continue;
                }
            }
            _ => {}
        }
        if let Some(last) = visit(i, &module) {
            i = last;
        }
        i += 1;
    }
}

fn walk(src: &Path, dir: &Path, files: &mut Vec<File>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            walk(src, &path, files);
            continue;
        }
        if path.extension().and_then(|e| e.to_str()) != Some("rs") {
            continue;
        }
        let name = path
            .strip_prefix(src)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        let mut module: Vec<String> = name
            .trim_end_matches(".rs")
            .split('/')
            .map(String::from)
            .collect();
        if module.last().map(String::as_str) == Some("mod") {
            module.pop();
        }
        if name == "lib.rs" {
            module.clear();
        }
        let text = std::fs::read_to_string(&path).unwrap();
        files.push(File {
            name,
            module,
            tokens: tokens(&text),
            exports: HashMap::new(),
        });
    }
}

/// Tarjan's algorithm; only components of more than one node.
fn strongly_connected(next: &[BTreeSet<usize>]) -> Vec<BTreeSet<usize>> {
    struct State<'a> {
        next: &'a [BTreeSet<usize>],
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        on_stack: Vec<bool>,
        stack: Vec<usize>,
        counter: usize,
        out: Vec<BTreeSet<usize>>,
    }
    fn visit(s: &mut State, v: usize) {
        s.index[v] = Some(s.counter);
        s.low[v] = s.counter;
        s.counter += 1;
        s.stack.push(v);
        s.on_stack[v] = true;
        for &w in s.next[v].iter() {
            match s.index[w] {
                None => {
                    visit(s, w);
                    s.low[v] = s.low[v].min(s.low[w]);
                }
                Some(iw) if s.on_stack[w] => s.low[v] = s.low[v].min(iw),
                _ => {}
            }
        }
        if Some(s.low[v]) == s.index[v] {
            let mut set = BTreeSet::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack[w] = false;
                set.insert(w);
                if w == v {
                    break;
                }
            }
            if set.len() > 1 {
                s.out.push(set);
            }
        }
    }
    let n = next.len();
    let mut s = State {
        next,
        index: vec![None; n],
        low: vec![0; n],
        on_stack: vec![false; n],
        stack: Vec::new(),
        counter: 0,
        out: Vec::new(),
    };
    for v in 0..n {
        if s.index[v].is_none() {
            visit(&mut s, v);
        }
    }
    s.out
}
