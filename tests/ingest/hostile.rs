//! A hostile corpus (issue 16, step 4; the table is `docs/hostile-input.md`): every kind goes
//! through the real broker between good messages for other firms, and is dead-lettered with its
//! reason, refused by the broker, or, where it is valid after all, applied to its own firm alone.
//! Throughout, the worker keeps running, the good messages around each kind are applied, and
//! nothing else changes.
//!
//! Each kind aims at a firm of its own whose state (one employee, Kari, with a payroll role and
//! one client) is in place before the corpus is sent; the kind's message would assign her a
//! second client. So a dead-lettered kind leaves its firm with one grant, an applied one with
//! two, and any other firm touched would show.

use std::collections::HashMap;

use lapin::message::Delivery;
use lapin::types::{AMQPValue, LongString, ShortString};
use lapin::{BasicProperties, Confirmation};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::common::TestApp;
use crate::common::workload::{FirmEvents, Person, org_number};

const PAYROLL: &str = "regnskapsforer-lonn";
const LIMIT: usize = 256 * 1024;
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// What must become of a kind's message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Dead-lettered with this reason code.
    DeadLetter(&'static str),
    /// Dead-lettered with this reason code, and the reason names the second text (the content
    /// type or encoding the worker does not read), so that an operator knows why.
    DeadLetterNaming(&'static str, &'static str),
    /// Valid after all: applied to its own firm.
    Applied,
    /// No queue is bound for its routing key: the broker hands it back to the publisher.
    Unroutable,
}

use Outcome::{Applied, DeadLetter, DeadLetterNaming, Unroutable};

#[derive(Debug, Clone, Copy)]
enum Route {
    Events,
    Commands,
}

/// One message as published: any bytes, any routing key, any properties.
struct Msg {
    route: Route,
    key: String,
    body: Vec<u8>,
    props: BasicProperties,
}

impl Msg {
    /// `event` as AdminFlow would publish it, on the `ClientAssigned` key.
    fn event(event: &Value) -> Self {
        Self::raw("ClientAssigned", serde_json::to_vec(event).unwrap())
    }

    fn raw(key: &str, body: Vec<u8>) -> Self {
        Self {
            route: Route::Events,
            key: key.to_owned(),
            body,
            props: BasicProperties::default()
                .with_content_type("application/json".into())
                .with_delivery_mode(2),
        }
    }

    fn command(key: &str, command: &Value) -> Self {
        Self {
            route: Route::Commands,
            ..Self::raw(key, serde_json::to_vec(command).unwrap())
        }
    }

    fn key(mut self, key: &str) -> Self {
        self.key = key.to_owned();
        self
    }

    fn props(mut self, f: impl FnOnce(BasicProperties) -> BasicProperties) -> Self {
        self.props = f(self.props);
        self
    }

    fn header(self, name: &str, value: AMQPValue) -> Self {
        self.props(|p| {
            let mut headers = p.headers().clone().unwrap_or_default();
            headers.insert(ShortString::from(name), value);
            p.with_headers(headers)
        })
    }

    fn traceparent(self, value: &str) -> Self {
        self.header("traceparent", AMQPValue::LongString(value.into()))
    }

    fn one(self) -> Vec<Self> {
        vec![self]
    }
}

/// The firm a kind aims at, with its employee and the client the kind's message would add.
struct Target {
    firm: FirmEvents,
    kari: Person,
    client: String,
}

impl Target {
    /// The well-formed message every kind starts from.
    fn event(&mut self) -> Value {
        let client = self.client.clone();
        self.firm.client_assigned(&self.kari, &client)
    }

    /// The base message with the JSON at `pointer` replaced.
    fn with(&mut self, pointer: &str, value: Value) -> Value {
        let mut event = self.event();
        *event.pointer_mut(pointer).expect("the pointer exists") = value;
        event
    }

    /// The base message with the text at `pointer` replaced by `raw`, byte for byte: for what
    /// `serde_json` would never write (NaN, exponents, invalid UTF-8, duplicate keys).
    fn raw_at(&mut self, pointer: &str, raw: &[u8]) -> Msg {
        const HOLE: &str = "\"@@hostile@@\"";
        let event = self.with(pointer, json!("@@hostile@@"));
        let text = serde_json::to_vec(&event).unwrap();
        let at = find(&text, HOLE.as_bytes()).expect("the placeholder is in the text");
        let mut body = text[..at].to_vec();
        body.extend_from_slice(raw);
        body.extend_from_slice(&text[at + HOLE.len()..]);
        Msg::raw("ClientAssigned", body)
    }

    /// The base message with its organisation number at `pointer` in other digits.
    fn digits_at(&mut self, pointer: &str, zero: char) -> Value {
        let event = self.event();
        let org = event.pointer(pointer).unwrap().as_str().unwrap().to_owned();
        self.with(pointer, json!(other_digits(&org, zero)))
    }

    fn sync_now(&self) -> Value {
        json!({
            "command_id": Uuid::new_v4(),
            "command_type": "SyncNow",
            "requested_at": "2026-03-15T11:00:00Z",
            "firm": {"org_number": self.firm.org},
        })
    }
}

struct Kind {
    name: &'static str,
    outcome: Outcome,
    build: fn(&mut Target) -> Vec<Msg>,
}

fn kind(name: &'static str, outcome: Outcome, build: fn(&mut Target) -> Vec<Msg>) -> Kind {
    Kind {
        name,
        outcome,
        build,
    }
}

// ---------------------------------------------------------------------------------------------
// The corpus, in groups of one test each.

/// Bytes that are not JSON, or not UTF-8, or JSON of the wrong shape.
fn bytes_and_structure() -> Vec<Kind> {
    vec![
        kind("invalid-utf8", DeadLetter("not-json"), |t| {
            t.raw_at("/data/employee/last_name", b"\"Nord\xff\xfemann\"")
                .one()
        }),
        kind("overlong-utf8", DeadLetter("not-json"), |t| {
            t.raw_at("/data/employee/last_name", b"\"Nord\xc0\xafmann\"")
                .one()
        }),
        kind("lone-surrogate-escape", DeadLetter("not-json"), |t| {
            t.raw_at("/data/employee/last_name", br#""Nord\ud800mann""#)
                .one()
        }),
        kind("utf8-bom", DeadLetter("not-json"), |t| {
            let mut body = b"\xef\xbb\xbf".to_vec();
            body.extend(serde_json::to_vec(&t.event()).unwrap());
            Msg::raw("ClientAssigned", body).one()
        }),
        kind("utf16-body", DeadLetter("not-json"), |t| {
            let text = serde_json::to_string(&t.event()).unwrap();
            let body = text.encode_utf16().flat_map(u16::to_le_bytes).collect();
            Msg::raw("ClientAssigned", body).one()
        }),
        kind("raw-nul-in-string", DeadLetter("not-json"), |t| {
            t.raw_at("/data/employee/last_name", b"\"Nord\x00mann\"")
                .one()
        }),
        kind("empty-body", DeadLetter("not-json"), |_| {
            Msg::raw("ClientAssigned", Vec::new()).one()
        }),
        kind("truncated-json", DeadLetter("not-json"), |t| {
            let body = serde_json::to_vec(&t.event()).unwrap();
            Msg::raw("ClientAssigned", body[..body.len() / 2].to_vec()).one()
        }),
        kind("trailing-garbage", DeadLetter("not-json"), |t| {
            let mut body = serde_json::to_vec(&t.event()).unwrap();
            body.extend_from_slice(b" x");
            Msg::raw("ClientAssigned", body).one()
        }),
        kind("two-documents", DeadLetter("not-json"), |t| {
            let mut body = serde_json::to_vec(&t.event()).unwrap();
            body.extend(serde_json::to_vec(&t.event()).unwrap());
            Msg::raw("ClientAssigned", body).one()
        }),
        kind("json-with-comment", DeadLetter("not-json"), |t| {
            let mut body = b"/* AdminFlow */ ".to_vec();
            body.extend(serde_json::to_vec(&t.event()).unwrap());
            Msg::raw("ClientAssigned", body).one()
        }),
        kind("single-quoted-strings", DeadLetter("not-json"), |t| {
            let text = serde_json::to_string(&t.event()).unwrap();
            Msg::raw("ClientAssigned", text.replace('"', "'").into_bytes()).one()
        }),
        kind("top-level-null", DeadLetter("schema"), |_| {
            Msg::raw("ClientAssigned", b"null".to_vec()).one()
        }),
        kind("top-level-array", DeadLetter("schema"), |t| {
            Msg::event(&json!([t.event()])).one()
        }),
        kind("nesting-10000-deep-as-data", DeadLetter("schema"), |t| {
            t.raw_at("/data", &deep(10_000)).one()
        }),
        kind("nesting-10000-deep-in-unknown-field", Applied, |t| {
            let mut event = t.event();
            event["x_future"] = json!(null);
            let msg = Msg::event(&event);
            let body = replace(&msg.body, b"null", &deep(10_000));
            Msg::raw("ClientAssigned", body).one()
        }),
        kind("duplicate-key-sequence", DeadLetter("schema"), |t| {
            let event = t.event();
            let seq = event["sequence"].as_i64().unwrap();
            let msg = Msg::event(&event);
            let field = format!("\"sequence\":{seq}");
            let twice = format!("\"sequence\":{seq},\"sequence\":1");
            Msg::raw(
                "ClientAssigned",
                replace(&msg.body, field.as_bytes(), twice.as_bytes()),
            )
            .one()
        }),
        kind("duplicate-key-firm", DeadLetter("schema"), |t| {
            let event = t.event();
            let org = event["firm"]["org_number"].as_str().unwrap().to_owned();
            let twice = format!(
                r#"{{"org_number":"{org}","org_number":"{}"}}"#,
                org_number(7)
            );
            t.raw_at("/firm", twice.as_bytes()).one()
        }),
        kind("at-the-size-limit", Applied, |t| {
            let event = t.event();
            Msg::event(&padded(event, LIMIT)).one()
        }),
        kind(
            "one-byte-over-the-size-limit",
            DeadLetter("too-large"),
            |t| {
                let event = t.event();
                Msg::event(&padded(event, LIMIT + 1)).one()
            },
        ),
        kind("unknown-fields", Applied, |t| {
            let mut event = t.event();
            event["x_future"] = json!({"nested": [1, 2, {"deeper": true}]});
            event["data"]["client"]["x_future"] = json!("ignored");
            Msg::event(&event).one()
        }),
        kind("duplicate-delivery", Applied, |t| {
            let event = t.event();
            vec![Msg::event(&event), Msg::event(&event)]
        }),
    ]
}

/// `sequence` in every shape but a non-negative 64-bit integer, and identifiers that are not.
fn numbers_and_identifiers() -> Vec<Kind> {
    vec![
        kind("sequence-2^63", DeadLetter("schema"), |t| {
            t.raw_at("/sequence", b"9223372036854775808").one()
        }),
        kind("sequence-2^64", DeadLetter("schema"), |t| {
            t.raw_at("/sequence", b"18446744073709551616").one()
        }),
        kind("sequence-1e400", DeadLetter("not-json"), |t| {
            t.raw_at("/sequence", b"1e400").one()
        }),
        kind("sequence-i64-max", Applied, |t| {
            Msg::event(&t.with("/sequence", json!(i64::MAX))).one()
        }),
        kind("sequence-negative", DeadLetter("schema"), |t| {
            Msg::event(&t.with("/sequence", json!(-1))).one()
        }),
        kind("sequence-i64-min", DeadLetter("schema"), |t| {
            Msg::event(&t.with("/sequence", json!(i64::MIN))).one()
        }),
        kind("sequence-minus-zero", DeadLetter("schema"), |t| {
            t.raw_at("/sequence", b"-0").one()
        }),
        kind("sequence-integral-float", DeadLetter("schema"), |t| {
            t.raw_at("/sequence", b"3.0").one()
        }),
        kind("sequence-fraction", DeadLetter("schema"), |t| {
            t.raw_at("/sequence", b"3.5").one()
        }),
        kind("sequence-exponent", DeadLetter("schema"), |t| {
            t.raw_at("/sequence", b"3e0").one()
        }),
        kind("sequence-string", DeadLetter("schema"), |t| {
            Msg::event(&t.with("/sequence", json!("3"))).one()
        }),
        kind("sequence-nan", DeadLetter("not-json"), |t| {
            t.raw_at("/sequence", b"NaN").one()
        }),
        kind("sequence-infinity", DeadLetter("not-json"), |t| {
            t.raw_at("/sequence", b"Infinity").one()
        }),
        kind("sequence-null", DeadLetter("schema"), |t| {
            Msg::event(&t.with("/sequence", Value::Null)).one()
        }),
        kind("sequence-missing", DeadLetter("schema"), |t| {
            let mut event = t.event();
            event.as_object_mut().unwrap().remove("sequence");
            Msg::event(&event).one()
        }),
        kind("sequence-leading-zero", DeadLetter("not-json"), |t| {
            t.raw_at("/sequence", b"03").one()
        }),
        kind("sequence-plus-sign", DeadLetter("not-json"), |t| {
            t.raw_at("/sequence", b"+3").one()
        }),
        kind("sequence-hex", DeadLetter("not-json"), |t| {
            t.raw_at("/sequence", b"0x3").one()
        }),
        kind("firm-org-fullwidth-digits", DeadLetter("schema"), |t| {
            Msg::event(&t.digits_at("/firm/org_number", '\u{ff10}')).one()
        }),
        kind("firm-org-arabic-indic-digits", DeadLetter("schema"), |t| {
            Msg::event(&t.digits_at("/firm/org_number", '\u{0660}')).one()
        }),
        kind("client-org-devanagari-digits", DeadLetter("schema"), |t| {
            Msg::event(&t.digits_at("/data/client/org_number", '\u{0966}')).one()
        }),
        kind("firm-org-bad-mod11", DeadLetter("checksum"), |t| {
            let org = bad_check_digit(&t.firm.org);
            Msg::event(&t.with("/firm/org_number", json!(org))).one()
        }),
        kind("client-org-bad-mod11", DeadLetter("checksum"), |t| {
            let org = bad_check_digit(&t.client);
            Msg::event(&t.with("/data/client/org_number", json!(org))).one()
        }),
        kind("client-org-remainder-1", DeadLetter("checksum"), |t| {
            Msg::event(&t.with("/data/client/org_number", json!("912345675"))).one()
        }),
        kind("org-number-as-number", DeadLetter("schema"), |t| {
            let org: u64 = t.client.parse().unwrap();
            Msg::event(&t.with("/data/client/org_number", json!(org))).one()
        }),
        kind("org-number-with-exponent", DeadLetter("schema"), |t| {
            let org = &t.client;
            let raw = format!("{}.{}e8", &org[..1], &org[1..]);
            t.raw_at("/data/client/org_number", raw.as_bytes()).one()
        }),
        kind("org-number-with-spaces", DeadLetter("schema"), |t| {
            let o = t.client.clone();
            let spaced = format!("{} {} {}", &o[..3], &o[3..6], &o[6..]);
            Msg::event(&t.with("/data/client/org_number", json!(spaced))).one()
        }),
        kind("org-number-10-digits", DeadLetter("schema"), |t| {
            let long = format!("{}0", t.client);
            Msg::event(&t.with("/data/client/org_number", json!(long))).one()
        }),
        kind("nin-bad-first-check-digit", DeadLetter("checksum"), |t| {
            let nin = bump_digit(&t.kari.nin, 9);
            let event = t.with("/data/employee/national_identity_number", json!(nin));
            Msg::event(&event).one()
        }),
        kind("nin-bad-second-check-digit", DeadLetter("checksum"), |t| {
            let nin = bump_digit(&t.kari.nin, 10);
            let event = t.with("/data/employee/national_identity_number", json!(nin));
            Msg::event(&event).one()
        }),
        kind("nin-day-32", DeadLetter("checksum"), |t| {
            let event = t.with(
                "/data/employee/national_identity_number",
                json!(nin_from("320385")),
            );
            Msg::event(&event).one()
        }),
        kind("nin-month-13", DeadLetter("checksum"), |t| {
            let event = t.with(
                "/data/employee/national_identity_number",
                json!(nin_from("151385")),
            );
            Msg::event(&event).one()
        }),
        kind("nin-synthetic-in-production", DeadLetter("checksum"), |t| {
            let event = t.with(
                "/data/employee/national_identity_number",
                json!(nin_from("158885")),
            );
            Msg::event(&event).one()
        }),
        kind("nin-fullwidth-digits", DeadLetter("schema"), |t| {
            let nin = other_digits(&t.kari.nin, '\u{ff10}');
            let event = t.with("/data/employee/national_identity_number", json!(nin));
            Msg::event(&event).one()
        }),
        kind("nin-as-number", DeadLetter("schema"), |t| {
            let nin: u64 = t.kari.nin.parse().unwrap();
            let event = t.with("/data/employee/national_identity_number", json!(nin));
            Msg::event(&event).one()
        }),
        kind("nin-d-number", Applied, |t| {
            let event = t.with(
                "/data/employee/national_identity_number",
                json!(nin_from("550385")),
            );
            Msg::event(&event).one()
        }),
        kind("event-id-braced", DeadLetter("schema"), |t| {
            let id = format!("{{{}}}", Uuid::new_v4());
            Msg::event(&t.with("/event_id", json!(id))).one()
        }),
        kind("event-id-nil-uuid", Applied, |t| {
            Msg::event(&t.with("/event_id", json!(Uuid::nil()))).one()
        }),
        kind("occurred-at-impossible-date", DeadLetter("schema"), |t| {
            Msg::event(&t.with("/occurred_at", json!("2026-02-30T09:15:00Z"))).one()
        }),
        kind("occurred-at-year-9999", Applied, |t| {
            Msg::event(&t.with("/occurred_at", json!("9999-12-31T23:59:59Z"))).one()
        }),
    ]
}

/// Text, types, routing keys, commands and message properties.
fn text_types_and_properties() -> Vec<Kind> {
    vec![
        kind("nul-in-last-name", DeadLetter("schema"), |t| {
            Msg::event(&t.with("/data/employee/last_name", json!("Nord\u{0}mann"))).one()
        }),
        kind("nul-in-client-name", DeadLetter("schema"), |t| {
            Msg::event(&t.with("/data/client/name", json!("Client\u{0} AS"))).one()
        }),
        kind("nul-in-role", DeadLetter("schema"), |t| {
            let kari = t.kari.clone();
            let event = t.firm.role_changed(&kari, &["Payroll\u{0}Accountant"]);
            Msg::event(&event).key("RoleChanged").one()
        }),
        kind("c1-control-in-name", DeadLetter("schema"), |t| {
            Msg::event(&t.with("/data/employee/last_name", json!("Nord\u{85}mann"))).one()
        }),
        kind("bidi-override-in-client-name", Applied, |t| {
            Msg::event(&t.with("/data/client/name", json!("Client \u{202e}SA"))).one()
        }),
        kind("last-name-201-characters", DeadLetter("schema"), |t| {
            Msg::event(&t.with("/data/employee/last_name", json!("Å".repeat(201)))).one()
        }),
        kind("last-name-200-emoji", Applied, |t| {
            Msg::event(&t.with("/data/employee/last_name", json!("🧾".repeat(200)))).one()
        }),
        kind("unknown-event-type", DeadLetter("unknown-type"), |t| {
            Msg::event(&t.with("/event_type", json!("ClientArchived"))).one()
        }),
        kind("event-type-wrong-case", DeadLetter("unknown-type"), |t| {
            Msg::event(&t.with("/event_type", json!("clientassigned"))).one()
        }),
        kind("event-type-homoglyph", DeadLetter("unknown-type"), |t| {
            Msg::event(&t.with("/event_type", json!("ClientAss\u{0456}gned"))).one()
        }),
        kind("event-type-with-nul", DeadLetter("unknown-type"), |t| {
            Msg::event(&t.with("/event_type", json!("ClientAssigned\u{0}"))).one()
        }),
        kind("event-type-100-kib", DeadLetter("unknown-type"), |t| {
            Msg::event(&t.with("/event_type", json!("X".repeat(100 * 1024)))).one()
        }),
        kind("event-type-as-number", DeadLetter("schema"), |t| {
            Msg::event(&t.with("/event_type", json!(1))).one()
        }),
        kind(
            "command-type-on-events-queue",
            DeadLetter("unknown-type"),
            |t| Msg::event(&t.with("/event_type", json!("SyncNow"))).one(),
        ),
        kind(
            "routing-key-disagrees",
            DeadLetter("routing-key-mismatch"),
            |t| Msg::event(&t.event()).key("ClientRemoved").one(),
        ),
        kind("routing-key-unbound", Unroutable, |t| {
            let event = t.with("/event_type", json!("ClientArchived"));
            Msg::event(&event).key("ClientArchived").one()
        }),
        kind("routing-key-wrong-case", Unroutable, |t| {
            Msg::event(&t.event()).key("clientassigned").one()
        }),
        kind("routing-key-with-nul", Unroutable, |t| {
            Msg::event(&t.event()).key("ClientAssigned\u{0}").one()
        }),
        kind("command-unknown-type", DeadLetter("unknown-type"), |t| {
            let mut c = t.sync_now();
            c["command_type"] = json!("PurgeFirm");
            Msg::command("SyncNow", &c).one()
        }),
        kind(
            "command-routing-key-disagrees",
            DeadLetter("routing-key-mismatch"),
            |t| Msg::command("NightlyReconcile", &t.sync_now()).one(),
        ),
        kind("command-after-sequence-2^63", DeadLetter("schema"), |t| {
            let c = t.sync_now();
            let mut body = serde_json::to_vec(&c).unwrap();
            body.pop();
            body.extend_from_slice(b",\"after_sequence\":9223372036854775808}");
            Msg {
                body,
                ..Msg::command("SyncNow", &c)
            }
            .one()
        }),
        kind(
            "command-after-sequence-negative",
            DeadLetter("schema"),
            |t| {
                let mut c = t.sync_now();
                c["after_sequence"] = json!(-1);
                Msg::command("SyncNow", &c).one()
            },
        ),
        kind("command-firm-fullwidth-digits", DeadLetter("schema"), |t| {
            let mut c = t.sync_now();
            c["firm"]["org_number"] = json!(other_digits(&t.firm.org, '\u{ff10}'));
            Msg::command("SyncNow", &c).one()
        }),
        kind("no-content-type", Applied, |t| {
            Msg::event(&t.event())
                .props(|_| BasicProperties::default().with_delivery_mode(2))
                .one()
        }),
        kind("content-type-with-charset", Applied, |t| {
            Msg::event(&t.event())
                .props(|p| p.with_content_type("application/json; charset=utf-8".into()))
                .one()
        }),
        kind("content-encoding-utf-8", Applied, |t| {
            Msg::event(&t.event())
                .props(|p| p.with_content_encoding("utf-8".into()))
                .one()
        }),
        kind("xml-body-as-xml", DeadLetter("not-json"), |t| {
            let body = format!(
                "<?xml version=\"1.0\"?><ClientAssigned firm=\"{}\"/>",
                t.firm.org
            );
            Msg::raw("ClientAssigned", body.into_bytes())
                .props(|p| p.with_content_type("application/xml".into()))
                .one()
        }),
        kind("traceparent-missing", Applied, |t| {
            Msg::event(&t.event()).one()
        }),
        kind("traceparent-garbage", Applied, |t| {
            Msg::event(&t.event())
                .traceparent("not a traceparent")
                .one()
        }),
        kind("traceparent-version-ff", Applied, |t| {
            let tp = TRACEPARENT.replacen("00", "ff", 1);
            Msg::event(&t.event()).traceparent(&tp).one()
        }),
        kind("traceparent-zero-trace-id", Applied, |t| {
            let tp = format!("00-{}-00f067aa0ba902b7-01", "0".repeat(32));
            Msg::event(&t.event()).traceparent(&tp).one()
        }),
        kind("traceparent-uppercase", Applied, |t| {
            let tp = TRACEPARENT.to_uppercase();
            Msg::event(&t.event()).traceparent(&tp).one()
        }),
        kind("traceparent-4-kib", Applied, |t| {
            let tp = format!("{TRACEPARENT}-{}", "a".repeat(4096));
            Msg::event(&t.event()).traceparent(&tp).one()
        }),
        kind("traceparent-not-utf8", Applied, |t| {
            let bytes = LongString::from(b"00-\xff\xfe-\x00".to_vec());
            Msg::event(&t.event())
                .header("traceparent", AMQPValue::LongString(bytes))
                .one()
        }),
        kind("traceparent-as-integer", Applied, |t| {
            Msg::event(&t.event())
                .header("traceparent", AMQPValue::LongLongInt(42))
                .one()
        }),
        kind("traceparent-on-poison", DeadLetter("checksum"), |t| {
            let org = bad_check_digit(&t.client);
            let event = t.with("/data/client/org_number", json!(org));
            Msg::event(&event).traceparent(TRACEPARENT).one()
        }),
    ]
}

#[tokio::test]
async fn hostile_bytes_and_structure() {
    run_corpus(&bytes_and_structure()).await;
}

#[tokio::test]
async fn hostile_numbers_and_identifiers() {
    run_corpus(&numbers_and_identifiers()).await;
}

#[tokio::test]
async fn hostile_text_types_and_properties() {
    run_corpus(&text_types_and_properties()).await;
}

// Kinds the worker once got wrong (docs/hostile-input.md): duplicate keys and deep unknown
// fields inside `data`, and the AMQP content type and encoding.

fn duplicate_keys_in_data() -> Vec<Kind> {
    vec![
        kind("duplicate-key-in-data", DeadLetter("schema"), |t| {
            let event = t.event();
            let client = serde_json::to_string(&event["data"]["client"]).unwrap();
            let other = json!({"org_number": org_number(8), "name": "Other AS"});
            let data = format!(
                r#"{{"employee":{},"client":{other},"client":{client}}}"#,
                event["data"]["employee"]
            );
            t.raw_at("/data", data.as_bytes()).one()
        }),
        kind("duplicate-key-nin", DeadLetter("schema"), |t| {
            let nin = serde_json::to_string(&t.kari.nin).unwrap();
            let other = serde_json::to_string(&nin_from("550385")).unwrap();
            let twice = format!("{other},\"national_identity_number\":{nin}");
            t.raw_at("/data/employee/national_identity_number", twice.as_bytes())
                .one()
        }),
    ]
}

#[tokio::test]
async fn hostile_duplicate_keys_inside_data_are_refused() {
    run_corpus(&duplicate_keys_in_data()).await;
}

#[tokio::test]
async fn hostile_deep_unknown_field_inside_data_is_ignored() {
    run_corpus(&[kind(
        "nesting-10000-deep-in-unknown-data-field",
        Applied,
        |t| {
            let mut event = t.event();
            event["data"]["x_future"] = json!(null);
            let msg = Msg::event(&event);
            let body = replace(&msg.body, b"null", &deep(10_000));
            Msg::raw("ClientAssigned", body).one()
        },
    )])
    .await;
}

#[tokio::test]
async fn hostile_unknown_content_type_is_refused() {
    run_corpus(&[kind(
        "content-type-xml-with-json-body",
        DeadLetterNaming("not-json", "application/xml"),
        |t| {
            Msg::event(&t.event())
                .props(|p| p.with_content_type("application/xml".into()))
                .one()
        },
    )])
    .await;
}

#[tokio::test]
async fn hostile_unknown_content_encodings_are_refused_by_name() {
    run_corpus(&[
        kind(
            "content-encoding-unknown",
            DeadLetterNaming("not-json", "x-snappy"),
            |t| {
                Msg::event(&t.event())
                    .props(|p| p.with_content_encoding("x-snappy".into()))
                    .one()
            },
        ),
        kind(
            "content-encoding-gzip",
            DeadLetterNaming("not-json", "gzip"),
            |t| {
                let body = gzip(&serde_json::to_vec(&t.event()).unwrap());
                Msg::raw("ClientAssigned", body)
                    .props(|p| p.with_content_encoding("gzip".into()))
                    .one()
            },
        ),
        kind(
            "content-encoding-gzip-truncated",
            DeadLetterNaming("not-json", "gzip"),
            |t| {
                let body = gzip(&serde_json::to_vec(&t.event()).unwrap());
                Msg::raw("ClientAssigned", body[..body.len() / 2].to_vec())
                    .props(|p| p.with_content_encoding("gzip".into()))
                    .one()
            },
        ),
    ])
    .await;
}

/// Every kind of every group, for the table's test.
fn all_kinds() -> Vec<Kind> {
    let mut all = bytes_and_structure();
    all.extend(numbers_and_identifiers());
    all.extend(text_types_and_properties());
    all.extend(duplicate_keys_in_data());
    all
}

#[test]
fn the_table_in_docs_lists_every_kind() {
    let doc = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/hostile-input.md"),
    )
    .unwrap();
    let mut names: Vec<&str> = all_kinds().iter().map(|k| k.name).collect();
    names.extend([
        "nesting-10000-deep-in-unknown-data-field",
        "content-type-xml-with-json-body",
        "content-encoding-unknown",
        "content-encoding-gzip",
        "content-encoding-gzip-truncated",
        "body-16-mib",
        "employee-id-in-two-firms",
        "event-id-in-two-firms",
        "redelivered-after-rollback",
        "redelivered-after-a-partial-commit",
    ]);
    let mut seen = std::collections::HashSet::new();
    for name in names {
        assert!(seen.insert(name), "{name} is listed twice");
        assert!(
            doc.contains(&format!("| `{name}` |")),
            "docs/hostile-input.md has no row for {name}"
        );
    }
    assert!(seen.len() >= 50, "{} kinds", seen.len());
}

// ---------------------------------------------------------------------------------------------
// The runner.

/// What was published for one kind.
struct Sent {
    route: Route,
    msgs: Vec<(Vec<u8>, BasicProperties, Confirmation)>,
}

fn message_id(kind: &str) -> String {
    format!("hostile:{kind}")
}

/// Publishes every kind between two good messages of a firm of its own, with the worker
/// running, then checks each kind's outcome, the good messages, and that the worker still
/// applies what comes after.
// Long because it is the whole scenario: set up, send, then one check per promise.
async fn run_corpus(kinds: &[Kind]) {
    let mut app = TestApp::spawn().await;
    let old_client = org_number(900_000);
    let new_client = org_number(900_001);
    let good_client = org_number(900_002);

    let mut targets = Vec::new();
    for i in 0..kinds.len() {
        let mut firm = FirmEvents::new(org_number(100_000 + i as u32));
        let kari = Person::new(1 + i as u32);
        app.publish_event(&firm.role_changed(&kari, &["PayrollAccountant"]))
            .await;
        app.publish_event(&firm.client_assigned(&kari, &old_client))
            .await;
        targets.push(Target {
            firm,
            kari,
            client: new_client.clone(),
        });
    }
    app.barrier().await;

    let ola = Person::new(5_000);
    let mut good_firms = Vec::new();
    let mut sent = Vec::new();
    for (kind, target) in kinds.iter().zip(&mut targets) {
        let mut good = FirmEvents::new(org_number(200_000 + good_firms.len() as u32));
        app.publish_event(&good.role_changed(&ola, &["PayrollAccountant"]))
            .await;
        let mut msgs = Vec::new();
        let mut route = Route::Events;
        for m in (kind.build)(target) {
            route = m.route;
            let exchange = match m.route {
                Route::Events => app.topology.events_exchange.clone(),
                Route::Commands => app.topology.commands_exchange.clone(),
            };
            let props = m.props.with_message_id(message_id(kind.name).into());
            let confirm = app
                .publish_with(&exchange, &m.key, &m.body, props.clone())
                .await;
            msgs.push((m.body, props, confirm));
        }
        sent.push(Sent { route, msgs });
        app.publish_event(&good.client_assigned(&ola, &good_client))
            .await;
        good_firms.push(good.org);
    }
    app.barrier().await;

    app.barrier().await;

    // The worker still runs and applies what comes after the corpus.
    let mut after = FirmEvents::new(org_number(300_000));
    app.publish_event(&after.role_changed(&ola, &["PayrollAccountant"]))
        .await;
    app.publish_event(&after.client_assigned(&ola, &good_client))
        .await;
    app.barrier().await;
    assert!(app.worker_is_running(), "the worker is still running");
    assert_eq!(
        app.desired(&after.org).await,
        vec![(ola.id, good_client.clone(), PAYROLL.to_owned())],
        "a message published after the corpus is applied"
    );

    // The barrier covers the events queue only; the commands queue is waited for by its rows.
    let commands = kinds
        .iter()
        .zip(&sent)
        .filter(|(k, s)| {
            matches!(k.outcome, DeadLetter(_) | DeadLetterNaming(..))
                && matches!(s.route, Route::Commands)
        })
        .count() as i64;
    let pool = app.pool.clone();
    let queue = app.topology.commands_queue.clone();
    app.wait_until("the command kinds' dead letters", || {
        let (pool, queue) = (pool.clone(), queue.clone());
        async move {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM dead_letters WHERE queue = $1")
                .bind(queue)
                .fetch_one(&pool)
                .await
                .unwrap()
                >= commands
        }
    })
    .await;
    // Each committed row's copy is published before its batch is acked: take exactly those.
    let mut rows: HashMap<String, Vec<(String, String, i32)>> = HashMap::new();
    let all: Vec<(Option<String>, String, String, i32)> =
        sqlx::query_as("SELECT message_id, reason_code, reason, body_bytes FROM dead_letters")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    let copies = all.len();
    for (id, code, reason, bytes) in all {
        rows.entry(id.unwrap_or_default())
            .or_default()
            .push((code, reason, bytes));
    }
    let mut dead: HashMap<String, Vec<Delivery>> = HashMap::new();
    for d in app.drain_dead_letter_deliveries(copies).await {
        let id = d.properties.message_id().as_ref().map(ToString::to_string);
        dead.entry(id.unwrap_or_default()).or_default().push(d);
    }

    let mut failures = Vec::new();
    for (i, (kind, target)) in kinds.iter().zip(&targets).enumerate() {
        let id = message_id(kind.name);
        let mut fail = |what: String| failures.push(format!("{}: {what}", kind.name));
        let mut want = vec![(target.kari.id, old_client.clone(), PAYROLL.to_owned())];
        if kind.outcome == Applied {
            want.push((target.kari.id, new_client.clone(), PAYROLL.to_owned()));
        }
        want.sort();
        let mut got = app.desired(&target.firm.org).await;
        got.sort();
        if got != want {
            fail(format!("its firm's desired state is {got:?}, not {want:?}"));
        }
        let good = app.desired(&good_firms[i]).await;
        if good != vec![(ola.id, good_client.clone(), PAYROLL.to_owned())] {
            fail(format!(
                "the good messages around it were not applied: {good:?}"
            ));
        }
        for (_, _, confirm) in &sent[i].msgs {
            let returned = matches!(confirm, Confirmation::Ack(Some(_)));
            if returned != (kind.outcome == Unroutable) || !confirm.is_ack() {
                fail(format!("the broker answered {confirm:?}"));
            }
        }
        let copies = dead.remove(&id).unwrap_or_default();
        let recorded = rows.remove(&id).unwrap_or_default();
        let (code, naming) = match kind.outcome {
            DeadLetter(code) => (code, None),
            DeadLetterNaming(code, name) => (code, Some(name)),
            Applied | Unroutable => {
                if !copies.is_empty() || !recorded.is_empty() {
                    fail(format!(
                        "dead-lettered ({:?}), though it should not be",
                        recorded.first().map(|r| (&r.0, &r.1))
                    ));
                }
                continue;
            }
        };
        let [copy] = &copies[..] else {
            fail(format!("{} copies in the dead-letter queue", copies.len()));
            continue;
        };
        let [(row_code, row_reason, row_bytes)] = &recorded[..] else {
            fail(format!("{} rows in dead_letters", recorded.len()));
            continue;
        };
        let headers = copy.properties.headers().clone().unwrap_or_default();
        let header = |name: &str| {
            headers
                .inner()
                .get(name)
                .and_then(AMQPValue::as_long_string)
                .map(ToString::to_string)
                .unwrap_or_default()
        };
        let (body, props, _) = &sent[i].msgs[0];
        if header("x-altinn-sync-reason-code") != code || row_code != code {
            fail(format!(
                "reason code {:?} (header) / {row_code:?} (row), not {code:?}; reason: {row_reason}",
                header("x-altinn-sync-reason-code")
            ));
        }
        if header("x-altinn-sync-reason") != *row_reason {
            fail("the header and the row give different reasons".to_owned());
        }
        check_reason(row_reason, target, &mut fail);
        if let Some(name) = naming
            && !row_reason.contains(name)
        {
            fail(format!("the reason {row_reason:?} does not name {name:?}"));
        }
        if copy.data != *body || *row_bytes as usize != body.len() {
            fail("the dead letter's body differs from what was sent".to_owned());
        }
        for (k, v) in props.headers().clone().unwrap_or_default().inner() {
            if headers.inner().get(k) != Some(v) {
                fail(format!("the dead letter lost the header {k}"));
            }
        }
    }
    for (id, copies) in dead {
        failures.push(format!(
            "{} unexpected dead letters for {id:?}",
            copies.len()
        ));
    }
    for (id, recorded) in rows {
        failures.push(format!(
            "unexpected dead_letters rows for {id:?}: {recorded:?}"
        ));
    }
    assert_eq!(
        app.messages_in(&app.topology.dead_letter_queue.clone())
            .await,
        0,
        "no dead letter beyond those of the corpus"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    app.assert_desired_consistent().await;
    app.teardown().await;
}

/// A reason is short, and carries no identity number or name.
fn check_reason(reason: &str, target: &Target, fail: &mut impl FnMut(String)) {
    if reason.trim().is_empty() || reason.len() > 400 {
        fail(format!(
            "the reason is empty or long: {} bytes",
            reason.len()
        ));
    }
    let longest_digits = reason
        .split(|c: char| !c.is_ascii_digit())
        .map(str::len)
        .max()
        .unwrap_or(0);
    if longest_digits >= 11 || reason.contains(&target.kari.last_name) {
        fail(format!("the reason may carry personal data: {reason}"));
    }
}

// ---------------------------------------------------------------------------------------------
// Kinds with a test of their own.

#[tokio::test]
async fn a_16_mib_body_is_dead_lettered_and_the_messages_around_it_are_applied() {
    let mut app = TestApp::spawn().await;
    let mut firm = FirmEvents::new(org_number(30));
    let kari = Person::new(1);
    let client = org_number(3000);
    let huge = padded(
        firm.client_assigned(&kari, &org_number(3001)),
        16 * 1024 * 1024,
    );
    let body = serde_json::to_vec(&huge).unwrap();
    assert_eq!(body.len(), 16 * 1024 * 1024);

    app.publish_event(&firm.role_changed(&kari, &["PayrollAccountant"]))
        .await;
    let props = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_message_id("hostile:body-16-mib".into());
    let exchange = app.topology.events_exchange.clone();
    let confirm = app
        .publish_with(&exchange, "ClientAssigned", &body, props)
        .await;
    assert_eq!(confirm, Confirmation::Ack(None));
    app.publish_event(&firm.client_assigned(&kari, &client))
        .await;
    app.barrier().await;

    assert_eq!(
        app.desired(&firm.org).await,
        vec![(kari.id, client, PAYROLL.to_owned())],
        "the messages around it are applied, and it is not"
    );
    let dead = app.drain_dead_letter_deliveries(1).await;
    assert_eq!(dead[0].data, body, "the dead letter keeps the body");
    let (code, reason, bytes): (String, String, i32) =
        sqlx::query_as("SELECT reason_code, reason, body_bytes FROM dead_letters")
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(code, "too-large");
    assert!(reason.contains("262144"), "{reason}");
    assert_eq!(bytes as usize, body.len());
    assert!(app.worker_is_running());
    app.teardown().await;
}

#[tokio::test]
async fn ids_reused_across_two_firms_are_applied_to_each_firm_alone() {
    let mut app = TestApp::spawn().await;
    let mut a = FirmEvents::new(org_number(31));
    let mut b = FirmEvents::new(org_number(32));
    let kari = Person::new(1);
    // The same employee id in firm B, for another person.
    let impostor = Person {
        id: kari.id,
        ..Person::new(2)
    };
    let c1 = org_number(3100);
    let c2 = org_number(3101);
    app.publish_event(&a.role_changed(&kari, &["PayrollAccountant"]))
        .await;
    let assigned = a.client_assigned(&kari, &c1);
    app.publish_event(&assigned).await;
    app.barrier().await;

    app.publish_event(&b.role_changed(&impostor, &["AccountantWithSigningRights"]))
        .await;
    app.publish_event(&b.client_assigned(&impostor, &c1)).await;
    app.publish_event(&b.client_assigned(&impostor, &c2)).await;
    app.publish_event(&b.client_removed(&impostor, &c1)).await;
    app.publish_event(&b.project_accountant_changed(&c1, Some(&impostor), None))
        .await;
    // The event id of A's ClientAssigned, reused by B for an event of its own.
    let mut reused = b.client_assigned(&impostor, &c1);
    reused["event_id"] = assigned["event_id"].clone();
    app.publish_event(&reused).await;
    app.barrier().await;

    assert_eq!(
        app.desired(&a.org).await,
        vec![(kari.id, c1.clone(), PAYROLL.to_owned())],
        "firm A is untouched"
    );
    let mut got_b = app.desired(&b.org).await;
    got_b.sort();
    let signing = "regnskapsforer-med-signeringsrettighet".to_owned();
    assert_eq!(
        got_b,
        vec![
            (kari.id, c1.clone(), signing.clone()),
            (kari.id, c2, signing)
        ],
        "firm B has its own facts, the reused event id included"
    );
    let nins: Vec<(String, String)> = sqlx::query_as(
        "SELECT firm, national_identity_number FROM employee_identities ORDER BY firm",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert!(nins.contains(&(a.org.clone(), kari.nin.clone())));
    assert!(nins.contains(&(b.org.clone(), impostor.nin.clone())));
    assert_eq!(app.count("SELECT count(*) FROM dead_letters").await, 0);
    app.teardown().await;
}

/// Makes the first transaction that records an event of `firm` fail as an outage would (the
/// SQLSTATE class 57 the worker treats as "PostgreSQL unavailable"), and later ones succeed: a
/// sequence is not rolled back with the transaction.
async fn fail_first_commit_of(app: &TestApp, firm: &str) {
    for sql in [
        "CREATE SEQUENCE hostile_attempts".to_owned(),
        format!(
            "CREATE FUNCTION hostile_fail_once() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
                 IF NEW.firm = '{firm}' AND nextval('hostile_attempts') = 1 THEN
                     RAISE EXCEPTION 'test: the server is going away' USING ERRCODE = '57P03';
                 END IF;
                 RETURN NEW;
             END $$"
        ),
        "CREATE TRIGGER hostile_fail_once BEFORE INSERT ON processed_events
         FOR EACH ROW EXECUTE FUNCTION hostile_fail_once()"
            .to_owned(),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&app.pool)
            .await
            .unwrap();
    }
}

/// The shard `commit` gives a firm (FNV-1a, as in `ingest::batch`).
fn shard_of(firm: &str, n: u64) -> u64 {
    let hash = firm.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    hash % n
}

/// Publishes, in one batch, a good event for firm `a`, a poison message and the event of firm
/// `b` whose first commit fails; starts the worker with no outage hold time, so what did not
/// commit goes back to the broker and comes again, redelivered. `poison_redelivered` says
/// whether the poison message's first transaction was the one rolled back (and so whether its
/// one `dead_letters` row comes from the redelivery or from the first delivery).
// Long because it is the whole scenario: set up, send, then one check per promise.
async fn redeliver_after_rollback(parallelism: usize, a: u32, b: u32, poison_redelivered: bool) {
    let mut app = TestApp::without_worker().await;
    app.settings.ingest.db_outage_hold_secs = 0;
    app.settings.ingest.parallelism = parallelism;
    let mut fa = FirmEvents::new(org_number(a));
    let mut fb = FirmEvents::new(org_number(b));
    let kari = Person::new(1);
    let ola = Person::new(2);
    let client = org_number(3300);
    fail_first_commit_of(&app, &fb.org).await;

    app.publish_event(&fa.role_changed(&kari, &["PayrollAccountant"]))
        .await;
    let exchange = app.topology.events_exchange.clone();
    let poison = BasicProperties::default().with_message_id("hostile:poison".into());
    let confirm = app
        .publish_with(&exchange, "ClientAssigned", b"{not json", poison)
        .await;
    assert_eq!(confirm, Confirmation::Ack(None));
    app.publish_event(&fb.role_changed(&ola, &["PayrollAccountant"]))
        .await;
    app.publish_event(&fb.client_assigned(&ola, &client)).await;
    app.publish_event(&fa.client_assigned(&kari, &client)).await;
    app.start_worker().await;
    app.barrier().await;
    // The barrier proves the first batch settled, but the shard given back may be redelivered
    // behind the second marker, and commit just after it: wait for the four events themselves.
    let firms = format!("('{}', '{}')", fa.org, fb.org);
    let applied = format!("SELECT count(*) FROM processed_events WHERE firm IN {firms}");
    app.wait_until("both firms' events applied", || async {
        app.count(&applied).await == 4
    })
    .await;

    assert_eq!(
        app.count("SELECT last_value FROM hostile_attempts").await,
        3,
        "the first attempt failed and was rolled back"
    );
    assert_eq!(
        app.desired(&fa.org).await,
        vec![(kari.id, client.clone(), PAYROLL.to_owned())]
    );
    assert_eq!(
        app.desired(&fb.org).await,
        vec![(ola.id, client, PAYROLL.to_owned())],
        "the redelivered events are applied"
    );
    assert_eq!(app.count(&applied).await, 4, "each event once");
    let dead = app.drain_dead_letter_deliveries(1).await;
    assert_eq!(dead[0].data, b"{not json");
    app.barrier().await;
    assert_eq!(
        app.messages_in(&app.topology.dead_letter_queue.clone())
            .await,
        0,
        "one copy of the poison message"
    );
    let rows: Vec<(String, bool)> =
        sqlx::query_as("SELECT reason_code, redelivered FROM dead_letters")
            .fetch_all(&app.pool)
            .await
            .unwrap();
    assert_eq!(
        rows,
        vec![("not-json".to_owned(), poison_redelivered)],
        "one dead_letters row, from the delivery whose transaction committed"
    );
    assert!(app.worker_is_running());
    app.teardown().await;
}

#[tokio::test]
async fn a_batch_redelivered_after_the_database_rolled_back_is_applied_once() {
    // One transaction: the poison message's row is rolled back with the rest.
    redeliver_after_rollback(1, 33, 34, true).await;
}

#[tokio::test]
async fn a_batch_redelivered_after_a_partial_commit_records_each_dead_letter_once() {
    // Poison goes to shard 0: firm A shares it and commits, firm B's shard fails. Shard 0's
    // deliveries are then acked, not requeued: the poison message's row is its first delivery's.
    let a = (35..).find(|&n| shard_of(&org_number(n), 2) == 0).unwrap();
    let b = (35..).find(|&n| shard_of(&org_number(n), 2) == 1).unwrap();
    redeliver_after_rollback(2, a, b, false).await;
}

// ---------------------------------------------------------------------------------------------
// Building blocks.

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// `body` with the first `from` replaced by `to`.
fn replace(body: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let at = find(body, from).expect("the text to replace is there");
    [&body[..at], to, &body[at + from.len()..]].concat()
}

/// Arrays nested `depth` deep.
fn deep(depth: usize) -> Vec<u8> {
    let mut v = vec![b'['; depth];
    v.extend(std::iter::repeat_n(b']', depth));
    v
}

/// `event` with an unknown field that makes its JSON exactly `size` bytes.
fn padded(mut event: Value, size: usize) -> Value {
    event["padding"] = json!("");
    let len = serde_json::to_vec(&event).unwrap().len();
    event["padding"] = json!("x".repeat(size - len));
    event
}

/// The same digits, written from `zero` on (a Unicode block of decimal digits).
fn other_digits(ascii: &str, zero: char) -> String {
    ascii
        .chars()
        .map(|c| char::from_u32(zero as u32 + c.to_digit(10).unwrap()).unwrap())
        .collect()
}

/// The digit at `at` changed, so its check digit no longer fits.
fn bump_digit(number: &str, at: usize) -> String {
    let mut d = number.as_bytes().to_vec();
    d[at] = if d[at] == b'9' { b'0' } else { d[at] + 1 };
    String::from_utf8(d).unwrap()
}

fn bad_check_digit(org: &str) -> String {
    bump_digit(org, 8)
}

fn mod11(digits: &[u32], weights: &[u32]) -> Option<u32> {
    let sum: u32 = digits.iter().zip(weights).map(|(d, w)| d * w).sum();
    match 11 - sum % 11 {
        11 => Some(0),
        10 => None,
        k => Some(k),
    }
}

/// An identity number with valid check digits for the date `ddmmyy`, whatever the date.
fn nin_from(ddmmyy: &str) -> String {
    (100..1000)
        .find_map(|individual| {
            let s = format!("{ddmmyy}{individual}");
            let d: Vec<u32> = s.chars().map(|c| c.to_digit(10).unwrap()).collect();
            let k1 = mod11(&d, &[3, 7, 6, 1, 8, 9, 4, 5, 2])?;
            let mut d10 = d.clone();
            d10.push(k1);
            let k2 = mod11(&d10, &[5, 4, 3, 2, 7, 6, 5, 4, 3, 2])?;
            Some(format!("{s}{k1}{k2}"))
        })
        .unwrap()
}

/// `data` gzipped, in stored (uncompressed) deflate blocks: a valid gzip stream.
fn gzip(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];
    let chunks: Vec<&[u8]> = data.chunks(65_535).collect();
    for (i, chunk) in chunks.iter().enumerate() {
        out.push(u8::from(i + 1 == chunks.len()));
        let len = chunk.len() as u16;
        out.extend(len.to_le_bytes());
        out.extend((!len).to_le_bytes());
        out.extend_from_slice(chunk);
    }
    out.extend(crc32(data).to_le_bytes());
    out.extend((data.len() as u32).to_le_bytes());
    out
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0_u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[test]
fn the_gzip_stream_is_valid() {
    // The check value of the CRC-32 used by gzip.
    assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
    let z = gzip(b"{}");
    assert_eq!(&z[..3], &[0x1f, 0x8b, 8]);
    assert_eq!(z.len(), 10 + 5 + 2 + 8);
}
