//! Secrets as files: `DATABASE_URL_FILE` and `AMQP_URL_FILE` name a file that holds the URL (a
//! mounted Kubernetes secret, say), so the URL with its password is in no environment variable.
//! Setting a variable and its `_FILE` both is refused: which one wins would be a guess.
//! (`MASKINPORTEN_KEY_FILE` is a path already; the admin tokens file holds hashes only.)

use std::path::PathBuf;

use super::args::Command;
use crate::ingest::BrokerSettings;
use crate::state::DbSettings;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("both {var} and {var}_FILE are set; set only one")]
    Both { var: &'static str },
    #[error("cannot read {var}_FILE {path}")]
    Read {
        var: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{var}_FILE {path} is empty")]
    Empty { var: &'static str, path: PathBuf },
}

/// The secrets read from their files, each `None` when its `_FILE` is not set.
#[derive(Debug, Default)]
pub struct Secrets {
    database_url: Option<String>,
    amqp_url: Option<String>,
}

impl Secrets {
    /// Reads every `*_FILE` set in `env` (the process's environment, or a test's).
    pub fn read(env: impl Fn(&str) -> Option<String>) -> Result<Self, Error> {
        Ok(Self {
            database_url: from_file("DATABASE_URL", &env)?,
            amqp_url: from_file("AMQP_URL", &env)?,
        })
    }

    /// Puts the secrets read into the command's settings.
    pub fn apply(&self, command: &mut Command) {
        let (db, broker) = settings_of(command);
        if let (Some(db), Some(url)) = (db, &self.database_url) {
            db.database_url.clone_from(url);
        }
        if let (Some(broker), Some(url)) = (broker, &self.amqp_url) {
            broker.amqp_url.clone_from(url);
        }
    }
}

/// The file's content, trimmed of the newline a secret's file usually ends with.
fn from_file(
    var: &'static str,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<Option<String>, Error> {
    let Some(path) = env(&format!("{var}_FILE")).map(PathBuf::from) else {
        return Ok(None);
    };
    if env(var).is_some() {
        return Err(Error::Both { var });
    }
    let text = std::fs::read_to_string(&path).map_err(|source| Error::Read {
        var,
        path: path.clone(),
        source,
    })?;
    let value = text.trim();
    if value.is_empty() {
        return Err(Error::Empty { var, path });
    }
    Ok(Some(value.to_owned()))
}

/// The database and broker settings a command has, if any.
fn settings_of(command: &mut Command) -> (Option<&mut DbSettings>, Option<&mut BrokerSettings>) {
    match command {
        Command::Run(s) => (Some(&mut s.db), Some(&mut s.broker)),
        Command::Dev(a) => (Some(&mut a.worker.db), Some(&mut a.worker.broker)),
        Command::Migrate(db)
        | Command::Desired { db, .. }
        | Command::RebuildDesired { db, .. }
        | Command::DeadLetters { db, .. }
        | Command::Resequence { db, .. }
        | Command::Parked { db, .. }
        | Command::Prune { db, .. } => (Some(db), None),
        Command::Explain { ops, .. }
        | Command::Retry { ops, .. }
        | Command::Status(ops)
        | Command::Plan(ops)
        | Command::Staged(ops) => (Some(&mut ops.db), None),
        Command::Approve(a) | Command::Reject(a) => (Some(&mut a.ops.db), None),
        Command::Audit(a) => (Some(&mut a.ops.db), None),
        Command::Doctor(d) => (Some(&mut d.db), None),
        Command::Publish(a) => (None, Some(&mut a.broker)),
        Command::Sync(a) => (None, Some(&mut a.broker)),
        Command::Reconcile(a) => (None, Some(&mut a.broker)),
        Command::Healthcheck { .. }
        | Command::Openapi
        | Command::AdminToken { .. }
        | Command::AltinnSim(_) => (None, None),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::collections::HashMap;

    use clap::Parser as _;

    use super::*;
    use crate::cli::Cli;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| vars.get(k).cloned()
    }

    #[test]
    fn a_url_is_read_from_its_file_and_both_set_is_refused() {
        let path = std::env::temp_dir().join(format!("db-url-{}", uuid::Uuid::new_v4()));
        std::fs::write(&path, "postgres://app:s3cret@db:5432/altinn_sync\n").unwrap();
        let file = path.to_str().unwrap();
        let secrets = Secrets::read(env(&[("DATABASE_URL_FILE", file)])).unwrap();
        let mut command = Cli::try_parse_from(["altinn-sync", "status", "--firm", "912345610"])
            .unwrap()
            .command;
        secrets.apply(&mut command);
        let Command::Status(ops) = &command else {
            panic!()
        };
        assert_eq!(
            ops.db.database_url,
            "postgres://app:s3cret@db:5432/altinn_sync"
        );

        let both = Secrets::read(env(&[("DATABASE_URL_FILE", file), ("DATABASE_URL", "x")]));
        let err = both.unwrap_err().to_string();
        assert_eq!(
            err,
            "both DATABASE_URL and DATABASE_URL_FILE are set; set only one"
        );
        let missing = Secrets::read(env(&[("AMQP_URL_FILE", "/nonexistent/amqp")])).unwrap_err();
        assert!(
            missing.to_string().contains("cannot read AMQP_URL_FILE"),
            "{missing}"
        );
        std::fs::write(&path, "\n").unwrap();
        assert!(matches!(
            Secrets::read(env(&[("DATABASE_URL_FILE", file)])),
            Err(Error::Empty { .. })
        ));
        std::fs::remove_file(&path).unwrap();
    }
}
