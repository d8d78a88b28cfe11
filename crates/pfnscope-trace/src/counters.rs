//! The tracer's loss counters.

/// `hook` of the rows carrying cumulative per-CPU counters (written at every flush; the last row
/// per CPU holds the final values).
pub const COUNTERS_HOOK: &str = "pfnscope:counters";
