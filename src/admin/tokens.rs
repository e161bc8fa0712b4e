//! The admin API's bearer tokens: `ADMIN_TOKENS_FILE`, one `NAME SHA256_HEX SCOPE` per line.
//!
//! Only hashes are stored, so the file is no more secret than a password file; it must still
//! not be readable by every user. A presented token is hashed and compared with every entry in
//! constant time, so neither a timing nor an early exit tells how close a guess came.

use std::fmt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::contract::OrgNumber;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read the admin tokens file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the admin tokens file {path} is readable by every user (mode {mode:o}); \
         `chmod o-r` it (0440 or 0600)"
    )]
    WorldReadable { path: PathBuf, mode: u32 },
    #[error("{path} line {line}: {problem}; expected `NAME SHA256_HEX SCOPE`")]
    Malformed {
        path: PathBuf,
        line: usize,
        problem: String,
    },
    /// `admin-token` was given a name or scope the token file would refuse.
    #[error("{0}; the token was not made")]
    Refused(String),
}

/// Which firms a token may act for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    All,
    Firms(Vec<String>),
}

impl Scope {
    pub fn allows(&self, firm: &str) -> bool {
        match self {
            Self::All => true,
            Self::Firms(firms) => firms.iter().any(|f| f == firm),
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::All => f.write_str("*"),
            Self::Firms(firms) => f.write_str(&firms.join(",")),
        }
    }
}

#[derive(Debug, Clone)]
struct Entry {
    name: String,
    hash: [u8; 32],
    scope: Scope,
}

/// The caller a valid token identifies.
#[derive(Debug, Clone)]
pub struct Caller {
    pub name: String,
    pub scope: Scope,
}

/// The tokens read at start. Empty when no file is configured: every /v1 route answers 401.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    entries: Vec<Entry>,
}

impl Tokens {
    /// Reads `path`, or no tokens at all without one.
    pub fn load(path: Option<&Path>) -> Result<Self, Error> {
        let Some(path) = path else {
            return Ok(Self::default());
        };
        let read = |source| Error::Read {
            path: path.to_owned(),
            source,
        };
        refuse_world_readable(path).map_err(|e| match e {
            Refusal::Io(source) => read(source),
            Refusal::WorldReadable(mode) => Error::WorldReadable {
                path: path.to_owned(),
                mode,
            },
        })?;
        let text = std::fs::read_to_string(path).map_err(read)?;
        Self::parse(&text).map_err(|(line, problem)| Error::Malformed {
            path: path.to_owned(),
            line,
            problem,
        })
    }

    /// Parses the file's text; a bad line gives its number (from 1) and what is wrong.
    pub fn parse(text: &str) -> Result<Self, (usize, String)> {
        let mut entries: Vec<Entry> = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or_default().trim();
            if line.is_empty() {
                continue;
            }
            let n = i + 1;
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [name, hash, scope] = fields[..] else {
                return Err((n, format!("{} fields instead of 3", fields.len())));
            };
            if name.is_empty()
                || name.len() > 64
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
            {
                return Err((n, format!("name {name:?} is not [A-Za-z0-9._-]{{1,64}}")));
            }
            if entries.iter().any(|e| e.name == name) {
                return Err((n, format!("name {name:?} is listed twice")));
            }
            let hash = parse_hash(hash).ok_or_else(|| {
                (
                    n,
                    "the hash is not 64 lowercase hex digits (the SHA-256 of the token)".to_owned(),
                )
            })?;
            let scope = parse_scope(scope).map_err(|p| (n, p))?;
            entries.push(Entry {
                name: name.to_owned(),
                hash,
                scope,
            });
        }
        Ok(Self { entries })
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The caller `token` identifies, comparing its hash with every entry in constant time.
    pub fn authenticate(&self, token: &str) -> Option<Caller> {
        let presented = sha256(token.as_bytes());
        let mut found = None;
        for entry in &self.entries {
            if bool::from(entry.hash.ct_eq(&presented)) {
                found = Some(entry);
            }
        }
        found.map(|e| Caller {
            name: e.name.clone(),
            scope: e.scope.clone(),
        })
    }
}

/// A new random token and its file line.
#[derive(Debug)]
pub struct NewToken {
    pub token: String,
    pub line: String,
}

/// Makes a token of 32 random bytes (hex) for `name` and `scope` (`*` or `ORG,ORG`).
pub fn generate(name: &str, scope: &str) -> Result<NewToken, Error> {
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes);
    let token = hex::encode(bytes);
    let line = format!("{name} {} {scope}", hex::encode(sha256(token.as_bytes())));
    // The same checks as at start, so the printed line is one `run` accepts.
    Tokens::parse(&line).map_err(|(_, problem)| Error::Refused(problem))?;
    Ok(NewToken { token, line })
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

fn parse_hash(hex_digits: &str) -> Option<[u8; 32]> {
    if hex_digits.len() != 64
        || !hex_digits
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
    {
        return None;
    }
    let mut hash = [0u8; 32];
    hex::decode_to_slice(hex_digits, &mut hash).ok()?;
    Some(hash)
}

fn parse_scope(scope: &str) -> Result<Scope, String> {
    if scope == "*" {
        return Ok(Scope::All);
    }
    let firms = scope
        .split(',')
        .map(|org| {
            OrgNumber::parse("scope", org)
                .map(|o| o.to_string())
                .map_err(|_| format!("scope {org:?} is not `*` or an organisation number"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Scope::Firms(firms))
}

enum Refusal {
    Io(std::io::Error),
    WorldReadable(u32),
}

fn refuse_world_readable(path: &Path) -> Result<(), Refusal> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(path)
        .map_err(Refusal::Io)?
        .permissions()
        .mode()
        & 0o777;
    if mode & 0o004 != 0 {
        return Err(Refusal::WorldReadable(mode));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const ORG: &str = "912345610";

    #[test]
    fn a_generated_token_authenticates_with_its_scope() {
        let new = generate("settings-page", ORG).unwrap();
        let tokens = Tokens::parse(&format!("# AdminFlow\n\n{}\n", new.line)).unwrap();
        let caller = tokens.authenticate(&new.token).unwrap();
        assert_eq!(caller.name, "settings-page");
        assert!(caller.scope.allows(ORG));
        assert!(!caller.scope.allows("998877665"));
        assert!(tokens.authenticate("not-the-token").is_none());
    }

    #[test]
    fn malformed_lines_are_named_by_number() {
        let hash = "a".repeat(64);
        for (text, line, problem) in [
            (format!("ok {hash} *\nbad name! {hash} *"), 2, "fields"),
            (format!("\n\nname {hash}"), 3, "2 fields"),
            (format!("name {} *", "A".repeat(64)), 1, "hex"),
            (format!("name {hash} 12345678"), 1, "organisation number"),
            (format!("n {hash} *\nn {hash} *"), 2, "twice"),
            (format!("{} {hash} *", "x".repeat(65)), 1, "[A-Za-z0-9._-]"),
        ] {
            let (n, p) = Tokens::parse(&text).unwrap_err();
            assert_eq!(n, line, "{text}");
            assert!(p.contains(problem), "{p} should mention {problem}");
        }
    }
}
