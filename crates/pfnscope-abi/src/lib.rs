//! The words both ends of pfnscope share, defined once: the binary contract between
//! `tracer-ebpf` (kernel side) and `tracer` (user side), and the domain vocabulary every stage
//! after them uses.
//!
//! - [`hook`]: the hook table ([`Hook`], its arguments, return kinds and kernels);
//! - [`mode`]: attach modes ([`Mode`]), the rungs of the attach ladder;
//! - [`cache`]: cache modes ([`Cache`]) and the PAT table;
//! - [`bits`]: kernel bit values (fault flags, `VM_FAULT_*`, PTE bits, `vm_flags`);
//! - [`kernel`]: the release parser and the per-kernel facts table.
//!
//! Strings exist only where a trace or a command line is read or written: `name()` and
//! `parse()` on each type are the one spelling. The event ABI below is `#[repr(C)]`, built from
//! fixed-width integers only (no `bool`, no implicit padding) so the same bytes mean the same
//! thing on both sides. The eBPF programs stay generic: they record raw argument slots, and user
//! space decides what each slot means per kernel from the hook table. That keeps kernel-version
//! differences out of the eBPF code entirely.
//!
//! ```
//! use pfnscope_abi::{Cache, Hook, PatTable};
//! let h = Hook::parse("track_pfn_insert").unwrap();
//! assert!(h.def().kernels.includes(6, 12) && !h.def().kernels.includes(6, 16));
//! assert_eq!(PatTable::LINUX.of_prot(0x2f), Cache::WC);
//! ```
#![no_std]

pub mod bits;
pub mod cache;
pub mod hook;
pub mod kernel;
pub mod mode;

pub use cache::{CACHE_MODES, Cache, PatTable};
pub use hook::Hook;
pub use mode::Mode;

/// Argument slots recorded per call. No probed function takes more than six.
pub const MAX_ARGS: usize = 6;
pub const COMM_LEN: usize = 16;
/// Depth of the per-task stack of open probed calls used to link nested calls to their context.
pub const MAX_DEPTH: usize = 8;
/// Sentinel for "no such slot" in [`HookSpec`].
pub const NO_SLOT: u8 = 0xff;

/// `Event::flags` bits.
pub mod flags {
    /// `ret` holds the function's return value (the call was seen returning).
    pub const HAS_RET: u8 = 1 << 0;
    /// `vma` was read successfully.
    pub const HAS_VMA: u8 = 1 << 1;
    /// `ptr_entry` / `ptr_exit` were read successfully.
    pub const HAS_PTR: u8 = 1 << 2;
    /// An off-CPU episode whose `parent` is the task's last fault entry, which it may have left
    /// already (where no function hook attached, the programs cannot see a fault's end): user
    /// space keeps it only if its kernel stack runs through the fault entry.
    pub const IN_CALL_UNSURE: u8 = 1 << 3;
}

/// A snapshot of a `vm_area_struct`, read at the call's entry with offsets from the kernel's BTF.
/// `ptr`, `vm_ops`, `vm_file` and `mm` are kernel addresses: user space turns them into per-trace
/// ids or symbol names before anything is written to disk.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VmaSnapshot {
    pub ptr: u64,
    pub start: u64,
    pub end: u64,
    pub pgoff: u64,
    pub flags: u64,
    pub page_prot: u64,
    pub vm_ops: u64,
    pub vm_file: u64,
    pub mm: u64,
}

/// One record in the ring buffer: a whole call (entry and return) or one tracepoint hit.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Event {
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) at entry.
    pub ts_entry: u64,
    /// At return; equal to `ts_entry` for tracepoint hits.
    pub ts_exit: u64,
    /// Unique within one recording.
    pub id: u64,
    /// `id` of the innermost probed call open on the same task when this one started, or 0.
    pub parent: u64,
    /// Raw argument slots (for tracepoints: the fields named by the hook table).
    pub args: [u64; MAX_ARGS],
    pub ret: u64,
    /// The u64 behind the argument slot `HookSpec::ptr_slot` (a `pgprot_t *`), before and after.
    pub ptr_entry: u64,
    pub ptr_exit: u64,
    /// Time the task spent switched out between entry and return (`sched:sched_switch`
    /// episodes added up; 0 when none or when off-CPU time is not traced).
    pub offcpu_ns: u64,
    /// Stack ids in the `STACKS` map plus one (0: no stack was taken): the kernel stack and
    /// the user stack of the call, taken at its return when it was slower than the stack
    /// threshold ([`StackConfig`]); for an off-CPU episode, the kernel stack at switch-out.
    pub kstack: u32,
    pub ustack: u32,
    pub vma: VmaSnapshot,
    pub pid: u32,
    pub tid: u32,
    pub cpu: u32,
    pub hook: u16,
    pub mode: u8,
    pub flags: u8,
    pub comm: [u8; COMM_LEN],
}

/// Per-hook instructions to the generic eBPF programs, filled by user space from the hook table
/// and the kernel's BTF (array map `HOOK_SPECS`, indexed by hook id).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HookSpec {
    /// Number of arguments of the function in this kernel; fexit finds the return value there.
    pub nargs: u8,
    /// Slot holding a `struct vm_area_struct *`, or [`NO_SLOT`].
    pub vma_slot: u8,
    /// Slot holding a `struct vm_fault *` (its `vma` and `address` are read), or [`NO_SLOT`].
    pub vmf_slot: u8,
    /// Slot holding the user address the call is about (for the address filter), or [`NO_SLOT`].
    pub addr_slot: u8,
    /// Slot holding a pointer to a u64 to read at entry and at return, or [`NO_SLOT`].
    pub ptr_slot: u8,
    /// Non-zero when the hook is wanted; programs of unwanted hooks return at once.
    pub enabled: u8,
    /// Slot holding a `struct page *`, which the programs replace with its pfn (never a
    /// kernel pointer in the trace), or [`NO_SLOT`].
    pub page_slot: u8,
    pub _pad: [u8; 1],
}

impl HookSpec {
    pub const DISABLED: HookSpec = HookSpec {
        nargs: 0,
        vma_slot: NO_SLOT,
        vmf_slot: NO_SLOT,
        addr_slot: NO_SLOT,
        ptr_slot: NO_SLOT,
        enabled: 0,
        page_slot: NO_SLOT,
        _pad: [0; 1],
    };
}

/// Struct field offsets resolved from the running kernel's BTF (Rust eBPF has no CO-RE).
/// `u32::MAX` marks a field this kernel does not have.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Offsets {
    pub vma_start: u32,
    pub vma_end: u32,
    pub vma_pgoff: u32,
    pub vma_flags: u32,
    pub vma_page_prot: u32,
    pub vma_ops: u32,
    pub vma_file: u32,
    pub vma_mm: u32,
    pub vmf_vma: u32,
    pub vmf_address: u32,
    /// Classic tracepoint record offsets (from the tracefs `format` files).
    pub tp_fault_address: u32,
    pub tp_fault_ip: u32,
    pub tp_fault_error_code: u32,
    pub tp_filemap_pfn: u32,
    pub tp_filemap_ino: u32,
    pub tp_filemap_index: u32,
    pub tp_filemap_dev: u32,
    pub tp_fork_parent_pid: u32,
    pub tp_fork_child_pid: u32,
    /// log2 of `sizeof(struct page)`, 0 when unknown: a page's pfn is its index in the
    /// vmemmap array (x86-64 SPARSEMEM_VMEMMAP).
    pub page_shift: u32,
    /// `struct file`'s `f_op`: names the driver of a vma still inside its `->mmap`.
    pub file_f_op: u32,
    /// Keeps the u64s below aligned without hidden padding.
    pub reserved: u32,
    /// Address of the kernel variable `vmemmap_base` (arch/x86/mm/kaslr.c: the array's start,
    /// randomized with the rest of the direct map), 0 when kallsyms does not name it.
    pub vmemmap_base: u64,
    /// `task_struct`'s `pid` (the thread id) and `tgid`: the `sched_switch` and
    /// `sched_waking` programs read the tasks they are handed.
    pub task_pid: u32,
    pub task_tgid: u32,
    /// The empty `vm_operations_struct` a vma has until its driver's `->mmap` sets its own
    /// (`vma_dummy_vm_ops`, mm/vma_init.c; up to 6.1 a `dummy_vm_ops` static in each file that
    /// inlines `vma_init`), 0 for unused slots. A vma that has it is named by its file's
    /// `f_op` instead: a driver's `vm_insert_page` or `remap_pfn_range` in `->mmap` would
    /// otherwise belong to no driver.
    pub dummy_vm_ops: [u64; DUMMY_VM_OPS],
}

/// Slots for [`Offsets::dummy_vm_ops`].
pub const DUMMY_VM_OPS: usize = 4;

impl Offsets {
    pub const UNKNOWN: u32 = u32::MAX;
    pub const NONE: Offsets = Offsets {
        vma_start: u32::MAX,
        vma_end: u32::MAX,
        vma_pgoff: u32::MAX,
        vma_flags: u32::MAX,
        vma_page_prot: u32::MAX,
        vma_ops: u32::MAX,
        vma_file: u32::MAX,
        vma_mm: u32::MAX,
        vmf_vma: u32::MAX,
        vmf_address: u32::MAX,
        tp_fault_address: u32::MAX,
        tp_fault_ip: u32::MAX,
        tp_fault_error_code: u32::MAX,
        tp_filemap_pfn: u32::MAX,
        tp_filemap_ino: u32::MAX,
        tp_filemap_index: u32::MAX,
        tp_filemap_dev: u32::MAX,
        tp_fork_parent_pid: u32::MAX,
        tp_fork_child_pid: u32::MAX,
        page_shift: 0,
        file_f_op: u32::MAX,
        reserved: 0,
        vmemmap_base: 0,
        task_pid: u32::MAX,
        task_tgid: u32::MAX,
        dummy_vm_ops: [0; DUMMY_VM_OPS],
    };
}

/// What the programs let through. Process selection works on thread-group ids in the `TGIDS`
/// map, which the fork tracepoint extends to children so `record -- CMD` follows a whole tree.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Filter {
    /// Non-zero: only tgids present in `TGIDS` are traced.
    pub by_tgid: u8,
    /// Non-zero: only tasks whose comm equals `comm` are traced.
    pub by_comm: u8,
    /// Non-zero: the fork tracepoint adds children of traced tgids to `TGIDS`.
    pub follow_children: u8,
    pub _pad: [u8; 5],
    pub comm: [u8; COMM_LEN],
    /// Non-zero: calls on a vma are kept only when `vm_flags & vma_flags_mask != 0`.
    pub vma_flags_mask: u64,
    /// Calls about a user address are kept only when `addr_lo <= address < addr_hi`.
    pub addr_lo: u64,
    pub addr_hi: u64,
    /// The collector's own tgid, never traced (it would trace its own writes in `-a` mode).
    pub self_tgid: u32,
    pub _pad2: u32,
}

impl Filter {
    pub const ALL: Filter = Filter {
        by_tgid: 0,
        by_comm: 0,
        follow_children: 0,
        _pad: [0; 5],
        comm: [0; COMM_LEN],
        vma_flags_mask: 0,
        addr_lo: 0,
        addr_hi: u64::MAX,
        self_tgid: 0,
        _pad2: 0,
    };
}

/// When the programs take stacks (a read-only global, `STACK_CONFIG`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StackConfig {
    /// A call whose entry-to-return time is at least this gets its kernel and user stacks,
    /// taken at its return; [`StackConfig::OFF`]'s `u64::MAX`: never. Deciding at the return
    /// keeps fast calls free of the unwind.
    pub min_ns: u64,
    /// Non-zero: also take the stacks of entry-only tracepoint faults (`--stacks=all`; they
    /// have no latency to compare).
    pub at_entry: u8,
    pub _pad: [u8; 7],
}

impl StackConfig {
    pub const OFF: StackConfig = StackConfig {
        min_ns: u64::MAX,
        at_entry: 0,
        _pad: [0; 7],
    };
}

/// Frames kept per stack (the kernel's `PERF_MAX_STACK_DEPTH`, what `STACKS` stores).
pub const MAX_STACK_FRAMES: usize = 127;

/// `Event::args` of a `sched:sched_switch` row (an off-CPU episode inside a probed call).
pub mod episode {
    /// The waker's thread and process id (0: woken by no traced wakeup, e.g. preempted).
    pub const WAKER_TID: usize = 0;
    pub const WAKER_PID: usize = 1;
    /// 1 when the task was preempted (still runnable), 0 when it blocked.
    pub const PREEMPTED: usize = 2;
    /// CLOCK_MONOTONIC of the wakeup, 0 when none was seen.
    pub const WAKE_TS: usize = 3;
    /// The waker's name, 16 bytes in two slots.
    pub const WAKER_COMM: usize = 4;
}

/// Per-CPU counters (array map `COUNTERS`, one slot per index below).
pub mod counter {
    /// Ring buffer full: an event was lost.
    pub const DROPPED: u32 = 0;
    /// An entry found no room in the per-task stack, or a return found no matching entry.
    pub const UNPAIRED: u32 = 1;
    /// Reading kernel memory for a vma snapshot failed.
    pub const READ_FAILED: u32 = 2;
    pub const COUNT: u32 = 3;
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are repr(C), made of integers only, without padding.
    unsafe impl aya::Pod for super::Event {}
    unsafe impl aya::Pod for super::HookSpec {}
    unsafe impl aya::Pod for super::Offsets {}
    unsafe impl aya::Pod for super::Filter {}
    unsafe impl aya::Pod for super::StackConfig {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    // The sizes are the ABI: a change here must be a deliberate one on both sides.
    #[test]
    fn layout_has_no_padding() {
        assert_eq!(size_of::<VmaSnapshot>(), 9 * 8);
        assert_eq!(
            size_of::<Event>(),
            4 * 8 + MAX_ARGS * 8 + 4 * 8 + 8 + 9 * 8 + 16 + COMM_LEN
        );
        assert_eq!(size_of::<HookSpec>(), 8);
        assert_eq!(size_of::<Offsets>(), 22 * 4 + 8 + 2 * 4 + 4 * 8);
        assert_eq!(size_of::<StackConfig>(), 16);
        assert_eq!(size_of::<Filter>(), 8 + COMM_LEN + 3 * 8 + 8);
    }
}
