//! The whole answer in one line.

use super::facts::{ClientFacts, FlushPause, Roles};
use super::package::{PackageFacts, PackageState};

/// The whole answer in one line: what blocks everything first, then each package, problems
/// before what is fine.
pub(super) fn verdict(
    held: bool,
    pause: Option<&FlushPause>,
    roles: Option<&Roles>,
    clients: &[ClientFacts],
) -> String {
    use PackageState as S;
    let mut packages: Vec<&PackageFacts> = clients.iter().flat_map(|c| &c.packages).collect();
    packages.retain(|p| p.state != S::None);
    if packages.is_empty() {
        return format!("has no Altinn access: {}", no_access(held, roles, clients));
    }
    let rank = |s: S| match s {
        S::Refused | S::RemovalRefused => 0,
        S::RemovalHeld | S::FlushOff => 1,
        S::WaitingForSync | S::RemovalWaitingForSync => 2,
        S::OnItsWay | S::RemovalOnItsWay => 3,
        S::HasAccess | S::None => 4,
    };
    packages.sort_by_key(|p| rank(p.state));
    let mut line = packages
        .iter()
        .map(|p| p.verdict.as_str())
        .collect::<Vec<_>>()
        .join("; ");
    if let Some(p) = pause {
        line.insert_str(
            0,
            &format!(
                "the firm's flush is paused ({}); ",
                p.reason
                    .as_deref()
                    .unwrap_or("Altinn refused the system user")
            ),
        );
    }
    if held {
        line.insert_str(
            0,
            "the firm's events are on hold after a sequence regression; ",
        );
    }
    line
}

/// Why an employee with no package at all has none, the cause furthest upstream first.
fn no_access(held: bool, roles: Option<&Roles>, clients: &[ClientFacts]) -> &'static str {
    match roles {
        _ if held => "the firm's events are on hold after a sequence regression",
        None => "no role has been received from AdminFlow for this employee",
        Some(r) if r.roles.iter().all(|m| m.package.is_none()) => {
            "the employee's roles give no Altinn access package"
        }
        Some(_) if clients.is_empty() => "the employee works with no client",
        Some(_) => "nothing is wanted for the employee's clients",
    }
}
