//! The words of an expectation: where a workload runs, and which rows of which hooks its trace
//! must have. Shared by the workload table ([`crate::expect`]) and the bug zoo's table
//! ([`crate::bugzoo`]); pure data.

use pfnscope_abi::Hook;
use pfnscope_abi::kernel::Series;

/// Where a workload runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// A Debian kernel under qemu, by the rule set it falls in: every hook kind attaches.
    Guest(Series),
    /// This machine's own kernel, where only tracepoints attach.
    Host,
}

/// A condition on the rows of one hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    /// At least one row.
    Any,
    /// At least one `vm_normal_page` row that returned no page (a raw PFN).
    NoPage,
    /// At least one `vm_normal_page` row that returned a page (e.g. a COWed copy).
    Page,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expect {
    /// The hook, or several: rows of any of them count (a function renamed between releases).
    pub hooks: &'static [Hook],
    pub check: Check,
}

/// Rows of `hook` count.
pub(crate) const fn any(hook: &'static Hook) -> Expect {
    Expect {
        hooks: std::slice::from_ref(hook),
        check: Check::Any,
    }
}
