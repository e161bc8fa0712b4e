//! The simulator's capacity (`/_sim/capacity`): a rate limit across access management, answered
//! 429 with `Retry-After`, and a latency that requests wait out side by side.

use std::time::{Duration, Instant};

use altinn_sync::sim::{Capacity, CapacityReport, SimArgs};
use clap::Parser;
use futures_util::future::join_all;
use reqwest::header::RETRY_AFTER;
use reqwest::{Method, StatusCode};

use crate::helpers::{TestSim, spawn};

const PARTIES: &str = "/accessmanagement/api/v1/enduser/authorizedparties";

/// Sets the capacity through the admin endpoint, as a benchmark would.
async fn put_capacity(t: &TestSim, http: &reqwest::Client, body: serde_json::Value) {
    let response = http
        .put(t.url("/_sim/capacity"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
}

async fn get_capacity(t: &TestSim, http: &reqwest::Client) -> CapacityReport {
    let response = http.get(t.url("/_sim/capacity")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

/// One answer: its status, its `Retry-After` in seconds, and its body.
struct Answer {
    status: StatusCode,
    retry_after: Option<u64>,
    body: Option<serde_json::Value>,
}

/// `n` requests sent at once. No token: the limit comes before the bearer check, so a request
/// it lets through is answered 401, one it turns away 429.
async fn burst(t: &TestSim, http: &reqwest::Client, path: &str, n: usize) -> Vec<Answer> {
    send_at_once(t, http, Method::GET, path, n).await
}

async fn send_at_once(
    t: &TestSim,
    http: &reqwest::Client,
    method: Method,
    path: &str,
    n: usize,
) -> Vec<Answer> {
    let requests = (0..n).map(|_| async {
        let request = http.request(method.clone(), t.url(path));
        let response = request.send().await.unwrap();
        let status = response.status();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .map(|v| v.to_str().unwrap().parse().unwrap());
        let body = response.json().await.ok();
        Answer {
            status,
            retry_after,
            body,
        }
    });
    join_all(requests).await
}

fn limited(answers: &[Answer]) -> usize {
    answers
        .iter()
        .filter(|a| a.status == StatusCode::TOO_MANY_REQUESTS)
        .count()
}

#[tokio::test]
async fn a_burst_over_the_limit_is_served_the_limit_and_the_rest_gets_429_with_retry_after() {
    const N: u32 = 50;
    let t = spawn().await;
    let http = reqwest::Client::new();
    put_capacity(&t, &http, serde_json::json!({ "rate_limit_per_s": N })).await;

    let started = Instant::now();
    let answers = burst(&t, &http, PARTIES, 3 * N as usize).await;
    let elapsed = started.elapsed();
    let report = get_capacity(&t, &http).await;

    let rate_limited = limited(&answers);
    let served = answers.len() - rate_limited;
    // The new rate starts with a full burst of N, then frees one request every 1/N s: at most
    // N * elapsed more (and one for the cell that frees as the burst starts).
    let upper = N as usize + (f64::from(N) * elapsed.as_secs_f64()).ceil() as usize + 1;
    assert!(
        (N as usize..=upper).contains(&served),
        "{served} served in {elapsed:?}, expected {N}..={upper}"
    );
    assert!(rate_limited > 0, "none of {} got 429", answers.len());
    for answer in answers
        .iter()
        .filter(|a| a.status != StatusCode::TOO_MANY_REQUESTS)
    {
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    }
    for answer in answers
        .iter()
        .filter(|a| a.status == StatusCode::TOO_MANY_REQUESTS)
    {
        assert!(answer.retry_after.is_some_and(|s| s >= 1));
        let body = answer.body.as_ref().expect("a problem body");
        assert_eq!(body["status"], 429);
        // Never Altinn's lookup lock-out, which the client would keep for an hour.
        assert!(body.get("code").is_none_or(serde_json::Value::is_null));
    }
    assert_eq!(report.served, served as u64);
    assert_eq!(report.rate_limited, rate_limited as u64);
}

#[tokio::test]
async fn capacity_set_at_run_time_takes_effect_and_is_reported_with_its_counters() {
    let t = spawn().await;
    let http = reqwest::Client::new();
    assert_eq!(get_capacity(&t, &http).await, CapacityReport::default());

    put_capacity(
        &t,
        &http,
        serde_json::json!({ "rate_limit_per_s": 1, "latency_ms": 300 }),
    )
    .await;
    let started = Instant::now();
    let answers = burst(&t, &http, PARTIES, 3).await;
    let elapsed = started.elapsed();
    let report = get_capacity(&t, &http).await;

    // A burst of one: the first is served after the latency, the others turned away at once.
    let rate_limited = limited(&answers);
    assert!(
        (1..=2).contains(&(3 - rate_limited)),
        "{rate_limited} of 3 limited in {elapsed:?}"
    );
    assert!(elapsed >= Duration::from_millis(300), "{elapsed:?}");
    assert_eq!(
        report,
        CapacityReport {
            rate_limit_per_s: 1,
            latency_ms: 300,
            served: 3 - rate_limited as u64,
            served_reads: 3 - rate_limited as u64,
            rate_limited: rate_limited as u64,
        }
    );

    // Maskinporten, the token exchange and the admin endpoints are never limited.
    let token = send_at_once(&t, &http, Method::POST, "/token", 3).await;
    let exchange = burst(&t, &http, "/authentication/api/v1/exchange/maskinporten", 3).await;
    // Refused for want of a grant or a token, but not throttled.
    let statuses = |answers: &[Answer]| answers.iter().map(|a| a.status).collect::<Vec<_>>();
    assert_eq!(statuses(&token), [StatusCode::UNSUPPORTED_MEDIA_TYPE; 3]);
    assert_eq!(statuses(&exchange), [StatusCode::UNAUTHORIZED; 3]);
    for _ in 0..3 {
        get_capacity(&t, &http).await;
    }
    let after = get_capacity(&t, &http).await;
    assert_eq!(
        (after.served, after.rate_limited),
        (report.served, report.rate_limited)
    );

    // Faults set later keep the rate limit, and their latency is the capacity's.
    t.sim
        .set_faults(altinn_sync::sim::Faults {
            latency_ms: 7,
            ..Default::default()
        })
        .await;
    let report = get_capacity(&t, &http).await;
    assert_eq!((report.rate_limit_per_s, report.latency_ms), (1, 7));
}

#[tokio::test]
async fn a_misspelt_capacity_is_refused_rather_than_taken_as_unlimited() {
    let t = spawn().await;
    let http = reqwest::Client::new();
    put_capacity(&t, &http, serde_json::json!({ "rate_limit_per_s": 5 })).await;

    let response = http
        .put(t.url("/_sim/capacity"))
        .json(&serde_json::json!({ "rateLimitPerS": 10 }))
        .send()
        .await
        .unwrap();

    assert!(response.status().is_client_error(), "{}", response.status());
    assert_eq!(get_capacity(&t, &http).await.rate_limit_per_s, 5);
}

#[tokio::test]
async fn with_limit_zero_nothing_gets_429() {
    let t = spawn().await;
    let http = reqwest::Client::new();
    put_capacity(&t, &http, serde_json::json!({ "rate_limit_per_s": 0 })).await;

    let answers = burst(&t, &http, PARTIES, 300).await;
    let report = get_capacity(&t, &http).await;

    assert_eq!(limited(&answers), 0);
    assert_eq!((report.served, report.rate_limited), (300, 0));
}

#[tokio::test]
async fn requests_wait_out_the_latency_side_by_side() {
    const LATENCY: Duration = Duration::from_millis(200);
    let t = spawn().await;
    let http = reqwest::Client::new();
    put_capacity(
        &t,
        &http,
        serde_json::json!({ "rate_limit_per_s": 10_000, "latency_ms": 200 }),
    )
    .await;

    let started = Instant::now();
    let answers = burst(&t, &http, PARTIES, 200).await;
    let elapsed = started.elapsed();

    assert_eq!(limited(&answers), 0);
    // One after the other they would take 40 s; side by side, one latency and the overhead of
    // 200 connections on a small machine, far less than ten latencies.
    assert!(elapsed >= LATENCY, "{elapsed:?}");
    assert!(elapsed < 10 * LATENCY, "{elapsed:?}");
}

#[test]
fn the_rate_limit_flag_and_the_latency_flag_become_the_capacity() {
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        sim: SimArgs,
    }

    let cli = Cli::try_parse_from(["sim", "--rate-limit", "500", "--latency-ms", "100"]).unwrap();
    let unlimited = Cli::try_parse_from(["sim"]).unwrap();

    assert_eq!(
        cli.sim.capacity(),
        Capacity {
            rate_limit_per_s: 500,
            latency_ms: 100,
        }
    );
    assert_eq!(cli.sim.faults().latency_ms, 100);
    assert_eq!(unlimited.sim.capacity(), Capacity::default());
}
