//! Structure-aware events (`arbitrary`, see `src/generate.rs`): the decoder accepts exactly
//! the messages that pass the schema and the decoder-only rules, the schema agrees with the
//! generator's labels, and everything the `event` target asserts holds too.
#![no_main]

use altinn_sync_fuzz::{alloc::Counting, event, generate, schema};
use libfuzzer_sys::fuzz_target;

#[global_allocator]
static ALLOC: Counting = Counting;

fuzz_target!(|data: &[u8]| {
    let mut u = arbitrary::Unstructured::new(data);
    let Ok((routing_key, message, verdict)) = generate::event(&mut u) else {
        return;
    };
    let body = serde_json::to_vec(&message).unwrap();
    let accepted = event::check(&routing_key, &body);
    assert_eq!(
        schema::accepts(schema::Kind::Event, &routing_key, &message),
        verdict.schema,
        "the schema disagrees with the generator's label ({verdict:?}, routing key {routing_key:?}): {message}"
    );
    if let Some(expected) = verdict.decoder() {
        assert_eq!(
            accepted, expected,
            "the decoder disagrees with the rules: {message}"
        );
    }
});
