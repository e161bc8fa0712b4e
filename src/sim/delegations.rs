//! The v1 enduser client-delegation endpoints and `authorizedparties`, with Altinn's rules.

use std::collections::HashMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Uri};
use chrono::Utc;
use uuid::Uuid;

use super::Error;
use super::problem::{lookup_lockout, validation, vld};
use super::simulator::Simulator;
use super::tokens::{Caller, authorize};
use super::world::{self, AGENT_ROLE_ID, MAX_FAILED_LOOKUPS, State as SimState};
use crate::altinn::wire::{
    AgentAccess, Assignment, AuthorizedParty, ClientAccess, CompactEntity, CompactPackage,
    CompactRole, Delegation, DelegationBatch, PageLinks, Paginated, PersonInput, RoleAccess,
    ValidationError,
};

pub const READ: &str = "altinn:clientdelegations.read";
pub const WRITE: &str = "altinn:clientdelegations.write";
pub const AUTHORIZED_PARTIES: &str = "altinn:accessmanagement/authorizedparties";

type Params = Query<HashMap<String, String>>;

/// The page the query asks for (`page`, from 1) of `data`, linking the next one; everything
/// in one page when `size` is 0, as Altinn does today.
fn page<T>(data: Vec<T>, size: usize, params: &Params, uri: &Uri) -> Paginated<T> {
    if size == 0 {
        return Paginated::single_page(data);
    }
    let number: usize = params
        .get("page")
        .and_then(|p| p.parse().ok())
        .unwrap_or(1)
        .max(1);
    let total = data.len();
    let data: Vec<T> = data
        .into_iter()
        .skip((number - 1).saturating_mul(size))
        .take(size)
        .collect();
    let next = (number.saturating_mul(size) < total).then(|| {
        let mut query: Vec<String> = uri
            .query()
            .unwrap_or_default()
            .split('&')
            .filter(|kv| !kv.is_empty() && !kv.starts_with("page="))
            .map(str::to_owned)
            .collect();
        query.push(format!("page={}", number + 1));
        format!("{}?{}", uri.path(), query.join("&"))
    });
    Paginated {
        links: PageLinks { next },
        data,
    }
}

/// A UUID query parameter; a missing or malformed `party` is 403 in Altinn, others 400.
fn uuid_param(params: &Params, name: &'static str) -> Result<Uuid, Error> {
    let value = params.get(name).and_then(|v| Uuid::parse_str(v).ok());
    match (value, name) {
        (Some(v), _) => Ok(v),
        (None, "party") => Err(Error::Forbidden("missing or invalid party")),
        (None, _) => Err(validation(vec![vld(
            "AM.VLD-00006",
            &format!("$QUERY/{name}"),
            "missing or invalid party id",
        )])),
    }
}

fn role_dto(role: &world::Role) -> CompactRole {
    CompactRole {
        id: role.id,
        code: Some(role.code.into()),
        urn: Some(role.urn.into()),
        legacy_urn: Some(role.legacy_urn.into()),
    }
}

fn package_dto(urn: &str) -> CompactPackage {
    let id = world::package(urn).map(|(_, id)| id).unwrap_or_default();
    CompactPackage {
        id,
        urn: Some(urn.into()),
        area_id: None,
    }
}

fn client_entity(client: &world::Client) -> CompactEntity {
    CompactEntity {
        id: client.party_uuid,
        name: Some(client.name.clone()),
        entity_type: Some("Organisasjon".into()),
        variant: Some("AS".into()),
        organization_identifier: Some(client.org_number.clone()),
        person_identifier: None,
        is_deleted: false,
    }
}

fn person_entity(person: &world::Person) -> CompactEntity {
    CompactEntity {
        id: person.party_uuid,
        name: Some(person.name.clone()),
        entity_type: Some("Person".into()),
        variant: None,
        organization_identifier: None,
        person_identifier: Some(person.national_identity_number.clone()),
        is_deleted: false,
    }
}

pub async fn authorized_parties(
    State(sim): State<Simulator>,
    headers: HeaderMap,
    params: Params,
    uri: Uri,
) -> Result<Json<Paginated<AuthorizedParty>>, Error> {
    let state = sim.inner.state.lock().await;
    let caller = authorize(&sim, &state, &headers, AUTHORIZED_PARTIES, None)?;
    let firm = state
        .firm(&caller.org_number)
        .ok_or(Error::Forbidden("unknown firm"))?;
    // Altinn's code answers a flat list, although its OpenAPI document says a list of lists.
    let parties = vec![AuthorizedParty {
        party_uuid: firm.party_uuid,
        name: Some(firm.name.clone()),
        organization_number: Some(firm.org_number.clone()),
        party_type: Some("Organization".into()),
        is_deleted: false,
    }];
    Ok(Json(page(parties, state.faults.page_size, &params, &uri)))
}

pub async fn clients(
    State(sim): State<Simulator>,
    headers: HeaderMap,
    params: Params,
    uri: Uri,
) -> Result<Json<Paginated<ClientAccess>>, Error> {
    let party = uuid_param(&params, "party")?;
    let state = sim.inner.state.lock().await;
    let caller = authorize(&sim, &state, &headers, READ, Some(party))?;
    let data = state
        .clients_by_firm
        .get(&caller.org_number)
        .into_iter()
        .flatten()
        .map(|&i| &state.world.clients[i])
        .filter_map(|c| {
            // One entry per role the client gave the firm.
            let access: Vec<RoleAccess> = state
                .firm_roles(c, &caller.org_number)
                .into_iter()
                .map(|(role, packages)| RoleAccess {
                    role: role_dto(role),
                    packages: packages.iter().map(|p| package_dto(p)).collect(),
                })
                .collect();
            (!access.is_empty()).then(|| ClientAccess {
                client: client_entity(c),
                access,
            })
        })
        .collect();
    Ok(Json(page(data, state.faults.page_size, &params, &uri)))
}

pub async fn agents(
    State(sim): State<Simulator>,
    headers: HeaderMap,
    params: Params,
    uri: Uri,
) -> Result<Json<Paginated<AgentAccess>>, Error> {
    let party = uuid_param(&params, "party")?;
    let state = sim.inner.state.lock().await;
    let caller = authorize(&sim, &state, &headers, READ, Some(party))?;
    let agent_role = CompactRole {
        id: AGENT_ROLE_ID,
        code: Some("agent".into()),
        urn: Some("urn:altinn:role:agent".into()),
        legacy_urn: None,
    };
    let data = state
        .agents
        .get(&caller.firm_party)
        .into_iter()
        .flatten()
        .filter_map(|(party, (_, added))| {
            Some(AgentAccess {
                agent: person_entity(state.person(*party)?),
                agent_added_at: Some(*added),
                access: vec![RoleAccess {
                    role: agent_role.clone(),
                    packages: Vec::new(),
                }],
            })
        })
        .collect();
    Ok(Json(page(data, state.faults.page_size, &params, &uri)))
}

pub async fn add_agent(
    State(sim): State<Simulator>,
    headers: HeaderMap,
    params: Params,
    body: Bytes,
) -> Result<Json<Assignment>, Error> {
    let party = uuid_param(&params, "party")?;
    let mut state = sim.inner.state.lock().await;
    let caller = authorize(&sim, &state, &headers, WRITE, Some(party))?;
    let person = if let Some(to) = params.get("to") {
        let to = Uuid::parse_str(to).ok();
        let known = to.filter(|to| {
            state
                .agents
                .get(&caller.firm_party)
                .is_some_and(|a| a.contains_key(to))
        });
        known.ok_or_else(|| {
            validation(vec![vld(
                "AM.VLD-00006",
                "$QUERY/to",
                "the person has no connection to the firm",
            )])
        })?
    } else {
        let input: PersonInput = serde_json::from_slice(&body)
            .map_err(|e| Error::BadRequest(format!("invalid PersonInput: {e}")))?;
        lookup_person(&mut state, &caller, &input)?
    };
    let agents = state.agents.entry(caller.firm_party).or_default();
    let (id, _) = *agents
        .entry(person)
        .or_insert_with(|| (Uuid::new_v4(), Utc::now()));
    Ok(Json(Assignment {
        id,
        role_id: AGENT_ROLE_ID,
        from_id: caller.firm_party,
        to_id: person,
    }))
}

/// Matches national identity number and last name, counting failures towards the lock-out.
fn lookup_person(
    state: &mut SimState,
    caller: &Caller,
    input: &PersonInput,
) -> Result<Uuid, Error> {
    // Altinn counts failures per calling user id, which system-user tokens appear not to carry:
    // every system user shares one count here.
    if state.recent_failed_lookups() >= MAX_FAILED_LOOKUPS {
        return Err(lookup_lockout());
    }
    let found = state
        .persons_by_nin
        .get(&input.person_identifier)
        .map(|&i| &state.world.persons[i])
        .filter(|p| world::last_names_match(&p.last_name, &input.last_name));
    match found {
        Some(person) => Ok(person.party_uuid),
        None => {
            let _ = caller;
            state.failed_lookups.push(std::time::Instant::now());
            Err(validation(vec![ValidationError {
                code: "AM.VLD-00034".into(),
                title: Some("Invalid external identifiers".into()),
                paths: vec!["/personIdentifier".into(), "/lastName".into()],
                detail: Some("The person identifier and last name do not match.".into()),
            }]))
        }
    }
}

pub async fn agent_packages(
    State(sim): State<Simulator>,
    headers: HeaderMap,
    params: Params,
    uri: Uri,
) -> Result<Json<Paginated<ClientAccess>>, Error> {
    let party = uuid_param(&params, "party")?;
    let to = uuid_param(&params, "to")?;
    let state = sim.inner.state.lock().await;
    let caller = authorize(&sim, &state, &headers, READ, Some(party))?;
    let data = state
        .delegations
        .range(
            (caller.firm_party, Uuid::nil(), Uuid::nil())
                ..=(caller.firm_party, Uuid::max(), Uuid::max()),
        )
        .filter(|((_, _, agent), _)| *agent == to)
        .filter_map(|((_, client, _), roles)| {
            let access: Vec<RoleAccess> = roles
                .iter()
                .filter(|(_, p)| !p.is_empty())
                .filter_map(|(code, packages)| {
                    let packages = packages.iter().map(|p| package_dto(p)).collect();
                    Some(RoleAccess {
                        role: role_dto(world::role(code)?),
                        packages,
                    })
                })
                .collect();
            let client = state.client(*client)?;
            (!access.is_empty()).then(|| ClientAccess {
                client: client_entity(client),
                access,
            })
        })
        .collect();
    Ok(Json(page(data, state.faults.page_size, &params, &uri)))
}

pub async fn delegate(
    State(sim): State<Simulator>,
    headers: HeaderMap,
    params: Params,
    Json(batch): Json<DelegationBatch>,
) -> Result<Json<Vec<Delegation>>, Error> {
    change_packages(sim, headers, params, batch, true).await
}

pub async fn revoke(
    State(sim): State<Simulator>,
    headers: HeaderMap,
    params: Params,
    Json(batch): Json<DelegationBatch>,
) -> Result<Json<Vec<Delegation>>, Error> {
    change_packages(sim, headers, params, batch, false).await
}

/// Validates the whole batch first; one invalid package rejects it all, as in Altinn.
async fn change_packages(
    sim: Simulator,
    headers: HeaderMap,
    params: Params,
    batch: DelegationBatch,
    add: bool,
) -> Result<Json<Vec<Delegation>>, Error> {
    let party = uuid_param(&params, "party")?;
    let (from, to) = (uuid_param(&params, "from")?, uuid_param(&params, "to")?);
    let mut state = sim.inner.state.lock().await;
    let caller = authorize(&sim, &state, &headers, WRITE, Some(party))?;
    let client = state
        .client(from)
        .ok_or_else(|| validation(vec![vld("AM.VLD-00006", "$QUERY/from", "unknown client")]))?;
    let firm_roles = state.firm_roles(client, &caller.org_number);
    let is_agent = state
        .agents
        .get(&caller.firm_party)
        .is_some_and(|a| a.contains_key(&to));
    if add && !is_agent {
        return Err(validation(vec![vld(
            "AM.VLD-00032",
            "$QUERY/to",
            "the person is not an agent of the firm",
        )]));
    }
    let changes = batch_changes(&batch, &firm_roles, add)?;
    let key = (caller.firm_party, from, to);
    let results = apply_changes(&mut state, key, changes, add);
    Ok(Json(results))
}

/// A package the batch names, valid for the role the client gave the firm.
type Change = (&'static world::Role, &'static str, Uuid);

/// Every package of the batch, or every reason one of them is invalid. Only adding needs the
/// role from the client; a revoke is checked against the packages the role itself allows.
fn batch_changes(
    batch: &DelegationBatch,
    firm_roles: &[(&'static world::Role, Vec<&'static str>)],
    add: bool,
) -> Result<Vec<Change>, Error> {
    let mut errors = Vec::new();
    let mut changes = Vec::new();
    for (i, value) in batch.values.iter().enumerate() {
        let Some(role) = world::role(&value.role) else {
            errors.push(vld(
                "AM.VLD-00029",
                &format!("/values[{i}]/role"),
                "unknown role",
            ));
            continue;
        };
        let given = firm_roles.iter().find(|(r, _)| r.code == role.code);
        if add && given.is_none() {
            errors.push(vld(
                "AM.VLD-00032",
                &format!("/values[{i}]/role"),
                "the client has not given the firm this role",
            ));
            continue;
        }
        let allowed = given.map_or(role.packages, |(_, packages)| packages.as_slice());
        for (j, name) in value.packages.iter().enumerate() {
            let path = format!("/values[{i}]/packages[{j}]");
            match world::package(name) {
                None => errors.push(vld("AM.VLD-00030", &path, "unknown package")),
                Some((urn, _)) if !allowed.contains(&urn) => errors.push(vld(
                    "AM.VLD-00026",
                    &path,
                    "the role does not give the firm this package",
                )),
                Some((urn, id)) => changes.push((role, urn, id)),
            }
        }
    }
    if errors.is_empty() {
        Ok(changes)
    } else {
        Err(validation(errors))
    }
}

/// Adds or removes each package on the (firm, client, agent) row, saying which ones changed.
fn apply_changes(
    state: &mut SimState,
    key: (Uuid, Uuid, Uuid),
    changes: Vec<Change>,
    add: bool,
) -> Vec<Delegation> {
    let (firm, from, to) = key;
    let mut results = Vec::with_capacity(changes.len());
    for (role, urn, id) in changes {
        let packages = state
            .delegations
            .entry(key)
            .or_default()
            .entry(role.code)
            .or_default();
        let changed = if add {
            packages.insert(urn)
        } else {
            packages.remove(urn)
        };
        results.push(Delegation {
            role_id: role.id,
            package_id: id,
            via_id: firm,
            from_id: from,
            to_id: to,
            changed,
        });
    }
    // The delegation row goes with its last package.
    if state
        .delegations
        .get(&key)
        .is_some_and(|roles| roles.values().all(|p| p.is_empty()))
    {
        state.delegations.remove(&key);
    }
    results
}

/// `DELETE agents?party&to&cascade`: 204, also when the person was no agent. Without
/// `cascade=true` Altinn refuses while the agent still holds packages from the firm.
pub async fn remove_agent(
    State(sim): State<Simulator>,
    headers: HeaderMap,
    params: Params,
) -> Result<axum::http::StatusCode, Error> {
    let party = uuid_param(&params, "party")?;
    let to = uuid_param(&params, "to")?;
    let cascade = params.get("cascade").is_some_and(|c| c == "true");
    let mut state = sim.inner.state.lock().await;
    let caller = authorize(&sim, &state, &headers, WRITE, Some(party))?;
    let holds = |key: &(Uuid, Uuid, Uuid)| key.0 == caller.firm_party && key.2 == to;
    if !cascade && state.delegations.keys().any(holds) {
        return Err(validation(vec![vld(
            "AM.VLD-00031",
            "$QUERY/to",
            "the agent still holds packages; remove them first or send cascade=true",
        )]));
    }
    state.delegations.retain(|key, _| !holds(key));
    if let Some(agents) = state.agents.get_mut(&caller.firm_party) {
        agents.remove(&to);
    }
    Ok(axum::http::StatusCode::NO_CONTENT)
}
