//! The house rules a reader can count: file and function length, and SQL the compiler checks.

use std::path::{Path, PathBuf};

use crate::source::{Token, tokens};

/// A file of `src/` with its text and tokens.
pub struct SourceFile {
    pub name: String,
    pub lines: Vec<String>,
    pub tokens: Vec<(Token, usize)>,
}

pub fn source_files(src: &Path) -> Vec<SourceFile> {
    let mut paths = Vec::new();
    collect(src, &mut paths);
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            SourceFile {
                name: path
                    .strip_prefix(src)
                    .unwrap()
                    .to_string_lossy()
                    .replace('\\', "/"),
                lines: text.lines().map(String::from).collect(),
                tokens: tokens(&text),
            }
        })
        .collect()
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect(&path, out);
        } else if path.extension().and_then(|e| e.to_str()) == Some("rs") {
            out.push(path);
        }
    }
}

/// A function with a body: its name, the line of `fn` and the line of its closing brace.
pub struct Function {
    pub name: String,
    pub first: usize,
    pub last: usize,
}

impl Function {
    pub fn lines(&self) -> usize {
        self.last - self.first + 1
    }
}

/// Every `fn` with a body, nested ones included (each counted on its own).
pub fn functions(file: &SourceFile) -> Vec<Function> {
    let t = &file.tokens;
    let mut out = Vec::new();
    for i in 0..t.len() {
        let (Token::Ident(kw), first) = &t[i] else {
            continue;
        };
        let Some((Token::Ident(name), _)) = t.get(i + 1) else {
            continue;
        };
        if kw != "fn" {
            continue;
        }
        // The body is the first `{` outside the signature's parentheses; a `;` first means
        // a declaration without one.
        let mut j = i + 2;
        let mut parens = 0i32;
        let open = loop {
            match t.get(j) {
                None => break None,
                Some((Token::Punct('('), _)) => parens += 1,
                Some((Token::Punct(')'), _)) => parens -= 1,
                Some((Token::Punct(';'), _)) if parens == 0 => break None,
                Some((Token::Punct('{'), _)) if parens == 0 => break Some(j),
                _ => {}
            }
            j += 1;
        };
        let Some(open) = open else { continue };
        let mut depth = 0i32;
        for (token, line) in &t[open..] {
            match token {
                Token::Punct('{') => depth += 1,
                Token::Punct('}') => {
                    depth -= 1;
                    if depth == 0 {
                        out.push(Function {
                            name: name.clone(),
                            first: *first,
                            last: *line,
                        });
                        break;
                    }
                }
                _ => {}
            }
        }
    }
    out
}

/// The comments and attributes right above line `line` (1-based), nearest first.
pub fn preamble(file: &SourceFile, line: usize) -> impl Iterator<Item = &str> {
    file.lines[..line - 1]
        .iter()
        .rev()
        .map(|l| l.trim())
        .take_while(|l| l.starts_with("//") || l.starts_with("#[") || l.starts_with("#!["))
}

/// Calls of the run-time-checked `sqlx::query`, `query_as` or `query_scalar` (not the `!`
/// macros), as line numbers.
pub fn unchecked_queries(file: &SourceFile) -> Vec<usize> {
    let t = &file.tokens;
    let mut out = Vec::new();
    for i in 0..t.len().saturating_sub(3) {
        let (Token::Ident(krate), _) = &t[i] else {
            continue;
        };
        let (Token::Ident(f), line) = &t[i + 2] else {
            continue;
        };
        if krate == "sqlx"
            && t[i + 1].0 == Token::Path
            && matches!(f.as_str(), "query" | "query_as" | "query_scalar")
            && t[i + 3].0 != Token::Punct('!')
        {
            out.push(*line);
        }
    }
    out
}
