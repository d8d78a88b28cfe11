//! Workloads that drive the x86 fault path through real drivers (see `docs/` and issue 3), and
//! the table of hooks each one must reach ([`expect`]).

#[cfg(target_os = "linux")]
pub mod blocking;
pub mod bugzoo;
#[cfg(target_os = "linux")]
pub mod dax;
#[cfg(target_os = "linux")]
pub mod drm;
pub mod expect;
pub mod expectation;
#[cfg(target_os = "linux")]
pub mod sys;
#[cfg(target_os = "linux")]
pub mod workloads;
#[cfg(target_os = "linux")]
pub mod zoo;
