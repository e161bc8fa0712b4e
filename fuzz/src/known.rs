//! Defects the fuzzing found in `src/` and reported, not fixed yet. The targets let these
//! through, so the campaign and the CI smoke run keep looking for new ones; `FUZZ_STRICT=1`
//! makes them crashes again (to check a fix). Remove an entry, and add its reproducer to the
//! corpus, once `src/` is fixed. README.md "Known defects" describes each.

use std::sync::OnceLock;

fn strict() -> bool {
    static STRICT: OnceLock<bool> = OnceLock::new();
    *STRICT.get_or_init(|| std::env::var_os("FUZZ_STRICT").is_some_and(|v| v == "1"))
}

/// Which known defect an accepted body shows, if any.
pub fn accepted(body: &[u8]) -> Option<&'static str> {
    if strict() {
        return None;
    }
    // D1: serde skips unknown fields without checking their strings are UTF-8, so a body that
    // is not UTF-8 is accepted when the bad bytes sit in a field the decoder ignores.
    if std::str::from_utf8(body).is_err() {
        return Some("D1");
    }
    // D4: serde's derived `Deserialize` also reads a struct from a JSON array of its fields in
    // order, so `"firm": ["912345610"]` (or a whole envelope as an array) is accepted.
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let array_at = |v: &serde_json::Value, key: &str| v.get(key).is_some_and(|x| x.is_array());
    let data = v.get("data").unwrap_or(&serde_json::Value::Null);
    if v.is_array()
        || array_at(&v, "firm")
        || array_at(&v, "data")
        || array_at(data, "employee")
        || array_at(data, "client")
    {
        return Some("D4");
    }
    // D6: chrono reads any number of fractional digits; the schema allows at most nine.
    let long_fraction = ["occurred_at", "requested_at"].iter().any(|k| {
        v.get(k).and_then(|t| t.as_str()).is_some_and(|t| {
            t.split_once('.')
                .is_some_and(|(_, f)| f.bytes().take_while(u8::is_ascii_digit).count() > 9)
        })
    });
    if long_fraction {
        return Some("D6");
    }
    None
}

/// Which known defect lets an error text with `code` carry a long digit run, if any.
pub fn error_text(code: &str) -> Option<&'static str> {
    if strict() {
        return None;
    }
    // D2: `redact_type` keeps digits, so the type or routing key the sender wrote reaches
    // `unknown-type` and `routing-key-mismatch` texts (the dead-letter reason) with every
    // digit run intact, an identity number included.
    matches!(code, "unknown-type" | "routing-key-mismatch").then_some("D2")
}

/// Which known defect an admin API answer that is not problem+json shows, if any.
pub fn plain_answer(status: u16, content_type: Option<&[u8]>, body: &[u8]) -> Option<&'static str> {
    if strict() {
        return None;
    }
    // D3: a route called with another method gets axum's bare 405, without a body.
    if status == 405 && body.is_empty() {
        return Some("D3");
    }
    // D5: a path parameter that percent-decodes to bytes that are not UTF-8 gets axum's
    // plain-text 400 ("Invalid URL: Invalid UTF-8 in `org`"): `Path<String>` rejects it
    // before the handler, and nothing maps the rejection to a problem.
    if status == 400 && content_type.is_some_and(|t| t.starts_with(b"text/plain")) {
        return Some("D5");
    }
    None
}

/// Which known defect an accepted time shows, if any.
pub fn accepted_time(t: &chrono::DateTime<chrono::Utc>) -> Option<&'static str> {
    use chrono::Datelike as _;
    if strict() {
        return None;
    }
    // D7: `0000-01-01T00:30:00+01:00` is accepted, but in UTC it is in year -1 (and
    // `9999-12-31T23:30:00-01:00` in year 10000): the decoded time has no RFC 3339 form the
    // schema allows, and no four-digit year for whatever stores or sends it on.
    (!(0..=9999).contains(&t.year())).then_some("D7")
}
