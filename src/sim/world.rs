//! The simulator's in-memory Altinn: the loaded world, agents, delegations and counters.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::{Uuid, uuid};

use super::faults::Faults;

/// What `PUT /_sim/world` loads. Loading replaces everything, including agents and delegations.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct World {
    /// Maskinporten clients and the public keys their grants are verified with, by `kid`.
    #[serde(default)]
    pub maskinporten_clients: Vec<MaskinportenClient>,
    /// The grant's expected `aud`; defaults to `http://{Host}/` of the token request.
    #[serde(default)]
    pub maskinporten_issuer: Option<String>,
    #[serde(default)]
    pub firms: Vec<Firm>,
    #[serde(default)]
    pub clients: Vec<Client>,
    #[serde(default)]
    pub persons: Vec<Person>,
    /// Lifetime of exchanged Altinn tokens (Altinn's `JwtValidityMinutes` is 30).
    #[serde(default)]
    pub altinn_token_lifetime_secs: Option<u64>,
    /// Agents and delegations Altinn already holds when the world is loaded, so a test or
    /// benchmark can start from a steady state without a call per delegation.
    #[serde(default)]
    pub held: Vec<Held>,
}

/// A person who is already the firm's agent, with one package on each of `client_parties`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Held {
    pub firm_org_number: String,
    pub agent_party: Uuid,
    pub role: String,
    pub package: String,
    #[serde(default)]
    pub client_parties: Vec<Uuid>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MaskinportenClient {
    pub client_id: String,
    pub kid: String,
    pub public_key_pem: String,
    /// Scopes this client may ask for.
    pub scopes: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Firm {
    pub org_number: String,
    pub party_uuid: Uuid,
    pub name: String,
    /// Whether the firm approved our system user; if not, Maskinporten answers
    /// `invalid_altinn_customer_configuration`.
    #[serde(default = "approved")]
    pub system_user_approved: bool,
}

fn approved() -> bool {
    true
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Client {
    pub party_uuid: Uuid,
    pub org_number: String,
    pub name: String,
    /// The ER roles this client has given firms, e.g. `regnskapsforer`.
    #[serde(default)]
    pub firm_roles: Vec<FirmRole>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FirmRole {
    pub firm_org_number: String,
    pub role: String,
    /// For `rettighetshaver`: the packages the client delegated to the firm in Altinn. Empty
    /// for a role from the Register of Legal Entities, whose packages are fixed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub packages: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Person {
    pub party_uuid: Uuid,
    pub national_identity_number: String,
    pub last_name: String,
    pub name: String,
}

/// One row of `GET /_sim/delegations`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DelegationRow {
    pub firm_org_number: String,
    pub firm_party: Uuid,
    pub client_party: Uuid,
    pub agent_party: Uuid,
    pub role: String,
    pub packages: Vec<String>,
}

/// An Altinn role the simulator knows, with the packages it lets a firm pass on.
pub struct Role {
    pub code: &'static str,
    pub id: Uuid,
    pub urn: &'static str,
    pub legacy_urn: &'static str,
    pub packages: &'static [&'static str],
}

pub const AGENT_ROLE_ID: Uuid = uuid!("ff4c33f5-03f7-4445-85ed-1e60b8aafb30");

const REGN_PACKAGES: &[&str] = &[
    "urn:altinn:accesspackage:regnskapsforer-med-signeringsrettighet",
    "urn:altinn:accesspackage:regnskapsforer-uten-signeringsrettighet",
    "urn:altinn:accesspackage:regnskapsforer-lonn",
];

pub const ROLES: &[Role] = &[
    Role {
        code: "regnskapsforer",
        id: uuid!("46e27685-b3ba-423e-8b42-faab54de5817"),
        urn: "urn:altinn:external-role:ccr:regnskapsforer",
        legacy_urn: "urn:altinn:rolecode:regn",
        packages: REGN_PACKAGES,
    },
    // Altinn's `RoleConstants.Rightholder`: packages the client delegated to the firm in Altinn
    // (given per client in the world, `FirmRole::packages`).
    Role {
        code: "rettighetshaver",
        id: uuid!("42cae370-2dc1-4fdc-9c67-c2f4b0f0f829"),
        urn: "urn:altinn:role:rettighetshaver",
        legacy_urn: "",
        packages: &[],
    },
];

/// Package URNs and ids from Altinn's `PackageConstants`.
pub const PACKAGES: &[(&str, Uuid)] = &[
    (
        REGN_PACKAGES[0],
        uuid!("955d5779-3e2b-4098-b11d-0431dc41ddbe"),
    ),
    (
        REGN_PACKAGES[1],
        uuid!("a5f7f72a-9b89-445d-85bb-06f678a3d4d1"),
    ),
    (
        REGN_PACKAGES[2],
        uuid!("43becc6a-8c6c-4e9e-bb2f-08fe588ada21"),
    ),
    (
        "urn:altinn:accesspackage:klientadministrator",
        uuid!("0195efb8-7c80-7e82-9b4f-7d63e773bbca"),
    ),
    (
        "urn:altinn:accesspackage:tilgangsstyrer",
        uuid!("0195efb8-7c80-7a95-ad36-900c3d8ad300"),
    ),
    (
        "urn:altinn:accesspackage:hovedadministrator",
        uuid!("0195efb8-7c80-7e16-ab0c-36dc8ab1a29d"),
    ),
];

/// Like Altinn's `RoleConstants.TryGetByAll`: code, URN, legacy URN or id.
pub fn role(name: &str) -> Option<&'static Role> {
    ROLES.iter().find(|r| {
        r.code.eq_ignore_ascii_case(name)
            || r.urn == name
            || r.legacy_urn == name
            || r.id.to_string() == name.to_ascii_lowercase()
    })
}

/// Like Altinn's `PackageConstants.TryGetByUrn`: full URN, `suffix` or `:suffix`.
pub fn package(name: &str) -> Option<(&'static str, Uuid)> {
    let suffix = name.rsplit(':').next().unwrap_or(name);
    PACKAGES
        .iter()
        .copied()
        .find(|(urn, _)| urn.rsplit(':').next() == Some(suffix))
}

/// Altinn's `MaximumFailedAttempts`.
pub const MAX_FAILED_LOOKUPS: usize = 2;

#[derive(Debug, Default)]
pub struct State {
    pub world: World,
    pub firms_by_org: HashMap<String, usize>,
    pub clients_by_party: HashMap<Uuid, usize>,
    /// Firm org number → the clients (indexes, in the world's order) that gave it a role, so
    /// listing a firm's clients does not walk every client of the world.
    pub clients_by_firm: HashMap<String, BTreeSet<usize>>,
    pub persons_by_nin: HashMap<String, usize>,
    pub persons_by_party: HashMap<Uuid, usize>,
    /// firm party → agent party → (assignment id, added at).
    pub agents: HashMap<Uuid, BTreeMap<Uuid, (Uuid, DateTime<Utc>)>>,
    /// (firm, client, agent) → role code → package URNs.
    pub delegations: BTreeMap<(Uuid, Uuid, Uuid), BTreeMap<&'static str, BTreeSet<&'static str>>>,
    /// Times of failed person lookups within the last hour, shared by every system user (Altinn
    /// counts per calling user id, which system-user tokens appear to share).
    pub failed_lookups: Vec<Instant>,
    /// Grant `jti`s seen, with the grant's `exp`, so reuse is refused while it could be valid.
    pub used_jtis: HashMap<String, i64>,
    /// Bumped by `POST /_sim/tokens/revoke`; tokens of older generations get 401.
    pub token_generation: u64,
    pub faults: Faults,
}

impl State {
    pub fn load(&mut self, world: World) {
        let faults = std::mem::take(&mut self.faults);
        let generation = self.token_generation;
        *self = State {
            faults,
            token_generation: generation,
            ..State::default()
        };
        for (i, f) in world.firms.iter().enumerate() {
            self.firms_by_org.insert(f.org_number.clone(), i);
        }
        for (i, c) in world.clients.iter().enumerate() {
            self.clients_by_party.insert(c.party_uuid, i);
            for r in &c.firm_roles {
                self.clients_by_firm
                    .entry(r.firm_org_number.clone())
                    .or_default()
                    .insert(i);
            }
        }
        for (i, p) in world.persons.iter().enumerate() {
            self.persons_by_nin
                .insert(p.national_identity_number.clone(), i);
            self.persons_by_party.insert(p.party_uuid, i);
        }
        for held in &world.held {
            let firm = self.firms_by_org.get(&held.firm_org_number);
            let firm = firm.map(|&i| world.firms[i].party_uuid);
            let (Some(firm), Some(role), Some((package, _))) =
                (firm, role(&held.role), package(&held.package))
            else {
                tracing::warn!(firm = %held.firm_org_number, "held delegation skipped: unknown firm, role or package");
                continue;
            };
            self.agents
                .entry(firm)
                .or_default()
                .entry(held.agent_party)
                .or_insert_with(|| (Uuid::new_v4(), Utc::now()));
            for client in &held.client_parties {
                self.delegations
                    .entry((firm, *client, held.agent_party))
                    .or_default()
                    .entry(role.code)
                    .or_default()
                    .insert(package);
            }
        }
        self.world = world;
    }

    pub fn firm(&self, org_number: &str) -> Option<&Firm> {
        self.firms_by_org
            .get(org_number)
            .map(|&i| &self.world.firms[i])
    }

    pub fn client(&self, party: Uuid) -> Option<&Client> {
        self.clients_by_party
            .get(&party)
            .map(|&i| &self.world.clients[i])
    }

    pub fn person(&self, party: Uuid) -> Option<&Person> {
        self.persons_by_party
            .get(&party)
            .map(|&i| &self.world.persons[i])
    }

    /// The role code the client gave the firm in ER, if any.
    /// Every role the client gave the firm, each with the packages it lets the firm delegate,
    /// in the world's order (as `GET clients` lists them).
    pub fn firm_roles(
        &self,
        client: &Client,
        firm_org: &str,
    ) -> Vec<(&'static Role, Vec<&'static str>)> {
        client
            .firm_roles
            .iter()
            .filter(|r| r.firm_org_number == firm_org)
            .filter_map(|r| {
                let role = role(&r.role)?;
                let packages = if r.packages.is_empty() {
                    role.packages.to_vec()
                } else {
                    r.packages
                        .iter()
                        .filter_map(|p| package(p).map(|(urn, _)| urn))
                        .collect()
                };
                Some((role, packages))
            })
            .collect()
    }

    pub fn delegation_rows(&self) -> Vec<DelegationRow> {
        let firm_org: HashMap<Uuid, &str> = self
            .world
            .firms
            .iter()
            .map(|f| (f.party_uuid, f.org_number.as_str()))
            .collect();
        let mut rows = Vec::new();
        for ((firm, client, agent), roles) in &self.delegations {
            for (role, packages) in roles.iter().filter(|(_, p)| !p.is_empty()) {
                rows.push(DelegationRow {
                    firm_org_number: firm_org.get(firm).copied().unwrap_or_default().to_owned(),
                    firm_party: *firm,
                    client_party: *client,
                    agent_party: *agent,
                    role: (*role).to_owned(),
                    packages: packages.iter().map(|p| (*p).to_owned()).collect(),
                });
            }
        }
        rows
    }

    /// Failed lookups in the last hour, after forgetting older ones.
    pub fn recent_failed_lookups(&mut self) -> usize {
        self.failed_lookups
            .retain(|t| t.elapsed() < crate::altinn::error::LOCKOUT);
        self.failed_lookups.len()
    }
}

/// Altinn compares only the first four letters of the last name, ignoring case and accents
/// (`StringExtensions.cs`).
pub fn last_names_match(registered: &str, given: &str) -> bool {
    let key = |name: &str| -> String {
        name.trim()
            .chars()
            .map(|c| match c.to_lowercase().next().unwrap_or(c) {
                'á' | 'à' | 'â' | 'ä' | 'ã' => 'a',
                'é' | 'è' | 'ê' | 'ë' => 'e',
                'í' | 'ì' | 'î' | 'ï' => 'i',
                'ó' | 'ò' | 'ô' | 'ö' | 'õ' => 'o',
                'ú' | 'ù' | 'û' | 'ü' => 'u',
                'ý' | 'ÿ' => 'y',
                'ç' => 'c',
                'ñ' => 'n',
                lower => lower,
            })
            .take(4)
            .collect()
    };
    key(registered) == key(given)
}

#[cfg(test)]
mod tests {
    use super::last_names_match;

    #[test]
    fn last_names_match_on_their_first_four_letters_without_accents() {
        assert!(last_names_match("Nordmann", "nordmannsen"));
        assert!(last_names_match("Sørensen", "SØRE"));
        assert!(last_names_match("Brække", "brÆk"));
        assert!(last_names_match("Hélène", "Hele"));
        assert!(!last_names_match("Nordmann", "Nor"));
        assert!(!last_names_match("Hansen", "Olsen"));
    }
}
