//! `decode_event` on arbitrary bytes: `ROUTING_KEY\nBODY`, seeded from `schemas/examples`.
//! Never panics, allocates within `alloc::decode_budget`, accepts only what the JSON Schema
//! accepts, and what it accepts re-encodes to the input (see `src/event.rs`).
#![no_main]

use altinn_sync_fuzz::{alloc::Counting, event, split_delivery};
use libfuzzer_sys::fuzz_target;

#[global_allocator]
static ALLOC: Counting = Counting;

fuzz_target!(|data: &[u8]| {
    if let Some((routing_key, body)) = split_delivery(data) {
        event::check(routing_key, body);
    }
});
