//! The admin API's parsing that is public on its own: the audit query, the tokens file, and the
//! identifiers' parsers compared with `src/reference.rs`. (`admin_api` reaches the private
//! glue, `firm_of`, `uuid_of`, the bodies and their selection, through the router.)
#![no_main]

use altinn_sync::admin::Tokens;
use altinn_sync::contract::{NationalIdentityNumber, OrgNumber, Rules};
use altinn_sync::ops::AuditQuery;
use altinn_sync_fuzz::alloc::Counting;
use altinn_sync_fuzz::{assert_no_digit_runs, reference};
use arbitrary::Arbitrary;
use axum::extract::Query;
use libfuzzer_sys::fuzz_target;

#[global_allocator]
static ALLOC: Counting = Counting;

#[derive(Arbitrary, Debug)]
enum Input {
    AuditQuery(String),
    TokensFile(String),
    OrgNumber(String),
    IdentityNumber(String, bool),
}

fn audit_query(raw: &str) {
    let Ok(uri) = format!("/audit?{raw}").parse::<axum::http::Uri>() else {
        return;
    };
    let Ok(Query(q)) = Query::<AuditQuery>::try_from_uri(&uri) else {
        return;
    };
    // Every field parsed comes from a pair of that name whose value reads the same.
    let pairs = form_pairs(uri.query().unwrap_or_default());
    let sent =
        |key: &str, same: &dyn Fn(&str) -> bool| pairs.iter().any(|(k, v)| k == key && same(v));
    if let Some(e) = q.employee {
        assert!(
            sent("employee", &|v| uuid::Uuid::parse_str(v).ok() == Some(e)),
            "{raw:?}"
        );
    }
    if let Some(c) = &q.client {
        assert!(sent("client", &|v| v == c), "{raw:?}");
    }
    for (key, n) in [("limit", q.limit), ("before", q.before)] {
        if let Some(n) = n {
            assert!(
                sent(key, &|v| v.parse::<i64>().ok() == Some(n)),
                "{key} {n} from {raw:?}"
            );
        }
    }
}

/// `application/x-www-form-urlencoded` pairs, decoded as the HTML standard says.
fn form_pairs(query: &str) -> Vec<(String, String)> {
    let decode = |s: &str| {
        let b = s.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            let hex = |c: u8| char::from(c).to_digit(16);
            match b[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < b.len() && hex(b[i + 1]).is_some() && hex(b[i + 2]).is_some() => {
                    out.push(
                        u8::try_from(hex(b[i + 1]).unwrap() * 16 + hex(b[i + 2]).unwrap()).unwrap(),
                    );
                    i += 2;
                }
                c => out.push(c),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn tokens_file(text: &str) {
    let Ok(tokens) = Tokens::parse(text) else {
        return;
    };
    let hashes: Vec<&str> = text
        .lines()
        .filter_map(|l| {
            l.split('#')
                .next()
                .unwrap_or_default()
                .split_whitespace()
                .nth(1)
        })
        .collect();
    assert_eq!(tokens.is_empty(), hashes.is_empty(), "{text:?}");
    // A token authenticates only when its SHA-256 is listed: here, the empty token's.
    let empty = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    assert_eq!(
        tokens.authenticate("").is_some(),
        hashes.contains(&empty),
        "{text:?}"
    );
}

fuzz_target!(|input: Input| match input {
    Input::AuditQuery(raw) => audit_query(&raw),
    Input::TokensFile(text) => tokens_file(&text),
    Input::OrgNumber(raw) => {
        let parsed = OrgNumber::parse("org", &raw);
        assert_eq!(parsed.is_ok(), reference::org_number_ok(&raw), "{raw:?}");
        match parsed {
            Ok(org) => assert_eq!(org.as_str(), raw),
            Err(e) => assert_no_digit_runs(&e.to_string()),
        }
    }
    Input::IdentityNumber(raw, synthetic) => {
        let rules = Rules {
            allow_synthetic_nin: synthetic,
            ..Rules::default()
        };
        let parsed = NationalIdentityNumber::parse(&raw, &rules);
        assert_eq!(
            parsed.is_ok(),
            reference::nin_ok(&raw, synthetic),
            "{raw:?}"
        );
        match parsed {
            Ok(n) => {
                assert_eq!(n.expose(), raw);
                assert!(!format!("{n:?}").contains(&raw), "Debug shows the number");
            }
            Err(e) => assert_no_digit_runs(&e.to_string()),
        }
    }
});
