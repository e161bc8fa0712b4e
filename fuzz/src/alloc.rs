//! Counts live heap bytes, so a target can assert that decoding one input allocates an amount
//! bounded by the input's length. libFuzzer's `-malloc_limit_mb` / `-rss_limit_mb` catch only
//! single huge allocations and leaks; this catches an input that makes the decoder allocate
//! far more than its size in many small pieces.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

/// Install in a target with `#[global_allocator] static A: Counting = Counting;`.
pub struct Counting;

// SAFETY: every call is forwarded to `System` unchanged; only counters are added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            grew(new_size);
        }
        p
    }
}

fn grew(size: usize) {
    let live = LIVE.fetch_add(size, Ordering::Relaxed) + size;
    PEAK.fetch_max(live, Ordering::Relaxed);
}

/// Runs `f` and returns its result with the most heap it held at once beyond what was live
/// before (the targets are single-threaded, so nothing else allocates meanwhile).
pub fn peak_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let out = f();
    (out, PEAK.load(Ordering::Relaxed).saturating_sub(base))
}

/// The bound the decoder targets assert: a fixed allowance plus a multiple of the input's
/// length (serde_json's `Value` for the event's `data` costs tens of bytes per input byte at
/// worst, e.g. `[0,0,0,…]`).
pub fn decode_budget(input_len: usize) -> usize {
    64 * 1024 + 64 * input_len
}
