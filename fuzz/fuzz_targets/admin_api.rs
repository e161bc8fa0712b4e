//! The admin API's input parsing, through the router the worker serves (`src/admin.rs`):
//! path parameters (organisation number, UUIDs), the audit query, JSON bodies and the
//! Authorization header. Never panics and never answers 500; every error is problem+json whose
//! `status` is the response's; 401 asks for a bearer token; no answer echoes a token; and on
//! the organisation-only routes the answer is the one the rules (401, 400, 403) predict.
#![no_main]

use altinn_sync_fuzz::admin::{FIRM, percent_encode, world};
use altinn_sync_fuzz::reference;
use arbitrary::Arbitrary;
use axum::body::Body;
use axum::http::{Method, StatusCode, header};
use http_body_util::BodyExt as _;
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt as _;

#[derive(Arbitrary, Debug)]
enum Segment {
    Firm,
    Org([u8; 8]),
    Uuid([u8; 16], bool),
    Text(String),
    Bytes(Vec<u8>),
}

impl Segment {
    fn bytes(&self) -> Vec<u8> {
        match self {
            Self::Firm => FIRM.into(),
            Self::Org(d) => {
                let d = d.map(|x| x % 10);
                let s: String = d.iter().map(|x| char::from(b'0' + x)).collect();
                match reference::org_check_digit(&d) {
                    Some(k) => format!("{s}{k}").into(),
                    None => s.into(),
                }
            }
            Self::Uuid(b, upper) => {
                let s = uuid::Uuid::from_bytes(*b).to_string();
                if *upper { s.to_ascii_uppercase() } else { s }.into()
            }
            Self::Text(s) => s.clone().into(),
            Self::Bytes(b) => b.clone(),
        }
    }
}

#[derive(Arbitrary, Debug, Clone, Copy, PartialEq)]
enum Route {
    Status,
    Plan,
    Parked,
    Staged,
    SyncSummary,
    Explain,
    Sync,
    Retry,
    Approve,
    Reject,
    Audit,
    OpenApi,
}

#[derive(Arbitrary, Debug)]
enum Auth {
    None,
    All,
    Firm,
    Other(String),
}

#[derive(Arbitrary, Debug)]
enum Payload {
    Empty,
    Raw(Vec<u8>),
    Json {
        after_sequence: Option<i64>,
        id: Option<i64>,
        ids: Option<Vec<i64>>,
    },
    /// Just over the 16 KiB body limit.
    Large(u8),
}

#[derive(Arbitrary, Debug)]
enum AuditParam {
    Employee(Segment),
    Client(Segment),
    Limit(i64),
    Before(i64),
    Raw(String, Vec<u8>),
}

#[derive(Arbitrary, Debug)]
struct Input {
    route: Route,
    org: Segment,
    id: Segment,
    query: Vec<AuditParam>,
    payload: Payload,
    auth: Auth,
    /// Now and then the route's other method.
    wrong_method: bool,
}

fn path(input: &Input) -> String {
    let org = percent_encode(&input.org.bytes());
    let id = percent_encode(&input.id.bytes());
    let tail = match input.route {
        Route::OpenApi => return "/openapi.json".to_owned(),
        Route::Status => "status".to_owned(),
        Route::Plan => "plan".to_owned(),
        Route::Parked => "parked".to_owned(),
        Route::Staged => "staged".to_owned(),
        Route::SyncSummary => format!("syncs/{id}"),
        Route::Explain => format!("employees/{id}/explain"),
        Route::Sync => "sync".to_owned(),
        Route::Retry => "parked/retry".to_owned(),
        Route::Approve => "staged/approve".to_owned(),
        Route::Reject => "staged/reject".to_owned(),
        Route::Audit => format!("audit?{}", query(&input.query)),
    };
    format!("/v1/firms/{org}/{tail}")
}

fn query(params: &[AuditParam]) -> String {
    let pair =
        |k: &str, v: &[u8]| format!("{}={}", percent_encode(k.as_bytes()), percent_encode(v));
    params
        .iter()
        .map(|p| match p {
            AuditParam::Employee(s) => pair("employee", &s.bytes()),
            AuditParam::Client(s) => pair("client", &s.bytes()),
            AuditParam::Limit(n) => pair("limit", n.to_string().as_bytes()),
            AuditParam::Before(n) => pair("before", n.to_string().as_bytes()),
            AuditParam::Raw(k, v) => pair(k, v),
        })
        .collect::<Vec<_>>()
        .join("&")
}

fn body(payload: &Payload) -> Vec<u8> {
    match payload {
        Payload::Empty => Vec::new(),
        Payload::Raw(b) => b.clone(),
        Payload::Json {
            after_sequence,
            id,
            ids,
        } => {
            let mut o = serde_json::Map::new();
            after_sequence.map(|s| o.insert("after_sequence".into(), s.into()));
            id.map(|s| o.insert("id".into(), s.into()));
            ids.as_ref()
                .map(|s| o.insert("ids".into(), s.clone().into()));
            serde_json::to_vec(&o).unwrap()
        }
        Payload::Large(n) => vec![b' '; 16 * 1024 + 1 + usize::from(*n)],
    }
}

/// What an organisation-only GET must answer, by the rules the API documents.
fn predicted(input: &Input, token: Option<&str>) -> Option<StatusCode> {
    let org_only = matches!(
        input.route,
        Route::Status | Route::Plan | Route::Parked | Route::Staged
    );
    if !org_only || input.wrong_method {
        return None;
    }
    let org = input.org.bytes();
    let w = world();
    let scope_all = match token {
        Some(t) if t == w.all_token => true,
        Some(t) if t == w.firm_token => false,
        _ => return Some(StatusCode::UNAUTHORIZED),
    };
    let valid = std::str::from_utf8(&org).is_ok_and(reference::org_number_ok);
    Some(if !valid {
        StatusCode::BAD_REQUEST
    } else if scope_all || org == FIRM.as_bytes() {
        StatusCode::SERVICE_UNAVAILABLE // every check passed; no PostgreSQL here
    } else {
        StatusCode::FORBIDDEN
    })
}

type Answer = (StatusCode, header::HeaderMap, axum::body::Bytes);

/// Sends `input` to the router with this Authorization header; `None` when no request can be
/// built from it.
fn send(input: &Input, method: &Method, auth: Option<header::HeaderValue>) -> Option<Answer> {
    let mut request = axum::http::Request::builder()
        .method(method.clone())
        .uri(path(input));
    if let Some(v) = auth {
        request = request.header(header::AUTHORIZATION, v);
    }
    let request = request.body(Body::from(body(&input.payload))).ok()?;
    let w = world();
    Some(w.runtime.block_on(async {
        let response = w.router.clone().oneshot(request).await.unwrap();
        let (parts, body) = response.into_parts();
        (
            parts.status,
            parts.headers,
            body.collect().await.unwrap().to_bytes(),
        )
    }))
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// Whether the same request with a token of `len` letters `Q` instead gets it back.
fn stand_in_echoed(input: &Input, method: &Method, len: usize) -> bool {
    let stand_in = "Q".repeat(len);
    let auth = header::HeaderValue::from_str(&format!("Bearer {stand_in}")).ok();
    send(input, method, auth).is_some_and(|(_, _, bytes)| contains(&bytes, &stand_in))
}

fuzz_target!(|input: Input| {
    let w = world();
    let post = matches!(
        input.route,
        Route::Sync | Route::Retry | Route::Approve | Route::Reject
    );
    let method = if post != input.wrong_method {
        Method::POST
    } else {
        Method::GET
    };
    let token = match &input.auth {
        Auth::None => None,
        Auth::All => Some(w.all_token.clone()),
        Auth::Firm => Some(w.firm_token.clone()),
        Auth::Other(s) => Some(s.clone()),
    };
    let header_value = token
        .as_ref()
        .and_then(|t| header::HeaderValue::from_str(&format!("Bearer {t}")).ok());
    let sent_token = header_value.as_ref().and(token.as_deref());
    let Some((status, headers, bytes)) = send(&input, &method, header_value) else {
        return;
    };
    assert!(
        status.is_success()
            || status.is_client_error()
            || status == StatusCode::SERVICE_UNAVAILABLE,
        "answered {status}"
    );
    if let Some(expected) = predicted(&input, sent_token) {
        assert_eq!(status, expected, "{}", String::from_utf8_lossy(&bytes));
    }
    if let Some(t) = sent_token.map(str::trim).filter(|t| t.len() >= 8) {
        // A made-up token may be a phrase of the API's own (the fuzzer finds them): it is
        // echoed only if a stand-in of the same length sent instead is echoed too.
        let made_up = matches!(input.auth, Auth::Other(_));
        assert!(
            !contains(&bytes, t) || (made_up && !stand_in_echoed(&input, &method, t.len())),
            "the answer echoes the token"
        );
    }
    if input.route != Route::OpenApi {
        assert!(bytes.len() <= 64 * 1024, "a {} byte answer", bytes.len());
    }
    if status.is_success() {
        return;
    }
    assert_eq!(
        headers.get(header::CONTENT_TYPE).map(|v| v.as_bytes()),
        Some(&b"application/problem+json"[..]),
        "a {status} that is not problem+json: {}",
        String::from_utf8_lossy(&bytes)
    );
    let problem: serde_json::Value = serde_json::from_slice(&bytes).expect("a problem is JSON");
    assert_eq!(problem["status"], status.as_u16(), "{problem}");
    assert!(
        problem["title"].is_string() && problem["detail"].is_string(),
        "{problem}"
    );
    if status == StatusCode::UNAUTHORIZED {
        assert_eq!(
            headers.get(header::WWW_AUTHENTICATE).map(|v| v.as_bytes()),
            Some(&b"Bearer"[..])
        );
    }
});
