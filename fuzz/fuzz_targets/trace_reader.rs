//! Any bytes handed to the trace reader give a trace, a damaged trace or an error: never a panic,
//! a hang or unbounded memory. Seeds: copy real traces into `fuzz/corpus/trace_reader/` (the test
//! box leaves them under `$CARGO_TARGET_DIR/testbox/`); small ones (a few batches) fuzz fastest.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(t) = pfnscope_trace::read_trace_bytes(data) {
        // Touch what readers use, so decoding bugs behind lazy paths surface too.
        let _ = t.counters();
        let _ = t.events().filter_map(|r| r.latency_ns).max();
    }
});
