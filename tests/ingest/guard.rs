//! Guard rails end to end: the mass-revoke guard (its threshold on both sides, approve,
//! reject) and the kill switch, against the simulator.

use std::collections::{HashMap, HashSet};
use std::ops::Range;

use altinn_sync::sync::{self, Dispatcher, Tripped};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::common::TestApp;
use crate::common::altinn::{ClientsAltinn, FIRM, MED, SIGNING};
use crate::common::steps::{app_with, flushed, kari_granted_on, publish, remove, sync_now};
use crate::common::workload::{FirmEvents, Model, Person, mixed_stream, org_number};

async fn staged_count(app: &TestApp) -> i64 {
    app.count("SELECT count(*) FROM outbox WHERE status = 'staged'")
        .await
}

async fn last_outcome(app: &TestApp) -> String {
    sqlx::query_scalar("SELECT outcome FROM commands ORDER BY received_at DESC LIMIT 1")
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

/// R revokes against H grants, none sent yet, of `e` employees on `c` clients.
fn figures(r: u64, h: u64, e: u64, c: u64) -> Tripped {
    Tripped {
        revokes: r,
        recent: 0,
        grants: h,
        employees: e,
        clients: c,
    }
}

#[test]
fn the_threshold_is_r_at_least_min_and_more_than_the_share_of_h() {
    // One person's revokes, counted (spread 1), and none that empties the firm.
    let trips = |r, h| sync::guard_trips(&figures(r, h, 1, 1), 10, 0.2, 1);
    // R = min − 1 and R = min, where the share does not decide.
    assert!(!trips(9, 20));
    assert!(trips(10, 20));
    // R = share × H exactly, and one more, where the minimum does not decide.
    assert!(!trips(20, 100));
    assert!(trips(21, 100));
    assert!(!trips(10, 50));
    assert!(trips(11, 50));
    // share × H in binary floating point is a hair off: 0.29 × 100 = 28.999999999999996.
    assert!(!sync::guard_trips(&figures(29, 100, 1, 1), 10, 0.29, 1));
    assert!(sync::guard_trips(&figures(30, 100, 1, 1), 10, 0.29, 1));
    // Revokes sent in the last 24 hours count in R, and in the access before them.
    let sliced = Tripped {
        recent: 9,
        ..figures(10, 11, 1, 1)
    };
    assert!(sync::guard_trips(&sliced, 10, 0.2, 1));
    assert!(!sync::guard_trips(&sliced, 10, 0.5, 1));
}

/// At the defaults: (R, H, E, C) and whether the guard trips.
fn at_defaults(r: u64, h: u64, e: u64, c: u64) -> bool {
    sync::guard_trips(
        &figures(r, h, e, c),
        sync::DEFAULT_REVOKE_GUARD_MIN,
        sync::DEFAULT_REVOKE_GUARD_SHARE,
        sync::DEFAULT_REVOKE_GUARD_SPREAD,
    )
}

#[test]
fn at_the_defaults_one_leaver_never_trips_and_an_emptied_or_halved_large_firm_always_does() {
    for h in [1, 2, 5, 20, 60, 100, 500, 5_000] {
        // One employee leaving with all of her clients, or a client leaving with all of its
        // accountants: even when they are every grant the firm has.
        for r in [1, h / 2, h] {
            assert!(
                !at_defaults(r.max(1), h, 1, r.max(1)),
                "one employee, {r} of {h}"
            );
            assert!(
                !at_defaults(r.max(1), h, r.max(1), 1),
                "one client, {r} of {h}"
            );
        }
    }
    // A firm of two or more employees and clients emptied, whatever its size.
    for (h, e, c) in [(2, 2, 2), (4, 2, 2), (6, 3, 2), (30, 5, 6), (500, 20, 25)] {
        assert!(at_defaults(h, h, e, c), "emptied: {h} grants of {e} x {c}");
        // One grant left: small firms' churn goes out.
        if h < 100 {
            assert!(!at_defaults(h - 1, h, e, c), "{} of {h}", h - 1);
        }
    }
    // More than half of a large firm's access, from 50 revokes up.
    assert!(at_defaults(51, 100, 3, 10));
    assert!(!at_defaults(50, 100, 3, 10), "exactly half");
    assert!(at_defaults(50, 99, 3, 10));
    assert!(!at_defaults(49, 97, 3, 10), "fewer than 50");
    assert!(at_defaults(600, 1_000, 12, 50));
    assert!(!at_defaults(400, 1_000, 12, 50), "less than half");
}

#[test]
fn at_the_defaults_a_week_of_mixed_churn_in_small_firms_trips_nothing() {
    // The issue's workload: assignments, removals, project-accountant moves and role changes
    // across 20 small firms, 36 changes each. Before them, every employee is an accountant with
    // signing rights on every client of the firm (as Altinn holds it); the guard judges each
    // firm's revokes (R, E, C) against those grants (H).
    let week = mixed_stream(16, 20, 4, 6, 720, 0.0, 1);
    let mut people: HashMap<String, Vec<Value>> = HashMap::new();
    let mut clients: HashMap<String, HashSet<String>> = HashMap::new();
    for (_, event) in &week {
        let (firm, data) = (
            event["firm"]["org_number"].as_str().unwrap(),
            &event["data"],
        );
        let known = people.entry(firm.to_owned()).or_default();
        if data["employee"].is_object() && !known.contains(&data["employee"]) {
            known.push(data["employee"].clone());
        }
        let client = data["client"]["org_number"].as_str();
        if let Some(org) = client.or(data["client_org_number"].as_str()) {
            clients
                .entry(firm.to_owned())
                .or_default()
                .insert(org.to_owned());
        }
    }
    let mut model = Model::default();
    for (firm, people) in &people {
        let events = FirmEvents::new(firm);
        for employee in people {
            let data = json!({"employee": employee, "roles": [SIGNING]});
            model.apply(&events.event_at("RoleChanged", 0, data));
            for client in &clients[firm] {
                let data = json!({"employee": employee, "client": {"org_number": client}});
                model.apply(&events.event_at("ClientAssigned", 0, data));
            }
        }
    }
    let before = model.desired();
    week.iter().for_each(|(_, e)| model.apply(e));
    let after = model.desired();
    let mut tripped = (0, 0);
    for firm in (0..20).map(org_number) {
        let mine = |g: &&(String, Uuid, String, String)| g.0 == firm;
        let revokes: Vec<_> = before.difference(&after).filter(mine).collect();
        let grants = before.iter().filter(mine).count() as u64;
        let employees = revokes.iter().map(|g| g.1).collect::<HashSet<_>>().len() as u64;
        let clients = revokes.iter().map(|g| &g.2).collect::<HashSet<_>>().len() as u64;
        let f = Tripped {
            revokes: revokes.len() as u64,
            recent: 0,
            grants,
            employees,
            clients,
        };
        tripped.0 += u32::from(sync::guard_trips(&f, 10, 0.2, 1));
        tripped.1 += u32::from(at_defaults(f.revokes, grants, employees, clients));
    }
    // The old defaults (10, 0.2, every revoke counted) staged most of them.
    eprintln!(
        "firms tripped of 20: old defaults {}, new {}",
        tripped.0, tripped.1
    );
    assert!(tripped.0 >= 10, "old defaults: {} of 20 firms", tripped.0);
    assert_eq!(tripped.1, 0, "new defaults: firms tripped");
}

/// H = `h` grants delivered, then `r` removed in one sync: how many revokes were staged, and
/// how many clients Kari still holds in Altinn. A grant on a new client joins the second sync.
async fn one_removal(h: usize, r: usize) -> (i64, usize) {
    let kari = Person::new(1);
    let altinn = ClientsAltinn::start(h + 1, &[&kari], &[]).await;
    let app = app_with(&altinn.settings, |_| {}).await;
    let mut events = kari_granted_on(&app, &altinn, &kari, h).await;
    let mut batch: Vec<Value> = altinn.clients[..r]
        .iter()
        .map(|(_, org)| events.client_removed(&kari, org))
        .collect();
    batch.push(events.client_assigned(&kari, &altinn.clients[h].1));
    let last = publish(&app, batch).await;
    sync_now(&app, last).await;
    flushed(&app, 2).await;
    let staged = staged_count(&app).await;
    let holds = altinn.holds(altinn.parties[0], MED).await;
    // The grant goes out whatever the guard decides.
    assert!(holds.contains(&h), "{holds:?}");
    let outcome = last_outcome(&app).await;
    assert_eq!(
        outcome.contains(&format!("{staged} revokes staged by the mass-revoke guard")),
        staged > 0,
        "{outcome}"
    );
    app.teardown().await;
    (staged, holds.len() - 1)
}

/// A firm at the guard's defaults where person `i` holds the package on the clients `on[i]`,
/// every grant delivered (H = the sum of the ranges' lengths). Then `removed` (person, client)
/// in one sync: how many revokes the guard staged. What it did not stage left Altinn.
async fn at_defaults_removing(on: &[Range<usize>], removed: &[(usize, usize)]) -> usize {
    let people: Vec<Person> = (1..=on.len() as u32).map(Person::new).collect();
    let clients = on.iter().map(|r| r.end).max().unwrap();
    let altinn = ClientsAltinn::start(clients, &people.iter().collect::<Vec<_>>(), &[]).await;
    let app = app_with(&altinn.settings, |f| {
        f.revoke_guard_min = sync::DEFAULT_REVOKE_GUARD_MIN;
        f.revoke_guard_share = sync::DEFAULT_REVOKE_GUARD_SHARE;
        f.revoke_guard_spread = sync::DEFAULT_REVOKE_GUARD_SPREAD;
    })
    .await;
    let mut events = FirmEvents::new(FIRM);
    let mut batch = Vec::new();
    for (person, range) in people.iter().zip(on) {
        batch.push(events.role_changed(person, &[SIGNING]));
        for (_, org) in &altinn.clients[range.clone()] {
            batch.push(events.client_assigned(person, org));
        }
    }
    let last = publish(&app, batch).await;
    sync_now(&app, last).await;
    flushed(&app, 1).await;
    let grants: usize = on.iter().map(ExactSizeIterator::len).sum();
    assert_eq!(
        app.count("SELECT count(*) FROM applied_grants").await,
        grants as i64
    );

    let batch = removed
        .iter()
        .map(|&(p, c)| events.client_removed(&people[p], &altinn.clients[c].1))
        .collect();
    let last = publish(&app, batch).await;
    sync_now(&app, last).await;
    flushed(&app, 2).await;
    let staged = staged_count(&app).await as usize;
    let (mut held, mut removed_held) = (0, 0);
    for (p, party) in altinn.parties.iter().enumerate() {
        let holds = altinn.holds(*party, MED).await;
        held += holds.len();
        removed_held += removed
            .iter()
            .filter(|&&(q, c)| q == p && holds.contains(&c))
            .count();
    }
    assert!(staged == 0 || staged == removed.len(), "{staged}");
    assert_eq!(
        removed_held, staged,
        "what is staged is still held, the rest is gone"
    );
    assert_eq!(held, grants - removed.len() + staged);
    app.teardown().await;
    staged
}

/// Every (person, client) of `people` on `clients`.
fn every(people: Range<usize>, clients: Range<usize>) -> Vec<(usize, usize)> {
    people
        .flat_map(|p| clients.clone().map(move |c| (p, c)))
        .collect()
}

#[tokio::test]
async fn at_the_defaults_one_employee_or_one_client_leaving_goes_out_whatever_the_firm_size() {
    // One employee of a small firm leaves: half its access.
    assert_eq!(
        at_defaults_removing(&[0..3, 0..3], &every(0..1, 0..3)).await,
        0
    );
    // One employee of a larger firm, who held 60 of its 70 grants.
    assert_eq!(
        at_defaults_removing(&[0..60, 0..10], &every(0..1, 0..60)).await,
        0
    );
    // One client leaves: 55 of 60 grants, of 55 employees.
    let mut on = vec![0..1; 50];
    on.extend(vec![0..2; 5]);
    assert_eq!(at_defaults_removing(&on, &every(0..55, 0..1)).await, 0);
}

#[tokio::test]
async fn at_the_defaults_an_emptied_firm_or_more_than_half_of_a_large_one_is_staged() {
    // Emptied: two employees on two clients, and five on six.
    assert_eq!(
        at_defaults_removing(&[0..2, 0..2], &every(0..2, 0..2)).await,
        4
    );
    assert_eq!(
        at_defaults_removing(&vec![0..6; 5], &every(0..5, 0..6)).await,
        30
    );
    // 60 of a firm's 100 grants, of six employees.
    assert_eq!(
        at_defaults_removing(&vec![0..10; 10], &every(0..6, 0..10)).await,
        60
    );
}

#[tokio::test]
async fn nine_revokes_of_twenty_grants_go_out() {
    assert_eq!(one_removal(20, 9).await, (0, 11));
}

#[tokio::test]
async fn ten_revokes_of_twenty_grants_are_staged_and_the_grant_goes_out() {
    assert_eq!(one_removal(20, 10).await, (10, 20));
}

#[tokio::test]
async fn ten_revokes_of_fifty_grants_are_exactly_the_share_and_go_out() {
    assert_eq!(one_removal(50, 10).await, (0, 40));
}

#[tokio::test]
async fn eleven_revokes_of_fifty_grants_are_staged() {
    assert_eq!(one_removal(50, 11).await, (11, 50));
}

#[tokio::test]
async fn revokes_sent_in_slices_count_towards_the_guard_for_24_hours() {
    let kari = Person::new(1);
    let altinn = ClientsAltinn::start(20, &[&kari], &[]).await;
    let app = app_with(&altinn.settings, |_| {}).await;
    let mut events = kari_granted_on(&app, &altinn, &kari, 20).await;
    remove(&app, &altinn, &mut events, &kari, 0..9, 2).await;
    assert_eq!(staged_count(&app).await, 0);
    assert_eq!(altinn.holds(altinn.parties[0], MED).await.len(), 11);
    // One more: R = 1 + the 9 sent without approval today = 10, against H = 11.
    remove(&app, &altinn, &mut events, &kari, 9..10, 3).await;
    assert_eq!(staged_count(&app).await, 1);
    assert_eq!(altinn.holds(altinn.parties[0], MED).await.len(), 11);
    let detail: String = sqlx::query_scalar(
        "SELECT detail FROM audit WHERE outcome = 'staged' AND actor = 'worker'",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert!(
        detail.contains("10 revokes (9 of them sent in the last 24 hours) of 1 employees on 10 clients, against 11 grants"),
        "{detail}"
    );
    app.teardown().await;
}

#[tokio::test]
async fn approved_revokes_go_out_and_are_not_staged_again() {
    let kari = Person::new(1);
    let altinn = ClientsAltinn::start(20, &[&kari], &[]).await;
    let mut app = app_with(&altinn.settings, |_| {}).await;
    let mut events = kari_granted_on(&app, &altinn, &kari, 20).await;
    remove(&app, &altinn, &mut events, &kari, 0..12, 2).await;
    let staged = sync::staged(&app.pool, FIRM).await.unwrap();
    assert_eq!(staged.len(), 12);
    assert!(
        staged
            .iter()
            .all(|s| s.package == MED && s.staged_at.is_some())
    );

    // The dry run shows them held back, and changes nothing.
    let preview = sync::preview(&app.pool, FIRM, &app.settings.flush)
        .await
        .unwrap();
    assert_eq!(
        (
            preview.grants.len(),
            preview.revokes.len(),
            preview.staged_revokes.len()
        ),
        (0, 0, 12)
    );
    assert_eq!(staged_count(&app).await, 12);

    // Two approved while no worker runs, then a plan before their delivery: the guard still
    // trips on the ten others, and leaves the two pending.
    app.stop_worker().await;
    let two = [staged[0].id, staged[1].id];
    let approved = sync::approve_staged(&app.pool, FIRM, Some(&two), "support-kari")
        .await
        .unwrap();
    assert_eq!(approved, 2);
    sqlx::query(
        r#"INSERT INTO commands (command_id, command_type, firm, requested_at, requested_by)
           VALUES (gen_random_uuid(), 'SyncNow', $1, now(), 'test')"#,
    )
    .bind(FIRM)
    .execute(&app.pool)
    .await
    .unwrap();
    assert_eq!(
        sync::handle_commands(&app.pool, &app.settings.flush)
            .await
            .unwrap(),
        1
    );
    let pool = app.pool.clone();
    let statuses = || async {
        sqlx::query_as::<_, (String, Option<String>)>(
            "SELECT status, approved_by FROM outbox WHERE id = ANY($1) ORDER BY id",
        )
        .bind(&two[..])
        .fetch_all(&pool)
        .await
        .unwrap()
    };
    assert_eq!(
        statuses().await,
        vec![("pending".to_owned(), Some("support-kari".to_owned())); 2]
    );
    assert_eq!(staged_count(&app).await, 10);
    app.start_worker().await;
    flushed(&app, 3).await;
    assert_eq!(
        statuses().await,
        vec![("delivered".to_owned(), Some("support-kari".to_owned())); 2]
    );
    assert_eq!(staged_count(&app).await, 10);
    assert_eq!(altinn.holds(altinn.parties[0], MED).await.len(), 18);

    // The rest, all at once.
    let approved = sync::approve_staged(&app.pool, FIRM, None, "support-ola")
        .await
        .unwrap();
    assert_eq!(approved, 10);
    flushed(&app, 3).await;
    assert_eq!(
        altinn.holds(altinn.parties[0], MED).await,
        (12..20).collect::<Vec<_>>()
    );
    let audit: Vec<(String, String)> = sqlx::query_as(
        r#"SELECT actor, outcome FROM audit WHERE outcome IN ('approved', 'delivered')
             AND action = 'revoke' ORDER BY actor, outcome"#,
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    let count = |actor: &str, outcome: &str| {
        audit
            .iter()
            .filter(|(a, o)| a == actor && o == outcome)
            .count()
    };
    assert_eq!(
        (
            count("support-kari", "approved"),
            count("support-ola", "approved"),
            count("worker", "delivered")
        ),
        (2, 10, 12)
    );
    app.teardown().await;
}

#[tokio::test]
async fn rejected_revokes_are_staged_again_and_a_grant_wanted_again_supersedes_its_revoke() {
    let kari = Person::new(1);
    let altinn = ClientsAltinn::start(20, &[&kari], &[]).await;
    let app = app_with(&altinn.settings, |_| {}).await;
    let mut events = kari_granted_on(&app, &altinn, &kari, 20).await;
    remove(&app, &altinn, &mut events, &kari, 0..12, 2).await;
    let staged = sync::staged(&app.pool, FIRM).await.unwrap();
    assert_eq!(staged.len(), 12);

    // The revokes of clients 0 and 1 rejected: superseded, with the actor in the audit.
    let two: Vec<i64> = staged
        .iter()
        .filter(|s| {
            altinn.clients[..2]
                .iter()
                .any(|(_, org)| *org == s.client_org_number)
        })
        .map(|s| s.id)
        .collect();
    let rejected = sync::reject_staged(&app.pool, FIRM, Some(&two), "support-kari")
        .await
        .unwrap();
    assert_eq!(rejected, 2);
    assert_eq!(staged_count(&app).await, 10);
    assert_eq!(
        app.count(
            "SELECT count(*) FROM audit WHERE outcome = 'rejected' AND actor = 'support-kari'"
        )
        .await,
        2
    );
    // AdminFlow still removes them: the next plan stages them again, and nothing goes out.
    sync_now(&app, events.next_sequence - 1).await;
    flushed(&app, 3).await;
    assert_eq!(staged_count(&app).await, 12);
    assert_eq!(altinn.holds(altinn.parties[0], MED).await.len(), 20);

    // Kari is given client 0 back: its staged revoke is superseded.
    let back = events.client_assigned(&kari, &altinn.clients[0].1);
    let last = publish(&app, vec![back]).await;
    sync_now(&app, last).await;
    flushed(&app, 4).await;
    assert_eq!(staged_count(&app).await, 11);
    let client_0: Vec<String> = sqlx::query_scalar(
        r#"SELECT status FROM outbox WHERE client_org_number = $1 AND action = 'revoke'
           ORDER BY id"#,
    )
    .bind(&altinn.clients[0].1)
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(client_0, ["superseded", "superseded"]);

    // All the rest rejected; nothing was ever revoked in Altinn.
    let rejected = sync::reject_staged(&app.pool, FIRM, None, "support-ola")
        .await
        .unwrap();
    assert_eq!(rejected, 11);
    assert_eq!(staged_count(&app).await, 0);
    assert_eq!(altinn.holds(altinn.parties[0], MED).await.len(), 20);
    app.teardown().await;
}

#[tokio::test]
async fn the_kill_switch_holds_revokes_and_idle_agent_removal_until_turned_back() {
    let kari = Person::new(1);
    let altinn = ClientsAltinn::start(4, &[&kari], &[]).await;
    let mut app = app_with(&altinn.settings, |f| f.revokes_enabled = false).await;
    let mut events = kari_granted_on(&app, &altinn, &kari, 3).await;

    // Removed from two clients and given a fourth, in one sync: the grant goes out; the
    // revokes, planned with it and due as early, are never claimed.
    let mut batch: Vec<Value> = altinn.clients[..2]
        .iter()
        .map(|(_, org)| events.client_removed(&kari, org))
        .collect();
    batch.push(events.client_assigned(&kari, &altinn.clients[3].1));
    let last = publish(&app, batch).await;
    sync_now(&app, last).await;
    let pool = app.pool.clone();
    app.wait_until("the grant delivered", || {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM outbox WHERE action = 'grant' AND status = 'delivered'",
            )
            .fetch_one(&pool)
            .await
            .unwrap()
                == 4
        }
    })
    .await;
    assert_eq!(altinn.holds(altinn.parties[0], MED).await, [0, 1, 2, 3]);
    let held: Vec<(String, i32, Option<String>)> =
        sqlx::query_as("SELECT status, attempts, leased_by FROM outbox WHERE action = 'revoke'")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(held, vec![("pending".to_owned(), 0, None); 2]);
    assert_eq!(
        sync::held_revokes(&app.pool, Some(FIRM), false)
            .await
            .unwrap(),
        2
    );
    assert_eq!(sync::held_revokes(&app.pool, None, false).await.unwrap(), 2);
    assert_eq!(
        sync::held_revokes(&app.pool, Some(FIRM), true)
            .await
            .unwrap(),
        0
    );

    // Turned back on: they go out.
    app.stop_worker().await;
    app.settings.flush.revokes_enabled = true;
    app.start_worker().await;
    flushed(&app, 2).await;
    assert_eq!(altinn.holds(altinn.parties[0], MED).await, [2, 3]);

    // Kari leaves the firm's last clients: an idle agent. Removing her is a revoke too.
    let batch = altinn.clients[2..]
        .iter()
        .map(|(_, org)| events.client_removed(&kari, org))
        .collect();
    let last = publish(&app, batch).await;
    sync_now(&app, last).await;
    flushed(&app, 3).await;
    let altinn_client = altinn.client();
    let firm = altinn_client.firm_party(FIRM).await.unwrap();
    let agents = || async {
        altinn_client
            .agents(&firm)
            .await
            .unwrap()
            .into_iter()
            .map(|a| a.agent.id)
            .collect::<Vec<_>>()
    };
    assert_eq!(agents().await, [altinn.parties[0]]);
    let dispatcher = |revokes_enabled| {
        let mut settings = app.settings.flush.clone();
        settings.remove_idle_agents = true;
        settings.revokes_enabled = revokes_enabled;
        Dispatcher::new(app.pool.clone(), altinn.client(), settings)
    };
    assert_eq!(dispatcher(false).remove_idle_agents().await.unwrap(), 0);
    assert_eq!(agents().await, [altinn.parties[0]]);
    assert_eq!(dispatcher(true).remove_idle_agents().await.unwrap(), 1);
    assert!(agents().await.is_empty());
    app.teardown().await;
}
