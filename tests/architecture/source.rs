//! A Rust file as the paths it names: comments and literals dropped, `use` trees expanded.

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Token {
    Ident(String),
    Path,        // ::
    Punct(char), // { } ; , * ( ) # and anything else
}

/// Tokens of `text` with comments, strings, chars and lifetimes removed.
pub fn tokens(text: &str) -> Vec<(Token, usize)> {
    let bytes: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let (mut i, mut line) = (0, 1);
    while i < bytes.len() {
        let c = bytes[i];
        let next = bytes.get(i + 1).copied();
        match c {
            '\n' => {
                line += 1;
                i += 1;
            }
            '/' if next == Some('/') => {
                while i < bytes.len() && bytes[i] != '\n' {
                    i += 1;
                }
            }
            '/' if next == Some('*') => {
                let mut depth = 0;
                loop {
                    if i + 1 >= bytes.len() {
                        i = bytes.len();
                        break;
                    }
                    if bytes[i] == '/' && bytes[i + 1] == '*' {
                        depth += 1;
                        i += 2;
                    } else if bytes[i] == '*' && bytes[i + 1] == '/' {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        line += usize::from(bytes[i] == '\n');
                        i += 1;
                    }
                }
            }
            'r' | 'b' if raw_string_start(&bytes, i).is_some() => {
                let (hashes, body) = raw_string_start(&bytes, i).unwrap();
                i = body;
                loop {
                    if i >= bytes.len() {
                        break;
                    }
                    if bytes[i] == '"' && (0..hashes).all(|h| bytes.get(i + 1 + h) == Some(&'#')) {
                        i += 1 + hashes;
                        break;
                    }
                    line += usize::from(bytes[i] == '\n');
                    i += 1;
                }
            }
            '"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != '"' {
                    if bytes[i] == '\\' {
                        i += 1;
                    }
                    line += usize::from(bytes.get(i) == Some(&'\n'));
                    i += 1;
                }
                i += 1;
            }
            '\'' => {
                // A char literal closes within a few characters; a lifetime does not close.
                if next == Some('\\') {
                    i += 2;
                    while i < bytes.len() && bytes[i] != '\'' {
                        i += 1;
                    }
                    i += 1;
                } else if bytes.get(i + 2) == Some(&'\'') {
                    i += 3;
                } else {
                    i += 1;
                }
            }
            ':' if next == Some(':') => {
                out.push((Token::Path, line));
                i += 2;
            }
            c if c.is_alphabetic() || c == '_' => {
                let start = i;
                while i < bytes.len() && (bytes[i].is_alphanumeric() || bytes[i] == '_') {
                    i += 1;
                }
                out.push((Token::Ident(bytes[start..i].iter().collect()), line));
            }
            c if c.is_whitespace() || c.is_ascii_digit() => i += 1,
            c => {
                out.push((Token::Punct(c), line));
                i += 1;
            }
        }
    }
    out
}

/// `r"`, `r#"`, `br"`...: the number of hashes and where the body starts.
fn raw_string_start(bytes: &[char], i: usize) -> Option<(usize, usize)> {
    if i > 0 && (bytes[i - 1].is_alphanumeric() || bytes[i - 1] == '_') {
        return None;
    }
    let mut j = i;
    if bytes[j] == 'b' {
        j += 1;
        if bytes.get(j) == Some(&'"') {
            return Some((0, j + 1));
        }
    }
    if bytes.get(j) != Some(&'r') {
        return None;
    }
    j += 1;
    let mut hashes = 0;
    while bytes.get(j) == Some(&'#') {
        hashes += 1;
        j += 1;
    }
    (bytes.get(j) == Some(&'"')).then_some((hashes, j + 1))
}

/// One path a `use` tree names, with the name it binds (`*` for a glob).
#[derive(Debug, Clone)]
pub struct UsePath {
    pub segments: Vec<String>,
    pub binds: String,
}

/// Expands the tokens of one `use` tree (between `use` and `;`).
pub fn expand_use(tokens: &[Token]) -> Vec<UsePath> {
    let mut out = Vec::new();
    let mut pos = 0;
    tree(tokens, &mut pos, Vec::new(), &mut out);
    out
}

fn tree(tokens: &[Token], pos: &mut usize, mut prefix: Vec<String>, out: &mut Vec<UsePath>) {
    loop {
        match tokens.get(*pos) {
            Some(Token::Ident(name)) if name == "as" => {
                *pos += 1;
                if let Some(Token::Ident(alias)) = tokens.get(*pos) {
                    *pos += 1;
                    out.push(UsePath {
                        segments: prefix,
                        binds: alias.clone(),
                    });
                }
                return;
            }
            Some(Token::Ident(name)) => {
                prefix.push(name.clone());
                *pos += 1;
            }
            Some(Token::Path) => *pos += 1,
            Some(Token::Punct('*')) => {
                *pos += 1;
                out.push(UsePath {
                    segments: prefix,
                    binds: "*".into(),
                });
                return;
            }
            Some(Token::Punct('{')) => {
                *pos += 1;
                loop {
                    tree(tokens, pos, prefix.clone(), out);
                    match tokens.get(*pos) {
                        Some(Token::Punct(',')) => *pos += 1,
                        Some(Token::Punct('}')) => {
                            *pos += 1;
                            break;
                        }
                        _ => return,
                    }
                    if tokens.get(*pos) == Some(&Token::Punct('}')) {
                        *pos += 1;
                        break;
                    }
                }
                return;
            }
            _ => {
                if let Some(last) = prefix.last().cloned() {
                    let binds = if last == "self" {
                        prefix.pop();
                        prefix.last().cloned().unwrap_or_default()
                    } else {
                        last
                    };
                    out.push(UsePath {
                        segments: prefix,
                        binds,
                    });
                }
                return;
            }
        }
    }
}
