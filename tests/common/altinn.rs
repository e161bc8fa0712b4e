//! The Altinn simulator as the tests meet it: served on 127.0.0.1:0 with a world, and reached
//! by the worker as the test Maskinporten client.

use std::path::Path;

use altinn_sync::altinn::{AltinnClient, AltinnSettings};
use altinn_sync::sim::{self, Client, FirmRole, MaskinportenClient, Person, Simulator, World};
use serde_json::json;
use tokio_util::sync::{CancellationToken, DropGuard};
use uuid::Uuid;

use super::workload::{self, org_number};

pub const FIRM: &str = "912345610";
pub const CLIENT: &str = "998877660";
/// A client that has not registered the firm as its accountant.
pub const STRANGER: &str = "998877679";
/// A firm whose system user Altinn has not approved.
pub const UNAPPROVED: &str = "987654325";
/// Another approved firm, which the demo client registered too.
pub const SECOND: &str = "912345637";
pub const KARI: &str = "3f2c8a1e-6b4d-4e7a-9c1f-0a5b7d2e8c41";
pub const SCOPES: &str = "altinn:accessmanagement/authorizedparties \
                      altinn:clientdelegations.read altinn:clientdelegations.write";
/// The package the demo's accountant with signing rights holds, as Altinn names it.
pub const MED_URN: &str = "urn:altinn:accesspackage:regnskapsforer-med-signeringsrettighet";
/// The same package as the worker and AdminFlow's role mapping name it.
pub const MED: &str = "regnskapsforer-med-signeringsrettighet";
pub const SIGNING: &str = "AccountantWithSigningRights";
const PUBLIC_KEY: &str = include_str!("../altinn/fixtures/test-only-maskinporten-key-a.pub.pem");

/// Serves `world` on 127.0.0.1:0; the settings reach it as the test Maskinporten client.
pub async fn serve(
    world: World,
    sim: Simulator,
    request_timeout_ms: u64,
) -> (AltinnSettings, DropGuard) {
    sim.load(world).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    tokio::spawn(sim::serve(listener, sim, shutdown.clone()));
    let key = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/altinn/fixtures/test-only-maskinporten-key-a.pem");
    let settings = AltinnSettings {
        altinn_base_url: Some(format!("http://{addr}")),
        maskinporten_url: Some(format!("http://{addr}/")),
        maskinporten_client_id: Some("test-client".into()),
        maskinporten_kid: Some("kid-a".into()),
        maskinporten_key_file: Some(key),
        maskinporten_scopes: Some(SCOPES.into()),
        altinn_request_timeout_ms: request_timeout_ms,
        maskinporten_systemuser_external_ref: None,
    };
    (settings, shutdown.drop_guard())
}

/// The test Maskinporten client, whose key signs the worker's grants.
pub fn maskinporten_client() -> MaskinportenClient {
    MaskinportenClient {
        client_id: "test-client".into(),
        kid: "kid-a".into(),
        public_key_pem: PUBLIC_KEY.into(),
        scopes: SCOPES.split(' ').map(str::to_owned).collect(),
    }
}

/// The simulator with the demo firm, its two clients and its two employees.
pub struct DemoAltinn {
    pub sim: Simulator,
    pub settings: AltinnSettings,
    pub client: Uuid,
    pub kari: Uuid,
    pub ola: Uuid,
    _shutdown: DropGuard,
}

/// The simulator on 127.0.0.1:0 with the demo firm, its two clients and its two employees.
impl DemoAltinn {
    /// Served on 127.0.0.1:0.
    pub async fn start() -> Self {
        let (client, stranger, kari, ola) = (
            Uuid::new_v4(),
            Uuid::new_v4(),
            Uuid::new_v4(),
            Uuid::new_v4(),
        );
        let person = |party, nin: &str, last: &str| Person {
            party_uuid: party,
            national_identity_number: nin.into(),
            last_name: last.into(),
            name: format!("Test {last}"),
        };
        let world = World {
            maskinporten_clients: vec![maskinporten_client()],
            maskinporten_issuer: None,
            firms: vec![
                sim::Firm {
                    org_number: FIRM.into(),
                    party_uuid: Uuid::new_v4(),
                    name: "Demo Regnskap AS".into(),
                    system_user_approved: true,
                },
                sim::Firm {
                    org_number: SECOND.into(),
                    party_uuid: Uuid::new_v4(),
                    name: "Andre Regnskap AS".into(),
                    system_user_approved: true,
                },
                sim::Firm {
                    org_number: UNAPPROVED.into(),
                    party_uuid: Uuid::new_v4(),
                    name: "Ikke Godkjent Regnskap AS".into(),
                    system_user_approved: false,
                },
            ],
            clients: vec![
                Client {
                    party_uuid: client,
                    org_number: CLIENT.into(),
                    name: "Fjordkraft Regnskap AS".into(),
                    firm_roles: vec![
                        FirmRole {
                            firm_org_number: FIRM.into(),
                            role: "regnskapsforer".into(),
                            packages: Vec::new(),
                        },
                        FirmRole {
                            firm_org_number: SECOND.into(),
                            role: "regnskapsforer".into(),
                            packages: Vec::new(),
                        },
                    ],
                },
                Client {
                    party_uuid: stranger,
                    org_number: STRANGER.into(),
                    name: "Fremmed AS".into(),
                    firm_roles: Vec::new(),
                },
            ],
            persons: vec![
                person(kari, "15038512363", "Nordmann"),
                person(ola, "02078545642", "Hansen"),
            ],
            altinn_token_lifetime_secs: None,
            held: Vec::new(),
        };
        let sim = Simulator::new();
        let (settings, _shutdown) = serve(world, sim.clone(), 5_000).await;
        Self {
            sim,
            settings,
            client,
            kari,
            ola,
            _shutdown,
        }
    }

    /// (agent, packages) for the demo client, as the simulator holds them.
    pub async fn delegations(&self) -> Vec<(Uuid, Vec<String>)> {
        let mut rows: Vec<(Uuid, Vec<String>)> = self
            .sim
            .delegations()
            .await
            .into_iter()
            .filter(|d| d.client_party == self.client && !d.packages.is_empty())
            .map(|d| (d.agent_party, d.packages))
            .collect();
        rows.sort();
        rows
    }
}

/// The simulator with the demo firm, `clients` clients that registered it as their accountant,
/// and `persons` (with the delegations in `held`, made by hand before the worker came).
pub struct ClientsAltinn {
    pub sim: Simulator,
    pub settings: AltinnSettings,
    /// (party, organisation number) of each client.
    pub clients: Vec<(Uuid, String)>,
    /// The party of each person, in the order given.
    pub parties: Vec<Uuid>,
    _shutdown: DropGuard,
}

impl ClientsAltinn {
    /// `held`: (person, package, clients) given by hand.
    pub async fn start(
        clients: usize,
        persons: &[&workload::Person],
        held: &[(usize, &str, &[usize])],
    ) -> Self {
        let clients: Vec<(Uuid, String)> = (0..clients)
            .map(|i| {
                (
                    Uuid::new_v4(),
                    org_number(1_500_000 + u32::try_from(i).unwrap()),
                )
            })
            .collect();
        let parties: Vec<Uuid> = persons.iter().map(|_| Uuid::new_v4()).collect();
        let world = World {
            maskinporten_clients: vec![maskinporten_client()],
            maskinporten_issuer: None,
            firms: vec![sim::Firm {
                org_number: FIRM.into(),
                party_uuid: Uuid::new_v4(),
                name: "Demo Regnskap AS".into(),
                system_user_approved: true,
            }],
            clients: clients
                .iter()
                .map(|(party, org)| Client {
                    party_uuid: *party,
                    org_number: org.clone(),
                    name: format!("Client {org} AS"),
                    firm_roles: vec![FirmRole {
                        firm_org_number: FIRM.into(),
                        role: "regnskapsforer".into(),
                        packages: Vec::new(),
                    }],
                })
                .collect(),
            persons: persons
                .iter()
                .zip(&parties)
                .map(|(p, party)| sim::Person {
                    party_uuid: *party,
                    national_identity_number: p.nin.clone(),
                    last_name: p.last_name.clone(),
                    name: format!("Test {}", p.last_name),
                })
                .collect(),
            altinn_token_lifetime_secs: None,
            // The simulator's bulk load of delegations made by hand.
            held: held
                .iter()
                .map(|(person, package, on)| {
                    let on: Vec<Uuid> = on.iter().map(|&c| clients[c].0).collect();
                    serde_json::from_value(json!({
                        "firmOrgNumber": FIRM, "agentParty": parties[*person],
                        "role": "regnskapsforer", "package": package, "clientParties": on
                    }))
                    .unwrap()
                })
                .collect(),
        };
        // Journaled, so a test can count the calls each change took.
        let sim = Simulator::with_journal();
        let (settings, _shutdown) = serve(world, sim.clone(), 5_000).await;
        Self {
            sim,
            settings,
            clients,
            parties,
            _shutdown,
        }
    }

    /// The clients (by index) on which the person `party` holds `package`.
    pub async fn holds(&self, party: Uuid, package: &str) -> Vec<usize> {
        let urn = format!("urn:altinn:accesspackage:{package}");
        let rows = self.sim.delegations().await;
        let mut on: Vec<usize> = self
            .clients
            .iter()
            .enumerate()
            .filter(|(_, (client, _))| {
                rows.iter().any(|d| {
                    d.agent_party == party && d.client_party == *client && d.packages.contains(&urn)
                })
            })
            .map(|(i, _)| i)
            .collect();
        on.sort_unstable();
        on
    }

    pub fn client(&self) -> AltinnClient {
        AltinnClient::new(self.settings.validate().unwrap().unwrap()).unwrap()
    }
}
