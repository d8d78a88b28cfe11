//! Any bytes handed to the trace reader give a trace, a damaged trace or an error: never a panic,
//! a hang or unbounded memory. Seeds: `cargo xtask fuzz-seeds` writes real traces to the corpus.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(t) = pfnscope_trace::read_trace_bytes(data) {
        // Touch what readers use, so decoding bugs behind lazy paths surface too.
        let _ = t.counters();
        let _ = t.events().filter_map(|r| r.latency_ns).max();
    }
});
