//! The newest value of each fact a batch carries: only that one is written.

use std::collections::HashMap;

use uuid::Uuid;

use crate::contract::{Client, Employee, Event, EventBody};

/// The newest value seen for one fact in this batch.
pub(super) struct Newest<T> {
    pub sequence: i64,
    pub value: T,
}

fn keep_newest<K: std::hash::Hash + Eq, T>(
    map: &mut HashMap<K, Newest<T>>,
    key: K,
    sequence: i64,
    value: T,
) {
    match map.get(&key) {
        Some(n) if n.sequence >= sequence => {}
        _ => {
            map.insert(key, Newest { sequence, value });
        }
    }
}

/// (firm, employee), borrowed from the batch: no copies per event.
pub(super) type EmployeeKey<'a> = (&'a str, Uuid);
/// (firm, employee, client)
pub(super) type PairKey<'a> = (&'a str, Uuid, &'a str);

#[derive(Default)]
pub(super) struct Facts<'a> {
    pub identities: HashMap<EmployeeKey<'a>, Newest<&'a Employee>>,
    pub roles: HashMap<EmployeeKey<'a>, Newest<&'a [String]>>,
    pub assignments: HashMap<PairKey<'a>, Newest<bool>>,
    /// (firm, client) to the client's name.
    pub clients: HashMap<(&'a str, &'a str), Newest<&'a str>>,
    /// (firm, client) to its project accountant, if any.
    pub slots: HashMap<(&'a str, &'a str), Newest<Option<Uuid>>>,
}

impl<'a> Facts<'a> {
    pub fn add(&mut self, e: &'a Event) {
        let firm = e.firm.as_str();
        let seq = e.sequence;
        match &e.body {
            EventBody::ClientAssigned { employee, client } => {
                self.identity(firm, seq, employee);
                self.client(firm, seq, client);
                let key = (firm, employee.id, client.org_number.as_str());
                keep_newest(&mut self.assignments, key, seq, true);
            }
            EventBody::ClientRemoved {
                employee_id,
                client_org_number,
            } => {
                let key = (firm, *employee_id, client_org_number.as_str());
                keep_newest(&mut self.assignments, key, seq, false);
            }
            EventBody::RoleChanged { employee, roles } => {
                self.identity(firm, seq, employee);
                keep_newest(&mut self.roles, (firm, employee.id), seq, roles.as_slice());
            }
            EventBody::ProjectAccountantChanged {
                client, employee, ..
            } => {
                self.client(firm, seq, client);
                if let Some(employee) = employee {
                    self.identity(firm, seq, employee);
                }
                let key = (firm, client.org_number.as_str());
                keep_newest(&mut self.slots, key, seq, employee.as_ref().map(|e| e.id));
            }
        }
    }

    fn identity(&mut self, firm: &'a str, seq: i64, employee: &'a Employee) {
        keep_newest(&mut self.identities, (firm, employee.id), seq, employee);
    }

    fn client(&mut self, firm: &'a str, seq: i64, client: &'a Client) {
        let key = (firm, client.org_number.as_str());
        keep_newest(&mut self.clients, key, seq, client.name.as_str());
    }
}
