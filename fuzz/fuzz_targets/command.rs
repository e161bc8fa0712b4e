//! `decode_command` on arbitrary bytes: `ROUTING_KEY\nBODY`, seeded from `schemas/examples`.
//! The invariants of the event target (see `src/command.rs`).
#![no_main]

use altinn_sync_fuzz::{alloc::Counting, command, split_delivery};
use libfuzzer_sys::fuzz_target;

#[global_allocator]
static ALLOC: Counting = Counting;

fuzz_target!(|data: &[u8]| {
    if let Some((routing_key, body)) = split_delivery(data) {
        command::check(routing_key, body);
    }
});
