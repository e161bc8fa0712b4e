//! Structure-aware events for `event_structured`: each part is drawn from valid and near-valid
//! forms, and labelled with what the schema and the decoder should say about it, so the target
//! checks both directions: the decoder accepts exactly the messages that pass the schema and
//! the decoder-only rules (check digits, real dates, plain integers, routing key).

use arbitrary::{Result, Unstructured};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::reference;

const EVENT_TYPES: [&str; 4] = [
    "ClientAssigned",
    "ClientRemoved",
    "RoleChanged",
    "ProjectAccountantChanged",
];

/// What the schema and the decoder should say about a generated message.
#[derive(Debug, Clone, Copy)]
pub struct Verdict {
    pub schema: bool,
    decoder_only: bool,
    settled: bool,
}

impl Default for Verdict {
    fn default() -> Self {
        Self {
            schema: true,
            decoder_only: true,
            settled: true,
        }
    }
}

impl Verdict {
    fn schema_breaks(&mut self) {
        self.schema = false;
    }
    fn absorb(&mut self, part: Self) {
        self.schema &= part.schema;
        self.decoder_only &= part.decoder_only;
        self.settled &= part.settled;
    }
    fn decoder_breaks(&mut self) {
        self.decoder_only = false;
    }
    /// What the decoder should do, or `None` where the contract leaves it open.
    pub fn decoder(&self) -> Option<bool> {
        if !self.schema || !self.decoder_only {
            return Some(false);
        }
        self.settled.then_some(true)
    }
}

/// A delivery: routing key, message, and its verdict.
pub fn event(u: &mut Unstructured) -> Result<(String, Value, Verdict)> {
    let mut v = Verdict::default();
    let event_type = *u.choose(&EVENT_TYPES)?;
    let routing_key = match u.int_in_range(0..=9u8)? {
        0 => u.choose(&EVENT_TYPES)?.to_string(),
        1 => u.arbitrary::<String>()?,
        _ => event_type.to_owned(),
    };
    if routing_key != event_type {
        v.schema_breaks();
    }
    let data = match event_type {
        "ClientAssigned" => {
            let fields = vec![
                ("employee", employee(u, &mut v)?),
                ("client", client(u, &mut v)?),
            ];
            object(u, &mut v, fields, &["employee", "client"])?
        }
        "ClientRemoved" => {
            let fields = vec![
                ("employee_id", uuid(u, &mut v)?),
                ("client_org_number", org(u, &mut v)?),
            ];
            object(u, &mut v, fields, &["employee_id", "client_org_number"])?
        }
        "RoleChanged" => {
            let fields = vec![
                ("employee", employee(u, &mut v)?),
                ("roles", roles(u, &mut v)?),
            ];
            object(u, &mut v, fields, &["employee", "roles"])?
        }
        _ => {
            let previous = if u.ratio(1, 3)? {
                Value::Null
            } else {
                uuid(u, &mut v)?
            };
            // `employee` may be null, so an employee the generator wrote as null is valid here:
            // its parts' verdict counts only when it is an object.
            let employee = if u.ratio(1, 3)? {
                Value::Null
            } else {
                let mut inner = Verdict::default();
                let e = employee(u, &mut inner)?;
                if !e.is_null() {
                    v.absorb(inner);
                }
                e
            };
            let fields = vec![
                ("client", client(u, &mut v)?),
                ("previous_employee_id", previous),
                ("employee", employee),
            ];
            object(
                u,
                &mut v,
                fields,
                &["client", "previous_employee_id", "employee"],
            )?
        }
    };
    let firm_org = org(u, &mut v)?;
    let firm = object(u, &mut v, vec![("org_number", firm_org)], &["org_number"])?;
    let fields = vec![
        ("event_id", uuid(u, &mut v)?),
        ("event_type", Value::String(event_type.to_owned())),
        ("occurred_at", timestamp(u, &mut v)?),
        ("firm", firm),
        ("sequence", sequence(u, &mut v)?),
        ("data", data),
    ];
    let all = [
        "event_id",
        "event_type",
        "occurred_at",
        "firm",
        "sequence",
        "data",
    ];
    let envelope = object(u, &mut v, fields, &all)?;
    Ok((routing_key, envelope, v))
}

/// An object of `fields`, now and then with a field missing, an unknown one added, or written
/// as an array of its values or as null.
fn object(
    u: &mut Unstructured,
    v: &mut Verdict,
    fields: Vec<(&str, Value)>,
    required: &[&str],
) -> Result<Value> {
    let mut map = Map::new();
    let drop = if u.ratio(1, 16)? {
        Some(u.choose_index(fields.len())?)
    } else {
        None
    };
    for (i, (k, value)) in fields.into_iter().enumerate() {
        if drop == Some(i) {
            if required.contains(&k) {
                v.schema_breaks();
            }
            continue;
        }
        map.insert(k.to_owned(), value);
    }
    if u.ratio(1, 8)? {
        // Unknown fields are allowed everywhere and ignored.
        map.insert(
            format!("x-{}", u.arbitrary::<u8>()?),
            json!({ "extra": [1, "two", null] }),
        );
    }
    Ok(match u.int_in_range(0..=31u8)? {
        0 => {
            v.schema_breaks();
            Value::Array(map.into_iter().map(|(_, value)| value).collect())
        }
        1 => {
            v.schema_breaks();
            Value::Null
        }
        _ => Value::Object(map),
    })
}

fn employee(u: &mut Unstructured, v: &mut Verdict) -> Result<Value> {
    let fields = vec![
        ("id", uuid(u, v)?),
        ("national_identity_number", nin(u, v)?),
        ("last_name", text(u, v, 200)?),
    ];
    object(
        u,
        v,
        fields,
        &["id", "national_identity_number", "last_name"],
    )
}

fn client(u: &mut Unstructured, v: &mut Verdict) -> Result<Value> {
    let fields = vec![("org_number", org(u, v)?), ("name", text(u, v, 500)?)];
    object(u, v, fields, &["org_number", "name"])
}

fn roles(u: &mut Unstructured, v: &mut Verdict) -> Result<Value> {
    if u.ratio(1, 32)? {
        v.schema_breaks();
        return Ok(json!("PayrollAccountant"));
    }
    let n = u.int_in_range(0..=3u8)?;
    let mut roles = Vec::new();
    for _ in 0..n {
        roles.push(match u.int_in_range(0..=3u8)? {
            0 => json!("PayrollAccountant"),
            1 => json!("AccountantWithSigningRights"),
            _ => text(u, v, 100)?,
        });
    }
    Ok(Value::Array(roles))
}

fn digits<const N: usize>(u: &mut Unstructured) -> Result<[u8; N]> {
    let mut d = [0u8; N];
    for x in &mut d {
        *x = u.int_in_range(0..=9)?;
    }
    Ok(d)
}

fn string_of(d: &[u8]) -> String {
    d.iter().map(|x| char::from(b'0' + x)).collect()
}

/// A string labelled by the reference rules: `shape` is the schema's pattern, `full` adds the
/// decoder-only checks.
fn labelled(v: &mut Verdict, s: String, shape: bool, full: bool) -> Value {
    if !shape {
        v.schema_breaks();
    } else if !full {
        v.decoder_breaks();
    }
    Value::String(s)
}

fn org(u: &mut Unstructured, v: &mut Verdict) -> Result<Value> {
    let shaped = |s: &str| s.len() == 9 && s.bytes().all(|b| b.is_ascii_digit());
    Ok(match u.int_in_range(0..=15u8)? {
        0 => {
            v.schema_breaks();
            json!(912_345_610)
        }
        1 => {
            v.schema_breaks();
            Value::Null
        }
        2 => {
            let s = u.arbitrary::<String>()?;
            let (shape, full) = (shaped(&s), reference::org_number_ok(&s));
            labelled(v, s, shape, full)
        }
        3 => {
            let s = string_of(&digits::<9>(u)?);
            let full = reference::org_number_ok(&s);
            labelled(v, s, true, full)
        }
        4 => {
            let s = string_of(&digits::<8>(u)?);
            labelled(v, s, false, false)
        }
        _ => {
            let first8 = digits::<8>(u)?;
            match reference::org_check_digit(&first8) {
                Some(k) => Value::String(format!("{}{k}", string_of(&first8))),
                None => Value::String("912345610".to_owned()),
            }
        }
    })
}

fn nin(u: &mut Unstructured, v: &mut Verdict) -> Result<Value> {
    let shaped = |s: &str| s.len() == 11 && s.bytes().all(|b| b.is_ascii_digit());
    Ok(match u.int_in_range(0..=11u8)? {
        0 => {
            let s = u.arbitrary::<String>()?;
            let (shape, full) = (shaped(&s), reference::nin_ok(&s, false));
            labelled(v, s, shape, full)
        }
        1 => {
            let s = string_of(&digits::<11>(u)?);
            let full = reference::nin_ok(&s, false);
            labelled(v, s, true, full)
        }
        2 => labelled(v, string_of(&digits::<10>(u)?), false, false),
        _ => {
            // A plausible day (D-numbers now and then), month and both check digits; now and
            // then a synthetic test person's month, which production refuses.
            let mut d = digits::<9>(u)?;
            let day = u.int_in_range(1..=31u8)? + if u.ratio(1, 4)? { 40 } else { 0 };
            let month = u.int_in_range(1..=12u8)? + if u.ratio(1, 8)? { 80 } else { 0 };
            d[..4].copy_from_slice(&[day / 10, day % 10, month / 10, month % 10]);
            match reference::nin_with_checks(&d) {
                Some(s) => {
                    let full = reference::nin_ok(&s, false);
                    labelled(v, s, true, full)
                }
                None => json!("15038512363"),
            }
        }
    })
}

fn uuid(u: &mut Unstructured, v: &mut Verdict) -> Result<Value> {
    let id = Uuid::from_bytes(u.arbitrary()?);
    Ok(match u.int_in_range(0..=11u8)? {
        0 => json!(id.hyphenated().to_string().to_ascii_uppercase()),
        1 => labelled(v, id.braced().to_string(), false, false),
        2 => labelled(v, id.urn().to_string(), false, false),
        3 => labelled(v, id.simple().to_string(), false, false),
        4 => {
            let s = u.arbitrary::<String>()?;
            let ok = reference::uuid_ok(&s);
            labelled(v, s, ok, ok)
        }
        _ => json!(id.hyphenated().to_string()),
    })
}

fn two(n: u8) -> String {
    format!("{n:02}")
}

fn timestamp(u: &mut Unstructured, v: &mut Verdict) -> Result<Value> {
    let s = if u.ratio(1, 16)? {
        u.arbitrary::<String>()?
    } else {
        let careful = u.ratio(3, 4)?;
        let pick = |u: &mut Unstructured, ok: std::ops::RangeInclusive<u8>, wild: u8| {
            if careful {
                u.int_in_range(ok)
            } else {
                u.int_in_range(0..=wild)
            }
        };
        let year: u16 = u.int_in_range(0..=9999)?;
        let (month, day) = (pick(u, 1..=12, 99)?, pick(u, 1..=28, 99)?);
        let (hour, minute, second) = (
            pick(u, 0..=23, 99)?,
            pick(u, 0..=59, 99)?,
            pick(u, 0..=59, 99)?,
        );
        let fraction_digits = if u.ratio(1, 2)? {
            0
        } else {
            u.int_in_range(0..=12u8)?
        };
        let fraction: String = (0..fraction_digits)
            .map(|i| char::from(b'0' + i % 10))
            .collect();
        let separator = if careful || u.ratio(1, 2)? {
            'T'
        } else {
            *u.choose(&[' ', 't'])?
        };
        let offset = match u.int_in_range(0..=7u8)? {
            0 => format!(
                "+{}:{}",
                two(pick(u, 0..=23, 99)?),
                two(pick(u, 0..=59, 99)?)
            ),
            1 => format!(
                "-{}:{}",
                two(pick(u, 0..=23, 99)?),
                two(pick(u, 0..=59, 99)?)
            ),
            2 if !careful => (*u.choose(&["", "z", "+0100", "+01"])?).to_owned(),
            _ => "Z".to_owned(),
        };
        let dot = if fraction_digits > 0 || (!careful && u.ratio(1, 8)?) {
            "."
        } else {
            ""
        };
        format!(
            "{year:04}-{}-{}{separator}{}:{}:{}{dot}{fraction}{offset}",
            two(month),
            two(day),
            two(hour),
            two(minute),
            two(second)
        )
    };
    let shape = reference::timestamp_shape_ok(&s);
    let real = if shape {
        reference::timestamp_real(&s)
    } else {
        Some(false)
    };
    if real.is_none() {
        v.settled = false;
    }
    Ok(labelled(v, s, shape, real.unwrap_or(true)))
}

fn sequence(u: &mut Unstructured, v: &mut Verdict) -> Result<Value> {
    Ok(match u.int_in_range(0..=15u8)? {
        0 => {
            v.schema_breaks();
            json!(u.int_in_range(i64::MIN..=-1)?)
        }
        1 => {
            // JSON Schema counts 41.0 as an integer; the decoder wants it written plainly.
            v.decoder_breaks();
            json!(f64::from(u.int_in_range(0..=1_000_000u32)?))
        }
        2 => {
            v.schema_breaks();
            json!(u.int_in_range(0..=1_000u32)?.to_string())
        }
        3 => {
            v.schema_breaks();
            json!(u64::try_from(i64::MAX).unwrap() + u.int_in_range(1..=1000u64)?)
        }
        4 => json!(i64::MAX),
        _ => json!(u.int_in_range(0..=i64::MAX)?),
    })
}

fn text(u: &mut Unstructured, v: &mut Verdict, max: usize) -> Result<Value> {
    let s = match u.int_in_range(0..=9u8)? {
        0 => String::new(),
        1 => "Ø".repeat(max),
        2 => "x".repeat(max + 1),
        3 => (*u.choose(&["a\u{0}b", "tab\there", "next\u{85}line", "del\u{7f}"])?).to_owned(),
        4 | 5 => u.arbitrary::<String>()?,
        6 => "Bjørnstad & Sønner AS".to_owned(),
        _ => "Nordmann".to_owned(),
    };
    let ok = reference::text_ok(&s, max);
    Ok(labelled(v, s, ok, ok))
}
