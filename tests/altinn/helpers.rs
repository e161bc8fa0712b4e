//! Starts a simulator on 127.0.0.1:0 with a small world and builds clients for it.
//!
//! The RSA keys under `fixtures/` are test-only keys made for this suite; nothing trusts them.

use std::net::SocketAddr;
use std::time::Duration;

use altinn_sync::altinn::maskinporten::SigningKey;
use altinn_sync::altinn::{AltinnClient, Firm, ValidatedAltinnConfig};
use altinn_sync::sim::{self, Client, FirmRole, MaskinportenClient, Person, Simulator, World};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub const KEY_A: &str = include_str!("fixtures/test-only-maskinporten-key-a.pem");
pub const PUB_A: &str = include_str!("fixtures/test-only-maskinporten-key-a.pub.pem");
pub const KEY_B: &str = include_str!("fixtures/test-only-maskinporten-key-b.pem");
pub const PUB_B: &str = include_str!("fixtures/test-only-maskinporten-key-b.pub.pem");

pub const ALL_SCOPES: &str = "altinn:accessmanagement/authorizedparties \
                              altinn:clientdelegations.read altinn:clientdelegations.write";
pub const READ_SCOPES: &str =
    "altinn:accessmanagement/authorizedparties altinn:clientdelegations.read";

pub const FIRM_ORG: &str = "310000001";
/// A firm that has not approved the system user.
pub const UNAPPROVED_FIRM_ORG: &str = "310000002";
pub const NIN: &str = "01017012345";
pub const LAST_NAME: &str = "Nordmann";
pub const REGN: &str = "regnskapsforer";
pub const LONN: &str = "urn:altinn:accesspackage:regnskapsforer-lonn";
pub const UTEN_SIGN: &str = "urn:altinn:accesspackage:regnskapsforer-uten-signeringsrettighet";
pub const KLADM: &str = "urn:altinn:accesspackage:klientadministrator";

pub struct TestSim {
    pub sim: Simulator,
    pub addr: SocketAddr,
    pub firm: Firm,
    /// Has registered the firm as accountant (REGN) in ER.
    pub client: Uuid,
    /// Has not registered the firm.
    pub stranger: Uuid,
    pub person: Uuid,
    shutdown: CancellationToken,
}

impl Drop for TestSim {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub fn world(firm_party: Uuid, client: Uuid, stranger: Uuid, person: Uuid) -> World {
    let mp_client = |id: &str, kid: &str, pem: &str, scopes: &str| MaskinportenClient {
        client_id: id.into(),
        kid: kid.into(),
        public_key_pem: pem.into(),
        scopes: scopes.split(' ').map(str::to_owned).collect(),
    };
    let firm = |org: &str, party: Uuid, approved: bool| sim::Firm {
        org_number: org.into(),
        party_uuid: party,
        name: format!("Regnskap {org} AS"),
        system_user_approved: approved,
    };
    World {
        maskinporten_clients: vec![
            mp_client("test-client", "kid-a", PUB_A, ALL_SCOPES),
            mp_client("read-only-client", "kid-b", PUB_B, READ_SCOPES),
        ],
        maskinporten_issuer: None,
        firms: vec![
            firm(FIRM_ORG, firm_party, true),
            firm(UNAPPROVED_FIRM_ORG, Uuid::new_v4(), false),
        ],
        clients: vec![
            Client {
                party_uuid: client,
                org_number: "910000001".into(),
                name: "Bakeri AS".into(),
                firm_roles: vec![FirmRole {
                    firm_org_number: FIRM_ORG.into(),
                    role: REGN.into(),
                    packages: Vec::new(),
                }],
            },
            Client {
                party_uuid: stranger,
                org_number: "910000002".into(),
                name: "Fremmed AS".into(),
                firm_roles: Vec::new(),
            },
        ],
        persons: vec![Person {
            party_uuid: person,
            national_identity_number: NIN.into(),
            last_name: LAST_NAME.into(),
            name: "Kari Nordmann".into(),
        }],
        altinn_token_lifetime_secs: None,
        held: Vec::new(),
    }
}

/// A journaling simulator with the world above, served until the returned value drops.
pub async fn spawn() -> TestSim {
    let sim = Simulator::with_journal();
    let (firm_party, client, stranger, person) = (
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
    );
    sim.load(world(firm_party, client, stranger, person)).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    tokio::spawn(sim::serve(listener, sim.clone(), shutdown.clone()));
    let firm = Firm {
        org_number: FIRM_ORG.into(),
        party: firm_party,
    };
    TestSim {
        sim,
        addr,
        firm,
        client,
        stranger,
        person,
        shutdown,
    }
}

impl TestSim {
    pub fn config(&self, client_id: &str, kid: &str, scopes: &str) -> ValidatedAltinnConfig {
        ValidatedAltinnConfig {
            altinn_base_url: format!("http://{}", self.addr),
            maskinporten_url: format!("http://{}/", self.addr),
            client_id: client_id.into(),
            kid: kid.into(),
            key_file: "unused".into(),
            scopes: scopes.into(),
            request_timeout: Duration::from_secs(5),
            external_ref: None,
        }
    }

    /// The client as the worker would build it: key a, every scope.
    pub fn client(&self) -> AltinnClient {
        self.client_with(self.config("test-client", "kid-a", ALL_SCOPES), KEY_A)
    }

    pub fn client_with(&self, config: ValidatedAltinnConfig, pem: &str) -> AltinnClient {
        let key = SigningKey::from_pem(&config.kid, pem.as_bytes()).unwrap();
        AltinnClient::with_key(config, key).unwrap()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// How many requests the simulator answered for this method and path.
    pub fn calls(&self, method: &str, path: &str) -> usize {
        let journal = self.sim.journal();
        journal
            .iter()
            .filter(|e| e.method == method && e.path == path)
            .count()
    }
}
