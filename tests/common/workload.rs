//! AdminFlow-like event streams for tests and benchmarks, and an independent model of what
//! desired state they should produce.
//!
//! Shared by `tests/` and `benches/` through `#[path]`, so not every item is used by each.
#![allow(dead_code)]

use std::collections::{BTreeSet, HashMap, HashSet};

use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{RngExt, SeedableRng};
use serde_json::{Value, json};
use uuid::Uuid;

pub const ROLES: [&str; 4] = [
    "PayrollAccountant",
    "AccountantWithSigningRights",
    "AccountantWithoutSigningRights",
    "Receptionist",
];

pub fn package_for(role: &str) -> Option<&'static str> {
    match role {
        "PayrollAccountant" => Some("regnskapsforer-lonn"),
        "AccountantWithSigningRights" => Some("regnskapsforer-med-signeringsrettighet"),
        "AccountantWithoutSigningRights" => Some("regnskapsforer-uten-signeringsrettighet"),
        _ => None,
    }
}

fn mod11(digits: &[u32], weights: &[u32]) -> Option<u32> {
    let sum: u32 = digits.iter().zip(weights).map(|(d, w)| d * w).sum();
    match 11 - sum % 11 {
        11 => Some(0),
        10 => None,
        k => Some(k),
    }
}

/// The `n`th valid organisation number, from a base that keeps them distinct.
pub fn org_number(n: u32) -> String {
    assert!(n < 2_000_000, "org_number({n}) would not have nine digits");
    let mut base = 80_000_000 + n * 9;
    loop {
        let d: Vec<u32> = format!("{base:08}")
            .chars()
            .map(|c| c.to_digit(10).unwrap())
            .collect();
        if let Some(k) = mod11(&d, &[3, 2, 7, 6, 5, 4, 3, 2]) {
            return format!("{base:08}{k}");
        }
        base += 1;
    }
}

/// A valid fødselsnummer derived from `n`.
pub fn national_identity_number(n: u32) -> String {
    let day = 1 + n % 28;
    let month = 1 + (n / 28) % 12;
    let year = 50 + (n / 336) % 40;
    let mut individual = 100 + (n / 13_440) % 400;
    loop {
        let s = format!("{day:02}{month:02}{year:02}{individual:03}");
        let d: Vec<u32> = s.chars().map(|c| c.to_digit(10).unwrap()).collect();
        if let Some(k1) = mod11(&d, &[3, 7, 6, 1, 8, 9, 4, 5, 2]) {
            let mut d10 = d.clone();
            d10.push(k1);
            if let Some(k2) = mod11(&d10, &[5, 4, 3, 2, 7, 6, 5, 4, 3, 2]) {
                return format!("{s}{k1}{k2}");
            }
        }
        individual = 100 + (individual + 1 - 100) % 400;
    }
}

#[derive(Debug, Clone)]
pub struct Person {
    pub id: Uuid,
    pub nin: String,
    pub last_name: String,
}

impl Person {
    pub fn new(n: u32) -> Self {
        Self {
            id: Uuid::new_v4(),
            nin: national_identity_number(n),
            last_name: format!("Nordmann{n}"),
        }
    }

    pub fn json(&self) -> Value {
        json!({"id": self.id, "national_identity_number": self.nin, "last_name": self.last_name})
    }
}

/// Builds events for one firm with increasing sequence numbers.
pub struct FirmEvents {
    pub org: String,
    pub next_sequence: i64,
}

impl FirmEvents {
    pub fn new(org: impl Into<String>) -> Self {
        Self {
            org: org.into(),
            next_sequence: 1,
        }
    }

    /// An envelope with the next sequence number.
    pub fn event(&mut self, event_type: &str, data: Value) -> Value {
        let seq = self.next_sequence;
        self.next_sequence += 1;
        self.event_at(event_type, seq, data)
    }

    /// An envelope with an explicit sequence number.
    pub fn event_at(&self, event_type: &str, sequence: i64, data: Value) -> Value {
        json!({
            "event_id": Uuid::new_v4(),
            "event_type": event_type,
            "occurred_at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            "firm": {"org_number": self.org},
            "sequence": sequence,
            "data": data,
        })
    }

    pub fn client_assigned(&mut self, p: &Person, client: &str) -> Value {
        let data = json!({"employee": p.json(), "client": {"org_number": client, "name": format!("Client {client} AS")}});
        self.event("ClientAssigned", data)
    }

    pub fn client_removed(&mut self, p: &Person, client: &str) -> Value {
        self.event(
            "ClientRemoved",
            json!({"employee_id": p.id, "client_org_number": client}),
        )
    }

    pub fn role_changed(&mut self, p: &Person, roles: &[&str]) -> Value {
        self.event("RoleChanged", json!({"employee": p.json(), "roles": roles}))
    }

    pub fn project_accountant_changed(
        &mut self,
        client: &str,
        previous: Option<&Person>,
        new: Option<&Person>,
    ) -> Value {
        let data = json!({
            "client": {"org_number": client, "name": format!("Client {client} AS")},
            "previous_employee_id": previous.map(|p| p.id),
            "employee": new.map(Person::json),
        });
        self.event("ProjectAccountantChanged", data)
    }
}

/// A desired grant: (firm, employee, client, package).
pub type Grant = (String, Uuid, String, String);

/// An independent model of the worker's rules: sequence-guarded facts and the grants they imply.
#[derive(Default)]
pub struct Model {
    seen: HashSet<(String, String)>,
    roles: HashMap<(String, Uuid), (i64, Vec<String>)>,
    assignments: HashMap<(String, Uuid, String), (i64, bool)>,
    slots: HashMap<(String, String), (i64, Option<Uuid>)>,
}

impl Model {
    pub fn apply(&mut self, event: &Value) {
        let firm = event["firm"]["org_number"].as_str().unwrap().to_owned();
        let id = event["event_id"].as_str().unwrap().to_owned();
        if !self.seen.insert((firm.clone(), id)) {
            return;
        }
        let seq = event["sequence"].as_i64().unwrap();
        let d = &event["data"];
        let uuid = |v: &Value| Uuid::parse_str(v.as_str().unwrap()).unwrap();
        fn newer<K: std::hash::Hash + Eq, V>(m: &mut HashMap<K, (i64, V)>, k: K, seq: i64, v: V) {
            if m.get(&k).is_none_or(|(s, _)| *s < seq) {
                m.insert(k, (seq, v));
            }
        }
        match event["event_type"].as_str().unwrap() {
            "ClientAssigned" => {
                let k = (
                    firm,
                    uuid(&d["employee"]["id"]),
                    d["client"]["org_number"].as_str().unwrap().to_owned(),
                );
                newer(&mut self.assignments, k, seq, true);
            }
            "ClientRemoved" => {
                let k = (
                    firm,
                    uuid(&d["employee_id"]),
                    d["client_org_number"].as_str().unwrap().to_owned(),
                );
                newer(&mut self.assignments, k, seq, false);
            }
            "RoleChanged" => {
                let roles = d["roles"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| r.as_str().unwrap().to_owned())
                    .collect();
                newer(
                    &mut self.roles,
                    (firm, uuid(&d["employee"]["id"])),
                    seq,
                    roles,
                );
            }
            "ProjectAccountantChanged" => {
                let k = (firm, d["client"]["org_number"].as_str().unwrap().to_owned());
                let holder = (!d["employee"].is_null()).then(|| uuid(&d["employee"]["id"]));
                newer(&mut self.slots, k, seq, holder);
            }
            other => panic!("unknown event type {other}"),
        }
    }

    pub fn desired(&self) -> BTreeSet<Grant> {
        let mut works: HashSet<(String, Uuid, String)> = self
            .assignments
            .iter()
            .filter(|(_, (_, active))| *active)
            .map(|(k, _)| k.clone())
            .collect();
        for ((firm, client), (_, holder)) in &self.slots {
            if let Some(emp) = holder {
                works.insert((firm.clone(), *emp, client.clone()));
            }
        }
        let mut out = BTreeSet::new();
        for (firm, emp, client) in works {
            if let Some((_, roles)) = self.roles.get(&(firm.clone(), emp)) {
                for package in roles.iter().filter_map(|r| package_for(r)) {
                    out.insert((firm.clone(), emp, client.clone(), package.to_owned()));
                }
            }
        }
        out
    }
}

/// A realistic mix for many firms: 55% assignments, 30% removals, 10% project-accountant
/// moves and 5% role changes: `events` distinct events, with `duplicate_share` of them published twice and events shuffled within windows
/// of `reorder_window`. Returns (routing key, body) pairs in publish order.
pub fn mixed_stream(
    seed: u64,
    firms: u32,
    employees_per_firm: u32,
    clients_per_firm: u32,
    events: usize,
    duplicate_share: f64,
    reorder_window: usize,
) -> Vec<(String, Value)> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut firm_events: Vec<FirmEvents> =
        (0..firms).map(|f| FirmEvents::new(org_number(f))).collect();
    let people: Vec<Vec<Person>> = (0..firms)
        .map(|f| {
            (0..employees_per_firm)
                .map(|e| Person::new(f * employees_per_firm + e))
                .collect()
        })
        .collect();
    let clients: Vec<Vec<String>> = (0..firms)
        .map(|f| {
            (0..clients_per_firm)
                .map(|c| org_number(1_000_000 + f * clients_per_firm + c))
                .collect()
        })
        .collect();
    let mut out: Vec<Value> = Vec::with_capacity(events + events / 10);
    let mut originals = 0;
    while originals < events {
        originals += 1;
        let f = rng.random_range(0..firms as usize);
        let p = &people[f][rng.random_range(0..people[f].len())];
        let c = &clients[f][rng.random_range(0..clients[f].len())];
        let fe = &mut firm_events[f];
        // Day-to-day AdminFlow: mostly client work moving between people, some project-
        // accountant moves, and the occasional role change.
        let event = match rng.random_range(0..100) {
            0..=4 => {
                let n = rng.random_range(0..=2);
                let roles: Vec<&str> = ROLES.sample(&mut rng, n).copied().collect();
                fe.role_changed(p, &roles)
            }
            5..=59 => fe.client_assigned(p, c),
            60..=89 => fe.client_removed(p, c),
            _ => {
                let q = &people[f][rng.random_range(0..people[f].len())];
                let new = if rng.random_bool(0.9) { Some(q) } else { None };
                fe.project_accountant_changed(c, None, new)
            }
        };
        if rng.random_bool(duplicate_share) {
            out.push(event.clone());
        }
        out.push(event);
    }
    if reorder_window > 1 {
        for chunk in out.chunks_mut(reorder_window) {
            chunk.shuffle(&mut rng);
        }
    }
    out.into_iter()
        .map(|e| (e["event_type"].as_str().unwrap().to_owned(), e))
        .collect()
}
