//! The checks of what a caller sends: the organisation number, ids, bodies and the audit's
//! query. Each refusal is a 400 that says what was wrong; none quotes a long digit run.

use serde::Deserialize;
use serde::de::DeserializeOwned;
use uuid::Uuid;

use crate::admin::problem::Problem;
use crate::admin::tokens::{Access, Caller};
use crate::contract::OrgNumber;
use crate::ops::{self, AuditQuery};

/// Checks the organisation number (400), then the token's scope (403).
pub fn firm_of(caller: &Caller, org: &str) -> Result<String, Problem> {
    let org = OrgNumber::parse("org", org)
        .map_err(|e| Problem::bad_request(format!("{org:?} is not an organisation number: {e}")))?;
    if !caller.scope.allows(org.as_str()) {
        return Err(Problem::forbidden(org.as_str()));
    }
    Ok(org.to_string())
}

/// As [`firm_of`], then the token's access: a read-only token may not change anything (403).
pub fn writable_firm_of(caller: &Caller, org: &str) -> Result<String, Problem> {
    let firm = firm_of(caller, org)?;
    if caller.access != Access::Write {
        return Err(Problem::read_only());
    }
    Ok(firm)
}

/// A UUID in its hyphenated form, as the spec's `format: uuid` says.
pub fn uuid_of(what: &str, raw: &str) -> Result<Uuid, Problem> {
    Uuid::try_parse(raw)
        .ok()
        .filter(|_| raw.len() == 36)
        .ok_or_else(|| Problem::bad_request(format!("{what} {raw:?} is not a UUID")))
}

/// An optional JSON object: an empty body means none. `null`, arrays and other values are
/// refused, as the spec's `type: object` says (serde alone would take an array for a struct).
pub fn body_of<T: DeserializeOwned>(body: &[u8]) -> Result<Option<T>, Problem> {
    let Some(object) = object_of(body)? else {
        return Ok(None);
    };
    serde_json::from_value(serde_json::Value::Object(object))
        .map(Some)
        .map_err(|e| Problem::bad_request(format!("the body is not valid: {e}")))
}

fn object_of(body: &[u8]) -> Result<Option<serde_json::Map<String, serde_json::Value>>, Problem> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    match serde_json::from_slice(body) {
        Ok(serde_json::Value::Object(mut object)) => {
            object.values_mut().for_each(integral);
            Ok(Some(object))
        }
        Ok(_) => Err(Problem::bad_request(
            "the body must be a JSON object, or left out",
        )),
        Err(e) => Err(Problem::bad_request(format!("the body is not valid: {e}"))),
    }
}

/// JSON Schema's `integer` takes `5.0`, so the API does too: a whole number written as a float
/// becomes an integer. Only up to 2^53, where a float still holds the very number written; one
/// beyond stays a float and is refused.
fn integral(value: &mut serde_json::Value) {
    const EXACT: f64 = 9_007_199_254_740_992.0;
    match value {
        serde_json::Value::Number(n) if n.is_f64() => {
            let whole = n
                .as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() <= EXACT)
                .and_then(|f| format!("{f:.0}").parse::<i64>().ok());
            if let Some(whole) = whole {
                *value = whole.into();
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(integral),
        serde_json::Value::Object(fields) => fields.values_mut().for_each(integral),
        _ => {}
    }
}

/// Which staged revokes an approve or reject is about. Never all by default: an empty body
/// once approved every staged revoke, which is the one mistake the guard exists to stop.
#[derive(Debug, PartialEq, Eq)]
pub enum Selection {
    Ids(Vec<i64>),
    All,
}

impl Selection {
    /// `{"ids": [...]}` or `{"all": true}`, exactly one of them; `verb` names the refusal.
    pub fn of(body: &[u8], verb: &str) -> Result<Self, Problem> {
        let nothing = || {
            Problem::bad_request(format!(
                "nothing was {verb}: name the staged revokes with {{\"ids\": [...]}}, or send \
                 {{\"all\": true}} for every one"
            ))
        };
        let object = object_of(body)?.ok_or_else(nothing)?;
        let mut fields = object.into_iter();
        let (Some((key, value)), None) = (fields.next(), fields.next()) else {
            return Err(nothing());
        };
        match (key.as_str(), value) {
            ("all", serde_json::Value::Bool(true)) => Ok(Self::All),
            ("ids", ids @ serde_json::Value::Array(_)) => serde_json::from_value(ids)
                .map(Self::Ids)
                .map_err(|e| Problem::bad_request(format!("ids must be integers: {e}"))),
            _ => Err(nothing()),
        }
    }

    pub fn ids(&self) -> Option<&[i64]> {
        match self {
            Self::Ids(ids) => Some(ids),
            Self::All => None,
        }
    }
}

/// A page of the staged revokes or of the dry run.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// At most this many entries (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
    /// Entries after this one: the previous page's `next_after`.
    #[param(minimum = 0)]
    pub after: Option<i64>,
}

impl PageParams {
    pub fn checked(self) -> Result<ops::Page<i64>, Problem> {
        let limit = checked_limit(self.limit)?;
        if self.after.is_some_and(|a| a < 0) {
            return Err(Problem::bad_request("after must be 0 or more"));
        }
        Ok(ops::Page {
            limit,
            cursor: self.after,
        })
    }
}

/// A page of the parked changes.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ParkedParams {
    /// At most this many entries (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
    /// Entries parked before this one: the previous page's `next_before`.
    #[param(pattern = "^[0-9]{1,18}\\.[0-9]{1,18}$")]
    pub before: Option<String>,
}

impl ParkedParams {
    pub fn checked(self) -> Result<ops::Page<ops::ParkedCursor>, Problem> {
        let limit = checked_limit(self.limit)?;
        let cursor = match self.before.as_deref() {
            None => None,
            Some(raw) => Some(ops::ParkedCursor::parse(raw).ok_or_else(|| {
                Problem::bad_request("before must be a next_before of an earlier page")
            })?),
        };
        Ok(ops::Page { limit, cursor })
    }
}

fn checked_limit(limit: Option<i64>) -> Result<Option<i64>, Problem> {
    if limit.is_some_and(|l| !(1..=ops::PAGE_MAX).contains(&l)) {
        return Err(Problem::bad_request(format!(
            "limit must be between 1 and {}",
            ops::PAGE_MAX
        )));
    }
    Ok(limit)
}

/// The query of `uri` as `T`, or a 400 that says what is wrong with it.
pub fn query_of<T: DeserializeOwned>(uri: &axum::http::Uri) -> Result<T, Problem> {
    axum::extract::Query::<T>::try_from_uri(uri)
        .map(|q| q.0)
        .map_err(|e| Problem::bad_request(format!("bad query: {}", e.body_text())))
}

/// The audit's filters and paging, with the bounds the API enforces.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditParams {
    /// Only this employee's entries.
    pub employee: Option<Uuid>,
    /// Only this client's entries: an organisation number (nine digits, MOD11 checked).
    #[param(pattern = "^[0-9]{9}$", format = "organisation-number")]
    pub client: Option<String>,
    /// At most this many entries (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
    /// Entries older than this audit id (a `next_before`).
    #[param(minimum = 1)]
    pub before: Option<i64>,
}

impl AuditParams {
    pub fn checked(self) -> Result<AuditQuery, Problem> {
        if let Some(client) = &self.client {
            OrgNumber::parse("client", client).map_err(|e| {
                Problem::bad_request(format!(
                    "client {client:?} is not an organisation number: {e}"
                ))
            })?;
        }
        if self
            .limit
            .is_some_and(|l| !(1..=ops::AUDIT_PAGE_MAX).contains(&l))
        {
            return Err(Problem::bad_request(format!(
                "limit must be between 1 and {}",
                ops::AUDIT_PAGE_MAX
            )));
        }
        if self.before.is_some_and(|b| b < 1) {
            return Err(Problem::bad_request(
                "before must be an audit id, 1 or more",
            ));
        }
        Ok(AuditQuery {
            employee: self.employee,
            client: self.client,
            limit: self.limit,
            before: self.before,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Body {
        n: Option<i64>,
    }

    #[test]
    fn a_body_is_an_object_or_left_out() {
        assert_eq!(body_of::<Body>(b" \n").unwrap(), None);
        assert_eq!(body_of::<Body>(b"{}").unwrap(), Some(Body { n: None }));
        assert_eq!(
            body_of::<Body>(br#"{"n": 7.0}"#).unwrap(),
            Some(Body { n: Some(7) }),
            "a whole float is an integer"
        );
        for refused in [
            &b"null"[..],
            b"[5]",
            b"5",
            br#"{"n": 7.5}"#,
            br#"{"n": 1e300}"#,
            br#"{"m": 1}"#,
        ] {
            let problem = body_of::<Body>(refused).unwrap_err();
            assert_eq!(problem.status, 400, "{}", String::from_utf8_lossy(refused));
        }
    }

    #[test]
    fn a_selection_is_ids_or_all_true_and_nothing_else() {
        assert_eq!(
            Selection::of(br#"{"all": true}"#, "approved").unwrap(),
            Selection::All
        );
        assert_eq!(
            Selection::of(br#"{"ids": [3, 4.0]}"#, "approved").unwrap(),
            Selection::Ids(vec![3, 4])
        );
        assert_eq!(
            Selection::of(br#"{"ids": []}"#, "approved").unwrap().ids(),
            Some(&[][..]),
            "an empty list names no revoke"
        );
        for refused in [
            &b""[..],
            b"{}",
            b"null",
            br#"{"all": false}"#,
            br#"{"all": "true"}"#,
            br#"{"ids": null}"#,
            br#"{"ids": [1], "all": true}"#,
            br#"{"ids": ["1"]}"#,
        ] {
            let problem = Selection::of(refused, "rejected").unwrap_err();
            assert_eq!(problem.status, 400, "{}", String::from_utf8_lossy(refused));
        }
        let detail = Selection::of(b"", "rejected").unwrap_err().detail;
        assert!(detail.starts_with("nothing was rejected"), "{detail}");
    }
}
