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

/// (firm, employee)
pub(super) type EmployeeKey = (String, Uuid);
/// (firm, employee, client)
pub(super) type PairKey = (String, Uuid, String);

#[derive(Default)]
pub(super) struct Facts<'a> {
    pub identities: HashMap<EmployeeKey, Newest<&'a Employee>>,
    pub roles: HashMap<EmployeeKey, Newest<&'a [String]>>,
    pub assignments: HashMap<PairKey, Newest<bool>>,
    /// (firm, client) to the client's name.
    pub clients: HashMap<(String, String), Newest<&'a str>>,
    /// (firm, client) to its project accountant, if any.
    pub slots: HashMap<(String, String), Newest<Option<Uuid>>>,
}

impl<'a> Facts<'a> {
    pub fn add(&mut self, e: &'a Event) {
        let firm = e.firm.as_str();
        let seq = e.sequence;
        match &e.body {
            EventBody::ClientAssigned { employee, client } => {
                self.identity(firm, seq, employee);
                self.client(firm, seq, client);
                let key = (firm.to_owned(), employee.id, client.org_number.to_string());
                keep_newest(&mut self.assignments, key, seq, true);
            }
            EventBody::ClientRemoved {
                employee_id,
                client_org_number,
            } => {
                let key = (firm.to_owned(), *employee_id, client_org_number.to_string());
                keep_newest(&mut self.assignments, key, seq, false);
            }
            EventBody::RoleChanged { employee, roles } => {
                self.identity(firm, seq, employee);
                keep_newest(
                    &mut self.roles,
                    (firm.to_owned(), employee.id),
                    seq,
                    roles.as_slice(),
                );
            }
            EventBody::ProjectAccountantChanged {
                client, employee, ..
            } => {
                self.client(firm, seq, client);
                if let Some(employee) = employee {
                    self.identity(firm, seq, employee);
                }
                let key = (firm.to_owned(), client.org_number.to_string());
                keep_newest(&mut self.slots, key, seq, employee.as_ref().map(|e| e.id));
            }
        }
    }

    fn identity(&mut self, firm: &str, seq: i64, employee: &'a Employee) {
        keep_newest(
            &mut self.identities,
            (firm.to_owned(), employee.id),
            seq,
            employee,
        );
    }

    fn client(&mut self, firm: &str, seq: i64, client: &'a Client) {
        let key = (firm.to_owned(), client.org_number.to_string());
        keep_newest(&mut self.clients, key, seq, client.name.as_str());
    }
}
