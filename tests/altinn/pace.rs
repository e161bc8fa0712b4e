//! The adaptive call limit against the simulator: it grows while Altinn answers, backs off on
//! a burst of 429s, and grows again once they stop.

use altinn_sync::altinn::{AltinnClient, Concurrency, Firm};
use altinn_sync::sim::Faults;
use futures_util::future::join_all;

use crate::helpers::spawn;

/// As many calls at once as the limit allows now, twice over; how many were refused.
async fn round(client: &AltinnClient, firm: &Firm) -> usize {
    let n = client.pace().current() * 2;
    join_all((0..n).map(|_| client.clients(firm)))
        .await
        .iter()
        .filter(|r| r.is_err())
        .count()
}

#[tokio::test]
async fn the_adaptive_limit_backs_off_on_a_burst_of_429s_and_grows_again_after_it() {
    let t = spawn().await;
    let client = t.client().with_concurrency(Concurrency::Adaptive {
        min: 2,
        initial: 4,
        max: 64,
    });
    client.firm_party(&t.firm.org_number).await.unwrap();
    // Answers take 50 ms, so a loaded machine's scheduling adds little to the latency signal.
    let answering = Faults {
        latency_ms: 50,
        ..Faults::default()
    };
    t.sim.set_faults(answering.clone()).await;

    for _ in 0..50 {
        assert_eq!(round(&client, &t.firm).await, 0);
        if client.pace().current() == 64 {
            break;
        }
    }
    let grown = client.pace().current();
    assert!(
        grown >= 32,
        "slow start grows the limit while Altinn keeps up: 4 → {grown}"
    );

    t.sim
        .set_faults(Faults {
            too_many_requests_share: 1.0,
            retry_after_secs: 1,
            ..answering.clone()
        })
        .await;
    let mut refused = 0;
    for _ in 0..1_000 {
        refused += round(&client, &t.firm).await;
        if client.pace().current() <= grown / 4 {
            break;
        }
    }
    let backed_off = client.pace().current();
    assert!(backed_off <= grown / 4, "{grown} → {backed_off}");
    assert!(backed_off >= 2, "never below the floor");
    assert!(refused > 0);

    t.sim.set_faults(answering).await;
    for _ in 0..1_000 {
        assert_eq!(round(&client, &t.firm).await, 0);
        if client.pace().current() > backed_off + 2 {
            break;
        }
    }
    assert!(
        client.pace().current() > backed_off + 2,
        "grows again once the 429s stop: {backed_off} → {}",
        client.pace().current()
    );
}
