//! Fault-latency tables, plots and an HTML report from pfnscope traces.
//!
//! A trace (see `docs/trace-format.md`) is validated by [`pfnscope_trace`] and loaded into
//! polars batch by batch ([`load`]); a damaged tail is cut off and reported, not fatal. From
//! there:
//! - [`summary`]: polars lazy queries for latency percentiles per group, the `VM_FAULT_*`
//!   return mix, retries, PAT cache modes requested vs obtained and the tracer's losses;
//!   [`text`] prints them;
//! - [`series`] and [`plots`]: histograms, CDFs, a latency heatmap and event rates drawn with
//!   plotters to PNG and SVG; [`report`] puts them with the tables and the replay's results
//!   ([`replay`]) into a self-contained `index.html` ([`html`]);
//! - [`export`]: the trace as Parquet, CSV or JSON; [`diff`]: two traces compared per driver
//!   with a bootstrap test for noise.
//!
//! ```
//! use analyzer::{GroupBy, LoadOptions, Summary, Trace};
//! use pfnscope_trace::{Record, TraceMeta, TraceWriter};
//!
//! let dir = std::env::temp_dir().join(format!("analyzer-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir).unwrap();
//! let path = dir.join("t.arrows");
//! let mut w = TraceWriter::create(&path, &TraceMeta::default()).unwrap();
//! for (i, lat) in [900u64, 1_100, 1_300, 40_000].into_iter().enumerate() {
//!     w.push(&Record {
//!         id: i as u64 + 1,
//!         ts_ns: 1_000_000 * i as u64,
//!         latency_ns: Some(lat),
//!         hook: "handle_mm_fault".into(),
//!         driver: Some("bochs".into()),
//!         vma_flags: Some(0x4000 | 0x400),
//!         fault_flags: Some(0x41),
//!         ret: Some(0x100),
//!         ..Default::default()
//!     });
//! }
//! w.finish().unwrap();
//!
//! let trace = Trace::load(&path, &LoadOptions::default()).unwrap();
//! let s = Summary::compute(&trace, GroupBy::Driver).unwrap();
//! let bochs = s.latency.iter().find(|r| r.group == "bochs").unwrap();
//! assert_eq!(bochs.count, 4);
//! assert_eq!(bochs.max_ns, Some(40_000));
//! assert_eq!(s.vm_fault_mix[0].bits, vec![("NOPAGE".to_string(), 4)]);
//! ```

mod arrow_ffi;
mod compact;
pub mod diff;
pub mod error;
pub mod export;
pub mod html;
pub mod load;
pub mod perfetto;
pub mod plots;
pub mod replay;
pub mod report;
pub mod series;
pub mod summary;
pub mod text;
pub mod why;

pub use error::{AnalyzerError, Result};
pub use load::{Columns, LoadOptions, Trace};
pub use replay::Replay;
pub use report::{ReportOptions, write_report};
pub use summary::{GroupBy, Summary};
