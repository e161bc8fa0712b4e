//! What the dispatcher remembers of Altinn's parties: each firm's party, and each client's party
//! with the roles it gave the firm and the packages each role lets the firm delegate.
//!
//! Both change rarely and cost a call each, so they are cached per replica. A client missing
//! from the cache is looked up again; a refusal that a stale entry could explain (another
//! replica's change, a client that changed its roles) drops the firm's clients so the retry
//! reads them afresh.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use tokio::sync::{Mutex, OnceCell};
use uuid::Uuid;

use crate::altinn::wire::{ClientAccess, DelegationBatch, Permission};
use crate::altinn::{self, AltinnClient, Firm};

/// A client of the firm as Altinn lists it.
#[derive(Debug, Clone)]
pub(super) struct ClientParty {
    pub party: Uuid,
    /// (role code, the package URNs the role lets the firm delegate), in Altinn's order.
    roles: Vec<(String, Vec<String>)>,
}

impl ClientParty {
    fn from_access(c: ClientAccess) -> Option<(String, Self)> {
        let org = c.client.organization_identifier.clone()?;
        let roles = c
            .access
            .into_iter()
            .filter_map(|a| {
                let packages = a.packages.into_iter().filter_map(|p| p.urn).collect();
                Some((a.role.code?, packages))
            })
            .collect();
        Some((
            org,
            Self {
                party: c.client.id,
                roles,
            },
        ))
    }

    /// The delegation of `packages` (URNs), each under the first role whose packages include
    /// it: a client can give the firm several roles (`regnskapsforer` from the Register of
    /// Legal Entities and `rettighetshaver` for packages it delegated in Altinn, say), and
    /// naming another role is refused. Err: the packages no role includes.
    pub fn batch(&self, packages: &[String]) -> Result<DelegationBatch, Vec<String>> {
        let mut values: Vec<Permission> = Vec::new();
        let mut uncovered = Vec::new();
        for package in packages {
            let role = self
                .roles
                .iter()
                .find(|(_, allowed)| allowed.iter().any(|p| p == package));
            match role {
                Some((code, _)) => match values.iter_mut().find(|v| &v.role == code) {
                    Some(value) => value.packages.push(package.clone()),
                    None => values.push(Permission {
                        role: code.clone(),
                        packages: vec![package.clone()],
                    }),
                },
                None => uncovered.push(package.clone()),
            }
        }
        if uncovered.is_empty() {
            Ok(DelegationBatch { values })
        } else {
            Err(uncovered)
        }
    }

    /// The role codes, for explanations.
    pub fn role_codes(&self) -> Vec<&str> {
        self.roles.iter().map(|(code, _)| code.as_str()).collect()
    }
}

/// A firm's agents by identity number, read once.
type AgentList = Arc<OnceCell<HashMap<String, Uuid>>>;

#[derive(Default)]
pub(super) struct Parties {
    firms: Mutex<HashMap<String, Firm>>,
    /// Shared, not copied, with each delivery: a client's roles list many packages.
    clients: Mutex<HashMap<String, HashMap<String, Arc<ClientParty>>>>,
    /// The firm's agents by national identity number, from `GET agents` (never logged).
    agents: Mutex<HashMap<String, AgentList>>,
}

impl Parties {
    pub async fn firm(&self, altinn: &AltinnClient, org: &str) -> altinn::Result<Firm> {
        if let Some(f) = self.firms.lock().await.get(org) {
            return Ok(f.clone());
        }
        let firm = altinn.firm_party(org).await?;
        self.firms.lock().await.insert(org.to_owned(), firm.clone());
        Ok(firm)
    }

    /// The client as Altinn lists it for the firm, or `None` when it is not among the firm's
    /// clients (the client has not registered the firm in ER, or no longer does).
    pub async fn client(
        &self,
        altinn: &AltinnClient,
        firm: &Firm,
        client_org: &str,
    ) -> altinn::Result<Option<Arc<ClientParty>>> {
        if let Some(c) = self
            .clients
            .lock()
            .await
            .get(&firm.org_number)
            .and_then(|m| m.get(client_org))
        {
            return Ok(Some(Arc::clone(c)));
        }
        let by_org: HashMap<String, Arc<ClientParty>> = altinn
            .clients(firm)
            .await?
            .into_iter()
            .filter_map(ClientParty::from_access)
            .map(|(org, c)| (org, Arc::new(c)))
            .collect();
        let found = by_org.get(client_org).cloned();
        self.clients
            .lock()
            .await
            .insert(firm.org_number.clone(), by_org);
        Ok(found)
    }

    /// The agent party of the person with this identity number, if Altinn lists them among the
    /// firm's agents: such a person is used as they are, with no lookup that could fail and
    /// count towards Altinn's lock-out. The list is read once per firm (by the first caller,
    /// while the others wait for it without holding anything), and again after
    /// [`Self::forget_agents`]. `permits` is awaited only when the list must be read.
    pub async fn agent_by_identity<P>(
        &self,
        altinn: &AltinnClient,
        firm: &Firm,
        identity_number: &str,
        permits: impl Future<Output = P>,
    ) -> altinn::Result<Option<Uuid>> {
        let cell = self
            .agents
            .lock()
            .await
            .entry(firm.org_number.clone())
            .or_default()
            .clone();
        let agents = cell
            .get_or_try_init(|| async {
                let _permits = permits.await;
                let listed: HashMap<String, Uuid> = altinn
                    .agents(firm)
                    .await?
                    .into_iter()
                    .filter_map(|a| Some((a.agent.person_identifier?, a.agent.id)))
                    .collect();
                Ok::<_, altinn::Error>(listed)
            })
            .await?;
        Ok(agents.get(identity_number).copied())
    }

    /// Drops the firm's agent list; the next lookup reads it afresh.
    pub async fn forget_agents(&self, firm_org: &str) {
        self.agents.lock().await.remove(firm_org);
    }

    /// Drops what is known of the firm's clients; the next lookup reads them afresh.
    pub async fn forget_clients(&self, firm_org: &str) {
        self.clients.lock().await.remove(firm_org);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MED: &str = "urn:altinn:accesspackage:regnskapsforer-med-signeringsrettighet";
    const LONN: &str = "urn:altinn:accesspackage:regnskapsforer-lonn";

    fn client(roles: &[(&str, &[&str])]) -> ClientParty {
        ClientParty {
            party: Uuid::nil(),
            roles: roles
                .iter()
                .map(|(code, packages)| {
                    (
                        (*code).to_owned(),
                        packages.iter().map(|p| (*p).to_owned()).collect(),
                    )
                })
                .collect(),
        }
    }

    #[test]
    fn each_package_goes_under_a_role_that_includes_it() {
        let c = client(&[
            ("rettighetshaver", &[LONN]),
            ("regnskapsforer", &[MED, LONN]),
        ]);
        let batch = c.batch(&[MED.to_owned(), LONN.to_owned()]).unwrap();
        assert_eq!(
            batch.values,
            vec![
                Permission {
                    role: "regnskapsforer".into(),
                    packages: vec![MED.into()]
                },
                Permission {
                    role: "rettighetshaver".into(),
                    packages: vec![LONN.into()]
                },
            ]
        );
    }

    #[test]
    fn packages_no_role_includes_are_named() {
        let c = client(&[("rettighetshaver", &[LONN])]);
        assert_eq!(c.batch(&[MED.to_owned()]), Err(vec![MED.to_owned()]));
    }
}
