//! The AMQP `content_type` and `content_encoding` a message is labelled with.
//!
//! Plain strings, so that the contract does not depend on the broker client. A body we would
//! otherwise misread (XML, gzip, snappy) is refused by name before it is parsed, so the reason
//! says why rather than where the JSON parser gave up.

use super::{ContractError, redact_digits};

/// Accepts a JSON body: no content type or `application/json` (any case, any parameters), and
/// no encoding, `identity`, or `utf-8`. `utf-8` is a charset, not a content-encoding, but some
/// client libraries (kombu, for one) put it there for JSON; the body is UTF-8 either way. An
/// empty value counts as none, as some clients send unset properties so.
///
/// # Errors
/// [`ContractError::ContentType`] or [`ContractError::ContentEncoding`] (code `not-json`),
/// naming the value.
pub fn check_content(
    content_type: Option<&str>,
    content_encoding: Option<&str>,
) -> Result<(), ContractError> {
    if let Some(raw) = content_type.map(str::trim).filter(|t| !t.is_empty()) {
        let media_type = raw.split(';').next().unwrap_or_default().trim();
        if !media_type.eq_ignore_ascii_case("application/json") {
            return Err(ContractError::ContentType(label(raw)));
        }
    }
    if let Some(raw) = content_encoding.map(str::trim).filter(|e| !e.is_empty()) {
        let known = ["identity", "utf-8"]
            .iter()
            .any(|ok| raw.eq_ignore_ascii_case(ok));
        if !known {
            return Err(ContractError::ContentEncoding(label(raw)));
        }
    }
    Ok(())
}

/// Property values come from the sender: keep a short, printable prefix without quotes, and
/// no long digit runs.
fn label(raw: &str) -> String {
    let kept: String = raw
        .chars()
        .filter(|c| (c.is_ascii_graphic() || *c == ' ') && !matches!(c, '"' | '\\'))
        .take(64)
        .collect();
    redact_digits(&kept)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(t: Option<&str>, e: Option<&str>) -> Option<&'static str> {
        check_content(t, e).err().map(|e| e.code())
    }

    #[test]
    fn json_in_its_usual_labels_is_accepted() {
        for t in [
            None,
            Some(""),
            Some("application/json"),
            Some("Application/JSON"),
            Some("application/json; charset=utf-8"),
            Some(" application/json ;charset=UTF-8"),
        ] {
            for e in [
                None,
                Some(""),
                Some("identity"),
                Some("utf-8"),
                Some("UTF-8"),
            ] {
                assert_eq!(code(t, e), None, "{t:?} {e:?}");
            }
        }
    }

    #[test]
    fn other_labels_are_refused_by_name() {
        for (t, e, named) in [
            (Some("application/xml"), None, "application/xml"),
            (Some("text/plain"), None, "text/plain"),
            (Some("application/jsonx"), None, "application/jsonx"),
            (
                Some("application/vnd.api+json"),
                None,
                "application/vnd.api+json",
            ),
            (None, Some("gzip"), "gzip"),
            (None, Some("x-snappy"), "x-snappy"),
            (Some("application/json"), Some("deflate"), "deflate"),
            (None, Some("utf8"), "utf8"),
        ] {
            let err = check_content(t, e).unwrap_err();
            assert_eq!(err.code(), "not-json");
            let text = err.to_string();
            assert!(text.contains(&format!("{named:?}")), "{text}");
        }
    }

    #[test]
    fn labels_are_shortened_and_sanitised() {
        let long = format!("x-{}\"\n\\{}", "a".repeat(100), "1".repeat(11));
        let text = check_content(None, Some(&long)).unwrap_err().to_string();
        assert!(
            text.contains(&format!("\"x-{}\"", "a".repeat(62))),
            "{text}"
        );
        let digits = check_content(Some("12345678901/json"), None)
            .unwrap_err()
            .to_string();
        assert!(digits.contains("\"<redacted>/json\""), "{digits}");
    }
}
