//! Maps and read-only globals shared by all programs.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf, StackTrace},
};
use pfnscope_abi::{Event, Filter, Hook, HookSpec, Offsets, StackConfig, counter};

/// User space raises this with `EbpfLoader::set_max_entries` (`--buffer-mb`).
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(16 << 20, 0);

#[map]
pub static HOOK_SPECS: Array<HookSpec> = Array::with_max_entries(Hook::COUNT as u32, 0);

/// Thread-group ids to trace when `Filter::by_tgid` is set.
#[map]
pub static TGIDS: HashMap<u32, u8> = HashMap::with_max_entries(8192, 0);

/// Per task: how many probed calls it is inside, and the innermost one's id.
#[map]
pub static TASKS: LruHashMap<u32, TaskStack> = LruHashMap::with_max_entries(16384, 0);

/// Calls that have entered but not returned, keyed by `(tid << 8) | depth`. LRU so a return we
/// never see (a missed kretprobe, a task killed mid-call) cannot fill the map for good.
#[map]
pub static OPEN: LruHashMap<u64, Event> = LruHashMap::with_max_entries(16384, 0);

/// Non-zero while a function hook is attached: only then can a tracepoint hit be inside a probed
/// call, and worth a `TASKS` lookup (a hash call, tens of ns with retpolines and SRSO).
#[map]
pub static CALLS_LIVE: Array<u32> = Array::with_max_entries(1, 0);

#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

/// An `Event` is too large for the 512-byte BPF stack: it is assembled here.
#[map]
pub static SCRATCH: PerCpuArray<Event> = PerCpuArray::with_max_entries(1, 0);

/// The off-CPU episode's own event buffer. Where the kernel is preemptible (7.2's Debian
/// build), a function hook's program can be switched out between filling `SCRATCH` and storing
/// it in `OPEN` (tracing programs run with migration, not preemption, disabled:
/// kernel/bpf/trampoline.c `__bpf_prog_enter_recur`), and `sched_switch` runs on that very
/// CPU at that very moment: sharing `SCRATCH` lost the interrupted call (counted unpaired).
#[map]
pub static EPISODE_SCRATCH: PerCpuArray<Event> = PerCpuArray::with_max_entries(1, 0);

#[map]
pub static NEXT_ID: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// The last vma `bpf_find_vma` found on this CPU, for which process, and when; and the name of
/// the last task that faulted here, under which rename epoch.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct VmaCache {
    pub ts: u64,
    pub tgid: u64,
    pub vma: pfnscope_abi::VmaSnapshot,
    pub comm_ts: u64,
    pub comm_tid: u64,
    pub comm_epoch: u64,
    pub comm: [u64; 2],
}

/// `[0]`: bumped by the `task:task_rename` program on every rename (exec, prctl(PR_SET_NAME),
/// a write to /proc/PID/comm). `[1]`: non-zero once user space has that program attached; only
/// then may a task name be reused from `VMA_CACHE`.
#[map]
pub static COMM_EPOCH: Array<u64> = Array::with_max_entries(2, 0);

/// The current rename epoch, or None when renames are not being watched.
#[inline(always)]
pub fn comm_epoch() -> Option<u64> {
    if *COMM_EPOCH.get(1)? == 0 {
        return None;
    }
    COMM_EPOCH.get(0).copied()
}

/// At the page-fault tracepoints IRQs are still off, so `bpf_find_vma` defers its
/// mmap_read_unlock to irq_work: a self-IPI per fault, ~7 us in a VM (the whole fault costs 2).
/// Faults of the same process in the vma found last on this CPU, within a few milliseconds,
/// reuse its snapshot instead. Per CPU and one slot: an array lookup the JIT inlines, where a
/// hash keyed by tgid cost ~300 ns per fault.
#[map]
pub static VMA_CACHE: PerCpuArray<VmaCache> = PerCpuArray::with_max_entries(1, 0);

/// Only the innermost id is kept: each stashed call remembers its own parent, so a return
/// restores `top` from the call it completes. (An array indexed by depth would need index
/// arithmetic that the 6.1 verifier cannot bound: "math between map_value pointer and register
/// with unbounded min value".)
#[repr(C)]
#[derive(Clone, Copy)]
pub struct TaskStack {
    pub depth: u64,
    pub top: u64,
}

#[unsafe(no_mangle)]
pub static OFFSETS: Offsets = Offsets::NONE;

#[unsafe(no_mangle)]
pub static FILTER: Filter = Filter::ALL;

/// Globals are patched into the object before load: read them through a volatile load so the
/// compiler cannot fold the defaults in.
#[inline(always)]
pub fn offsets() -> &'static Offsets {
    unsafe { &*core::ptr::read_volatile(&&OFFSETS) }
}

#[inline(always)]
pub fn filter() -> &'static Filter {
    unsafe { &*core::ptr::read_volatile(&&FILTER) }
}

#[inline(always)]
pub fn bump(idx: u32) {
    if let Some(c) = COUNTERS.get_ptr_mut(idx) {
        unsafe { *c += 1 };
    }
}

/// Unique per recording: the CPU in the top bits, a per-CPU sequence below.
#[inline(always)]
pub fn next_id(cpu: u32) -> u64 {
    match NEXT_ID.get_ptr_mut(0) {
        Some(n) => unsafe {
            *n += 1;
            ((cpu as u64 + 1) << 40) | *n
        },
        None => 0,
    }
}

/// Kernel and user stacks, by id (`Event::kstack`/`ustack` hold the id plus one). Identical
/// stacks share an id, so a blocking site hit a thousand times is stored once. A full bucket
/// loses the new stack rather than replace one an event in flight may still name
/// (no `BPF_F_REUSE_STACKID`).
#[map]
pub static STACKS: StackTrace = StackTrace::with_max_entries(16384, 0);

/// Set on this CPU while `bpf_get_stackid` walks a user stack. The walk reads user memory
/// with page faults disabled, and a frame pointer that is really data (code built without
/// frame pointers) can point at a page not yet present: the fault it takes fires
/// `page_fault_kernel` (arch/x86/mm/fault.c:trace_page_fault_entries runs before the
/// pagefault_disabled check) inside our own program. Those faults are the tracer's, not the
/// task's, and the nested program would reuse the per-CPU `SCRATCH` event the outer one is
/// filling: the fault programs ignore them while this is set.
#[map]
pub static IN_STACK_WALK: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

#[inline(always)]
pub fn in_stack_walk() -> bool {
    IN_STACK_WALK.get(0).is_some_and(|v| *v != 0)
}

#[unsafe(no_mangle)]
pub static STACK_CONFIG: StackConfig = StackConfig::OFF;

#[inline(always)]
pub fn stack_config() -> &'static StackConfig {
    unsafe { &*core::ptr::read_volatile(&&STACK_CONFIG) }
}

/// A task switched out inside a probed call (or, where no function hook attached, after its
/// last fault entry on this CPU), until it runs again.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Blocked {
    pub ts_out: u64,
    /// The innermost open call (the fault itself on the tracepoint rung).
    pub parent: u64,
    /// Open calls of the task then: each gets the episode's time added at switch-in.
    pub depth: u64,
    pub wake_ts: u64,
    /// The waker's `pid_tgid` as `bpf_get_current_pid_tgid` gives it.
    pub waker: u64,
    pub waker_comm: [u64; 2],
    pub comm: [u64; 2],
    pub tgid: u32,
    pub kstack: u32,
    pub preempted: u32,
    pub flags: u32,
}

#[map]
pub static BLOCKED: LruHashMap<u32, Blocked> = LruHashMap::with_max_entries(8192, 0);

/// The last fault entry each CPU saw (tracepoint rung): which thread, and the fault's id. A
/// task that blocks inside that fault does so on this CPU, before anything else runs here.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct LastFault {
    pub tid: u64,
    pub id: u64,
}

#[map]
pub static LAST_FAULT: PerCpuArray<LastFault> = PerCpuArray::with_max_entries(1, 0);

/// Scratch for a [`Blocked`] being built (kept off the 512-byte stack).
#[map]
pub static BLOCKED_SCRATCH: PerCpuArray<Blocked> = PerCpuArray::with_max_entries(1, 0);
