//! The admin API's bearer tokens: `ADMIN_TOKENS_FILE`, one `NAME SHA256_HEX SCOPE [ACCESS]` per
//! line. `ACCESS` is `write` (the default, so older lines keep their meaning) or `read`: a
//! read-only token may call every GET and no POST.
//!
//! Only hashes are stored, so the file is no more secret than a password file; it must still
//! not be readable by every user. A presented token is hashed and compared with every entry in
//! constant time, so neither a timing nor an early exit tells how close a guess came.
//!
//! Whoever can write the file can make a token, so it must not be group- or world-writable.
//! It is read at start only: after changing it, restart the worker.

use std::fmt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::contract::OrgNumber;

/// Actors the worker and the CLI record themselves as: a token by one of these names would
/// pass its actions off as theirs in the audit.
pub const RESERVED_NAMES: [&str; 3] = ["worker", "cli", crate::sync::AUTO_SYNC_REQUESTED_BY];

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
    #[error(
        "the admin tokens file {path} is writable by others than its owner (mode {mode:o}), \
         who could add a token of their own; `chmod go-w` it (0440 or 0600)"
    )]
    Writable { path: PathBuf, mode: u32 },
    #[error("{path} line {line}: {problem}; expected `NAME SHA256_HEX SCOPE [read|write]`")]
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

/// What a token may do within its scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Access {
    /// Every route: reads, syncs, retries, approvals.
    #[default]
    Write,
    /// The GET routes only.
    Read,
}

impl Access {
    fn parse(field: Option<&str>) -> Result<Self, String> {
        match field {
            None | Some("write") => Ok(Self::Write),
            Some("read") => Ok(Self::Read),
            Some(other) => Err(format!("access {other:?} is not `read` or `write`")),
        }
    }
}

#[derive(Debug, Clone)]
struct Entry {
    name: String,
    hash: [u8; 32],
    scope: Scope,
    access: Access,
}

/// The caller a valid token identifies.
#[derive(Debug, Clone)]
pub struct Caller {
    pub name: String,
    pub scope: Scope,
    pub access: Access,
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
        refuse_open_modes(path).map_err(|e| match e {
            Refusal::Io(source) => read(source),
            Refusal::WorldReadable(mode) => Error::WorldReadable {
                path: path.to_owned(),
                mode,
            },
            Refusal::Writable(mode) => Error::Writable {
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
            let (name, hash, scope, access) = match fields[..] {
                [name, hash, scope] => (name, hash, scope, None),
                [name, hash, scope, access] => (name, hash, scope, Some(access)),
                _ => return Err((n, format!("{} fields instead of 3 or 4", fields.len()))),
            };
            if name.is_empty()
                || name.len() > 64
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
            {
                return Err((n, format!("name {name:?} is not [A-Za-z0-9._-]{{1,64}}")));
            }
            if RESERVED_NAMES.contains(&name) {
                return Err((
                    n,
                    format!("name {name:?} is reserved for the worker's own actions"),
                ));
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
            // One token, two names: which one the audit records would depend on the order.
            if let Some(first) = entries.iter().find(|e| e.hash == hash) {
                return Err((
                    n,
                    format!("the hash is also the hash of {:?}'s token", first.name),
                ));
            }
            let scope = parse_scope(scope).map_err(|p| (n, p))?;
            let access = Access::parse(access).map_err(|p| (n, p))?;
            entries.push(Entry {
                name: name.to_owned(),
                hash,
                scope,
                access,
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
            access: e.access,
        })
    }
}

/// A new random token and its file line.
#[derive(Debug)]
pub struct NewToken {
    pub token: String,
    pub line: String,
}

/// Makes a token of 32 random bytes (hex) for `name` and `scope` (`*` or `ORG,ORG`) that
/// may write.
pub fn generate(name: &str, scope: &str) -> Result<NewToken, Error> {
    generate_with(name, scope, Access::Write)
}

/// As [`generate`], with its access; a read-only one's line ends in `read`.
pub fn generate_with(name: &str, scope: &str, access: Access) -> Result<NewToken, Error> {
    // A newline in either would print a second line, with a hash the caller chose.
    for (flag, value) in [("--name", name), ("--firms", scope)] {
        if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(Error::Refused(format!(
                "{flag} {value:?} holds whitespace or a newline; separate organisation numbers \
                 with commas only"
            )));
        }
    }
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes);
    let token = hex::encode(bytes);
    let mut line = format!("{name} {} {scope}", hex::encode(sha256(token.as_bytes())));
    if access == Access::Read {
        line.push_str(" read");
    }
    // The same checks as at start, so the printed line is one `run` accepts.
    let parsed = Tokens::parse(&line).map_err(|(_, problem)| Error::Refused(problem))?;
    if parsed.entries.len() != 1 {
        return Err(Error::Refused(format!(
            "the line would hold {} entries instead of 1",
            parsed.entries.len()
        )));
    }
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
    Writable(u32),
}

fn refuse_open_modes(path: &Path) -> Result<(), Refusal> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(path)
        .map_err(Refusal::Io)?
        .permissions()
        .mode()
        & 0o777;
    if mode & 0o004 != 0 {
        return Err(Refusal::WorldReadable(mode));
    }
    if mode & 0o022 != 0 {
        return Err(Refusal::Writable(mode));
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
        let new = generate_with("settings-page", ORG, Access::Write).unwrap();
        let tokens = Tokens::parse(&format!("# AdminFlow\n\n{}\n", new.line)).unwrap();
        let caller = tokens.authenticate(&new.token).unwrap();
        assert_eq!(caller.name, "settings-page");
        assert!(caller.scope.allows(ORG));
        assert!(!caller.scope.allows("998877665"));
        assert!(tokens.authenticate("not-the-token").is_none());
    }

    #[test]
    fn a_read_only_token_is_marked_and_older_lines_can_write() {
        let read = generate_with("dashboard", "*", Access::Read).unwrap();
        assert!(read.line.ends_with(" * read"), "{}", read.line);
        let write = generate_with("support", ORG, Access::Write).unwrap();
        let tokens = Tokens::parse(&format!("{}\n{}\n", read.line, write.line)).unwrap();
        assert_eq!(
            tokens.authenticate(&read.token).unwrap().access,
            Access::Read
        );
        assert_eq!(
            tokens.authenticate(&write.token).unwrap().access,
            Access::Write
        );
        let explicit = format!("{} write", write.line);
        let tokens = Tokens::parse(&explicit).unwrap();
        assert_eq!(
            tokens.authenticate(&write.token).unwrap().access,
            Access::Write
        );
    }

    #[test]
    fn malformed_lines_are_named_by_number() {
        let hash = "a".repeat(64);
        for (text, line, problem) in [
            (format!("ok {hash} *\nbad name! {hash} *"), 2, "hex"),
            (format!("ok {hash} * admin"), 1, "`read` or `write`"),
            (format!("ok {hash} * read extra"), 1, "5 fields"),
            (format!("\n\nname {hash}"), 3, "2 fields"),
            (format!("name {} *", "A".repeat(64)), 1, "hex"),
            (format!("name {hash} 12345678"), 1, "organisation number"),
            (format!("n {hash} *\nn {hash} *"), 2, "twice"),
            (format!("{} {hash} *", "x".repeat(65)), 1, "[A-Za-z0-9._-]"),
            (
                format!("ok {hash} *\nworker {} *", "b".repeat(64)),
                2,
                "reserved",
            ),
            (format!("cli {hash} *"), 1, "reserved"),
            (format!("auto-sync {hash} {ORG}"), 1, "reserved"),
            (
                format!("a {hash} *\n# b\nb {hash} {ORG}"),
                3,
                "\"a\"'s token",
            ),
        ] {
            let (n, p) = Tokens::parse(&text).unwrap_err();
            assert_eq!(n, line, "{text}");
            assert!(p.contains(problem), "{p} should mention {problem}");
        }
    }

    #[test]
    fn admin_token_refuses_whitespace_that_would_print_a_second_line() {
        let planted = format!("{ORG}\nplanted {} *", "c".repeat(64));
        for (name, firms) in [
            ("settings-page", planted.as_str()),
            ("settings-page", "912345610, 923456783"),
            ("settings-page", "912345610\t"),
            ("settings page", "*"),
            ("settings-page\nplanted", "*"),
        ] {
            let Err(Error::Refused(problem)) = generate_with(name, firms, Access::Write) else {
                panic!("{name:?} {firms:?} was accepted");
            };
            assert!(problem.contains("whitespace or a newline"), "{problem}");
        }
        let Err(Error::Refused(problem)) = generate_with("worker", "*", Access::Write) else {
            panic!("a reserved name was accepted");
        };
        assert!(problem.contains("reserved"), "{problem}");
        // A name that is all comment would print a line `run` reads as no token at all.
        let Err(Error::Refused(problem)) = generate_with("#x", "*", Access::Write) else {
            panic!("a commented-out line was accepted");
        };
        assert!(problem.contains("0 entries"), "{problem}");
        assert_eq!(
            generate_with("settings-page", "912345610,923456783", Access::Write)
                .map(|t| t.line.lines().count())
                .unwrap(),
            1
        );
    }

    #[test]
    fn a_token_file_others_may_write_or_read_is_refused() {
        use std::os::unix::fs::PermissionsExt as _;
        let path = std::env::temp_dir().join(format!("admin-tokens-{}", uuid::Uuid::new_v4()));
        std::fs::write(
            &path,
            generate_with("support", "*", Access::Write).unwrap().line,
        )
        .unwrap();
        let load = |mode| {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            Tokens::load(Some(&path))
        };
        for mode in [0o620, 0o602, 0o660, 0o622] {
            let err = load(mode).unwrap_err();
            assert!(
                matches!(err, Error::Writable { mode: m, .. } if m == mode),
                "{mode:o}: {err}"
            );
            assert!(err.to_string().contains("chmod go-w"), "{err}");
        }
        assert!(matches!(
            load(0o644).unwrap_err(),
            Error::WorldReadable { .. }
        ));
        for mode in [0o600, 0o640, 0o440, 0o400] {
            assert!(!load(mode).unwrap().is_empty(), "{mode:o}");
        }
        std::fs::remove_file(&path).unwrap();
    }
}
