//! Shared by the fuzz targets in `fuzz_targets/`: the JSON Schemas, an allocation meter,
//! reference checks written from the schemas' descriptions (not from the decoder), and the
//! invariants every decoder target asserts. See `README.md`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod admin;
pub mod alloc;
pub mod command;
pub mod event;
pub mod generate;
pub mod reference;
pub mod schema;

/// Splits a decoder target's input, `ROUTING_KEY\nBODY`: the corpus files read like the
/// deliveries they stand for. `None` when the routing key is not UTF-8 (AMQP's shortstr is
/// bytes, but lapin hands the worker a `&str`).
pub fn split_delivery(data: &[u8]) -> Option<(&str, &[u8])> {
    let cut = data.iter().position(|&b| b == b'\n').unwrap_or(data.len());
    let key = std::str::from_utf8(&data[..cut]).ok()?;
    Some((key, data.get(cut + 1..).unwrap_or_default()))
}

/// An error text must not carry what could be an identity number: ten or more digits in a row
/// (the decoder's own redaction threshold).
pub fn assert_no_digit_runs(text: &str) {
    let mut run = 0;
    for c in text.chars() {
        run = if c.is_ascii_digit() { run + 1 } else { 0 };
        assert!(
            run < 10,
            "an error text carries a run of {run} digits: {text:?}"
        );
    }
}
