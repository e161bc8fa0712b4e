//! `altinn-sync doctor`: first contact with a real Altinn, step by step, with `run`'s settings.
//!
//! Each step says in plain words what it checked and, when it fails, what to fix. Nothing in
//! Altinn changes: only the token endpoints and the read routes are called. The checks per
//! firm stop at the first failure, since every later step needs the earlier ones.

use std::collections::HashSet;

use crate::altinn::maskinporten::SigningKey;
use crate::altinn::wire::ClientAccess;
use crate::altinn::{self, AltinnClient, AltinnSettings};
use crate::policy::{DEFAULT_ROLE_MAPPING, RoleMapping};
use crate::state::{self, DbSettings};

#[derive(Debug, Clone, clap::Args)]
pub struct DoctorArgs {
    #[command(flatten)]
    pub db: DbSettings,
    #[command(flatten)]
    pub altinn: AltinnSettings,
    /// Check this firm only; every firm the worker knows when left out.
    #[arg(long, env = "FIRM")]
    pub firm: Option<String>,
    /// The mapping `run` uses: which packages the clients' roles must let the firm delegate.
    #[arg(long, env = "ROLE_MAPPING", default_value = DEFAULT_ROLE_MAPPING)]
    pub role_mapping: RoleMapping,
}

/// One step's outcome: what was checked, and what was found or what to fix.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Check {
    pub firm: Option<String>,
    pub step: &'static str,
    pub ok: bool,
    pub detail: String,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "the Altinn settings are not given: doctor checks the settings `run` would use \
         (ALTINN_BASE_URL, MASKINPORTEN_URL, MASKINPORTEN_CLIENT_ID, MASKINPORTEN_KID, \
         MASKINPORTEN_KEY_FILE, MASKINPORTEN_SCOPES)"
    )]
    NotConfigured,
    #[error("the Altinn settings are unusable")]
    Settings(#[source] altinn::Error),
    #[error("could not read the firms the worker knows (is PostgreSQL running?)")]
    Database(#[from] state::Error),
}

/// Runs every check; the caller prints them and fails when any failed.
pub async fn run(args: &DoctorArgs) -> Result<Vec<Check>, Error> {
    let config = args
        .altinn
        .validate()
        .map_err(Error::Settings)?
        .ok_or(Error::NotConfigured)?;
    let mut checks = Vec::new();
    let key = SigningKey::from_file(&config);
    checks.push(Check {
        firm: None,
        step: "key file",
        ok: key.is_ok(),
        detail: match &key {
            Ok(_) => format!(
                "{} parses as an RSA private key (whether it matches kid {} shows in \
                 Maskinporten's answer below)",
                config.key_file.display(),
                config.kid
            ),
            Err(e) => format!("{}: {e}", config.key_file.display()),
        },
    });
    let Ok(key) = key else {
        return Ok(checks);
    };
    let client = AltinnClient::with_key(config, key).map_err(Error::Settings)?;
    let firms = match &args.firm {
        Some(firm) => vec![firm.clone()],
        None => {
            let pool = state::connect(&args.db).await?;
            let firms = sqlx::query_scalar!("SELECT org_number FROM firms ORDER BY org_number")
                .fetch_all(&pool)
                .await
                .map_err(state::Error::from)?;
            pool.close().await;
            firms
        }
    };
    if firms.is_empty() {
        checks.push(Check {
            firm: None,
            step: "firms",
            ok: false,
            detail: "the worker knows no firm yet; name one with --firm".into(),
        });
    }
    let mapped: HashSet<String> = args
        .role_mapping
        .packages()
        .into_iter()
        .map(|p| format!("urn:altinn:accesspackage:{p}"))
        .collect();
    for firm in firms {
        check_firm(&client, &firm, &mapped, &mut checks).await;
    }
    Ok(checks)
}

async fn check_firm(
    client: &AltinnClient,
    org: &str,
    mapped: &HashSet<String>,
    checks: &mut Vec<Check>,
) {
    let mut push = |step: &'static str, outcome: Result<String, String>| {
        let ok = outcome.is_ok();
        checks.push(Check {
            firm: Some(org.to_owned()),
            step,
            ok,
            detail: outcome.unwrap_or_else(|e| e),
        });
        ok
    };
    let tokens = client.tokens();
    let grant = tokens.maskinporten_for(org).await;
    let Some(mp) = step(&mut push, "maskinporten", grant, |_| {
        "Maskinporten issues a token for the firm's system user (scopes, client id and \
             the firm's approval are in order)"
            .to_owned()
    }) else {
        return;
    };
    if step(
        &mut push,
        "token exchange",
        tokens.exchange(&mp).await,
        |_| "Altinn exchanges it for an Altinn token".to_owned(),
    )
    .is_none()
    {
        return;
    }
    let Some(firm) = step(
        &mut push,
        "authorizedparties",
        client.firm_party(org).await,
        |f| format!("authorizedparties lists the firm (party {})", f.party),
    ) else {
        return;
    };
    if step(&mut push, "clients", client.clients(&firm).await, |c| {
        clients_summary(c, mapped)
    })
    .is_none()
    {
        return;
    }
    step(&mut push, "agents", client.agents(&firm).await, |a| {
        format!("GET agents answers: {} agent(s)", a.len())
    });
}

/// Records a step and hands on its value when it succeeded.
fn step<T>(
    push: &mut impl FnMut(&'static str, Result<String, String>) -> bool,
    name: &'static str,
    outcome: altinn::Result<T>,
    describe: impl FnOnce(&T) -> String,
) -> Option<T> {
    match outcome {
        Ok(value) => {
            push(name, Ok(describe(&value)));
            Some(value)
        }
        Err(e) => {
            push(name, Err(e.to_string()));
            None
        }
    }
}

fn clients_summary(clients: &[ClientAccess], mapped: &HashSet<String>) -> String {
    let covering = clients
        .iter()
        .filter(|c| {
            mapped.iter().all(|package| {
                c.access
                    .iter()
                    .any(|a| a.packages.iter().any(|p| p.urn.as_ref() == Some(package)))
            })
        })
        .count();
    let mut text = format!(
        "GET clients lists {} client(s); {covering} give(s) the firm a role for every mapped \
         package",
        clients.len()
    );
    if clients.is_empty() {
        text.push_str(
            " (no client has registered the firm as accountant in the Register of Legal \
             Entities yet)",
        );
    }
    text
}

/// The checks as an operator reads them.
pub fn render(checks: &[Check]) -> String {
    let mut out = String::new();
    let mut firm: Option<&str> = None;
    for c in checks {
        if c.firm.as_deref() != firm {
            firm = c.firm.as_deref();
            if let Some(f) = firm {
                out.push_str(&format!("firm {f}\n"));
            }
        }
        let indent = if c.firm.is_some() { "  " } else { "" };
        let mark = if c.ok { "ok  " } else { "FAIL" };
        out.push_str(&format!("{indent}{mark} {:<17} {}\n", c.step, c.detail));
    }
    let failed = checks.iter().filter(|c| !c.ok).count();
    if failed == 0 {
        out.push_str("every check passed\n");
    } else {
        out.push_str(&format!("{failed} check(s) failed\n"));
    }
    out
}
