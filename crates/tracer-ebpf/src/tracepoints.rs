//! Tracepoint programs. `exceptions:page_fault_*` are the rung that still works where fentry and
//! kprobes do not (the development VM): entry only, no return value or latency, but the faulting
//! vma can still be found with `bpf_find_vma` (5.17+) from the BTF-typed form.

use core::{ffi::c_void, mem::MaybeUninit};

use aya_ebpf::{
    EbpfContext,
    helpers::{
        bpf_get_current_pid_tgid, bpf_ktime_get_ns,
        generated::{bpf_find_vma, bpf_get_current_task_btf},
    },
    macros::{btf_tracepoint, raw_tracepoint, tracepoint},
    programs::{BtfTracePointContext, RawTracePointContext, TracePointContext},
};
use pfnscope_abi::{COMM_LEN, Event, Hook, Mode, Offsets, VmaSnapshot, flags};

use crate::{
    context::{begin, begin_at, current_parent, read_comm, spec, task_gone, user_mode_parent},
    emit::emit,
    filter::{addr_allowed, process_allowed, vma_allowed},
    maps::{
        COMM_EPOCH, LAST_FAULT, TGIDS, VMA_CACHE, VmaCache, comm_epoch, filter, in_stack_walk,
        next_id, offsets,
    },
    mem::{copy, zero_in},
    stacks,
    vma::snapshot,
};

/// How long a cached vma snapshot stands in for a fresh lookup: a vma changed by munmap/mremap
/// within this window may be reported as it was.
const VMA_CACHE_NS: u64 = 5_000_000;

/// `bpf_find_vma` callback: runs with the mmap lock held, so the vma is read here.
#[inline(never)]
extern "C" fn found_vma(_task: *mut c_void, vma: *mut c_void, out: *mut c_void) -> i64 {
    let out = unsafe { &mut *(out as *mut VmaSnapshot) };
    snapshot(vma as u64, offsets(), out);
    0
}

#[inline(always)]
fn page_fault<C: EbpfContext>(
    ctx: &C,
    hook_id: u16,
    mode: u8,
    address: u64,
    ip: u64,
    error_code: u64,
    find_vma: bool,
) {
    if spec(hook_id).is_none() || !addr_allowed(address) || in_stack_walk() {
        return;
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    let now = unsafe { bpf_ktime_get_ns() };
    let mut vma_slot = MaybeUninit::<VmaSnapshot>::uninit();
    let vma = zero_in(&mut vma_slot);
    let slot = if find_vma {
        VMA_CACHE.get_ptr_mut(0)
    } else {
        None
    };
    let mut hit = false;
    if let Some(c) = slot {
        let c = unsafe { &*c };
        if c.tgid == tgid as u64
            && now.wrapping_sub(c.ts) < VMA_CACHE_NS
            && address >= c.vma.start
            && address < c.vma.end
        {
            copy(vma, &c.vma);
            hit = true;
        }
    }
    // An entry is only made for a process that passed the filter, so a hit answers the filter
    // too; a name filter is asked every time (exec renames the task within the window). A miss
    // filters before the vma lookup: an untraced process must not pay for one.
    if !(hit && filter().by_comm == 0) && !process_allowed(tgid) {
        return;
    }
    if let (false, Some(c)) = (hit, slot) {
        unsafe {
            let task = bpf_get_current_task_btf();
            bpf_find_vma(
                task as *mut _,
                address,
                found_vma as *mut c_void,
                vma as *mut VmaSnapshot as *mut c_void,
                0,
            );
        }
        if vma.start != 0 {
            let c = unsafe { &mut *c };
            c.ts = now;
            c.tgid = tgid as u64;
            copy(&mut c.vma, vma);
        }
    }
    if vma.start != 0 && !vma_allowed(vma.flags) {
        return;
    }
    let Some(ev) = begin_at(hook_id, mode, pid_tgid, now) else {
        return;
    };
    comm(ev, slot, pid_tgid as u32, now);
    ev.args[0] = address;
    ev.args[1] = ip;
    ev.args[2] = error_code;
    if vma.start != 0 {
        copy(&mut ev.vma, vma);
        ev.flags |= flags::HAS_VMA;
    }
    ev.parent = if hook_id == Hook::PageFaultUser as u16 {
        user_mode_parent(ev.tid)
    } else {
        current_parent(ev.tid)
    };
    ev.id = next_id(ev.cpu);
    stacks::at_entry(ctx, ev);
    // Where no function hook attached, an off-CPU episode on this CPU before anything else
    // faults here may be inside this fault (`offcpu::switched_out`).
    if let Some(l) = LAST_FAULT.get_ptr_mut(0) {
        let l = unsafe { &mut *l };
        l.tid = ev.tid as u64;
        l.id = ev.id;
    }
    emit(ev);
}

// The name sits on a word boundary of the event, so it can be copied as two words.
const _: () = assert!(core::mem::offset_of!(Event, comm) % 8 == 0 && COMM_LEN == 16);

/// Fills the task name: from this CPU's cache when the same thread faulted here last, within
/// the cache window and with no task renamed since; else from the kernel, refreshing the cache.
/// `bpf_get_current_comm` was ~15% of a fault event's cost.
#[inline(always)]
fn comm(ev: &mut Event, slot: Option<*mut VmaCache>, tid: u32, now: u64) {
    let (Some(c), Some(epoch)) = (slot, comm_epoch()) else {
        read_comm(ev);
        return;
    };
    let c = unsafe { &mut *c };
    let words = unsafe { &mut *(ev.comm.as_mut_ptr() as *mut [u64; 2]) };
    if c.comm_tid == tid as u64
        && c.comm_epoch == epoch
        && now.wrapping_sub(c.comm_ts) < VMA_CACHE_NS
    {
        words[0] = c.comm[0];
        words[1] = c.comm[1];
        return;
    }
    read_comm(ev);
    let words = unsafe { &*(ev.comm.as_ptr() as *const [u64; 2]) };
    c.comm[0] = words[0];
    c.comm[1] = words[1];
    c.comm_tid = tid as u64;
    c.comm_epoch = epoch;
    c.comm_ts = now;
}

/// Every rename moves the epoch, so no cached name outlives its task's name. Not atomic: two
/// racing renames may add one between them, which still moves it.
#[raw_tracepoint(tracepoint = "task_rename")]
pub fn task_rename_raw(_ctx: RawTracePointContext) -> u32 {
    if let Some(e) = COMM_EPOCH.get_ptr_mut(0) {
        unsafe { *e = (*e).wrapping_add(1) };
    }
    0
}

// tp_btf arguments: (unsigned long address, struct pt_regs *regs, unsigned long error_code).
#[btf_tracepoint(function = "page_fault_user")]
pub fn page_fault_user_btf(ctx: BtfTracePointContext) -> u32 {
    page_fault(
        &ctx,
        Hook::PageFaultUser as u16,
        Mode::TpBtf as u8,
        ctx.arg(0),
        0,
        ctx.arg(2),
        true,
    );
    0
}

#[btf_tracepoint(function = "page_fault_kernel")]
pub fn page_fault_kernel_btf(ctx: BtfTracePointContext) -> u32 {
    page_fault(
        &ctx,
        Hook::PageFaultKernel as u16,
        Mode::TpBtf as u8,
        ctx.arg(0),
        0,
        ctx.arg(2),
        true,
    );
    0
}

#[raw_tracepoint(tracepoint = "page_fault_user")]
pub fn page_fault_user_raw(ctx: RawTracePointContext) -> u32 {
    page_fault(
        &ctx,
        Hook::PageFaultUser as u16,
        Mode::RawTp as u8,
        ctx.arg(0),
        0,
        ctx.arg(2),
        false,
    );
    0
}

#[raw_tracepoint(tracepoint = "page_fault_kernel")]
pub fn page_fault_kernel_raw(ctx: RawTracePointContext) -> u32 {
    page_fault(
        &ctx,
        Hook::PageFaultKernel as u16,
        Mode::RawTp as u8,
        ctx.arg(0),
        0,
        ctx.arg(2),
        false,
    );
    0
}

#[inline(always)]
fn tp_field(ctx: &TracePointContext, off: u32) -> u64 {
    if off == Offsets::UNKNOWN {
        return 0;
    }
    unsafe { ctx.read_at::<u64>(off as usize) }.unwrap_or(0)
}

#[inline(always)]
fn tp_field_u32(ctx: &TracePointContext, off: u32) -> u64 {
    if off == Offsets::UNKNOWN {
        return 0;
    }
    unsafe { ctx.read_at::<u32>(off as usize) }
        .map(|v| v as u64)
        .unwrap_or(0)
}

/// The classic tracepoint form: fields at the offsets its format file gives.
#[inline(always)]
fn page_fault_tp(ctx: &TracePointContext, hook_id: u16) {
    let o = offsets();
    page_fault(
        ctx,
        hook_id,
        Mode::Tracepoint as u8,
        tp_field(ctx, o.tp_fault_address),
        tp_field(ctx, o.tp_fault_ip),
        tp_field(ctx, o.tp_fault_error_code),
        false,
    );
}

#[tracepoint(category = "exceptions", name = "page_fault_user")]
pub fn page_fault_user_tp(ctx: TracePointContext) -> u32 {
    page_fault_tp(&ctx, Hook::PageFaultUser as u16);
    0
}

#[tracepoint(category = "exceptions", name = "page_fault_kernel")]
pub fn page_fault_kernel_tp(ctx: TracePointContext) -> u32 {
    page_fault_tp(&ctx, Hook::PageFaultKernel as u16);
    0
}

/// Fields: pfn, i_ino, index, s_dev (the same in every supported kernel).
#[tracepoint(category = "filemap", name = "mm_filemap_delete_from_page_cache")]
pub fn mm_filemap_delete_from_page_cache_tp(ctx: TracePointContext) -> u32 {
    filemap_op(&ctx, Hook::FilemapDelete);
    0
}

/// The add's event class is the delete's (mm_filemap_op_page_cache): same fields, offsets.
#[tracepoint(category = "filemap", name = "mm_filemap_add_to_page_cache")]
pub fn mm_filemap_add_to_page_cache_tp(ctx: TracePointContext) -> u32 {
    filemap_op(&ctx, Hook::FilemapAdd);
    0
}

#[inline(always)]
fn filemap_op(ctx: &TracePointContext, hook: Hook) {
    if spec(hook as u16).is_none() {
        return;
    }
    let Some(ev) = begin(hook as u16, Mode::Tracepoint as u8) else {
        return;
    };
    let o = offsets();
    ev.args[0] = tp_field(ctx, o.tp_filemap_pfn);
    ev.args[1] = tp_field(ctx, o.tp_filemap_ino);
    ev.args[2] = tp_field(ctx, o.tp_filemap_index);
    ev.args[3] = tp_field_u32(ctx, o.tp_filemap_dev);
    ev.parent = current_parent(ev.tid);
    ev.id = next_id(ev.cpu);
    emit(ev);
}

/// A traced task exiting; the task is the event's own.
#[tracepoint(category = "sched", name = "sched_process_exit")]
pub fn sched_process_exit_tp(_ctx: TracePointContext) -> u32 {
    if spec(Hook::SchedProcessExit as u16).is_none() {
        return 0;
    }
    let Some(ev) = begin(Hook::SchedProcessExit as u16, Mode::Tracepoint as u8) else {
        return 0;
    };
    ev.parent = current_parent(ev.tid);
    ev.id = next_id(ev.cpu);
    let tid = ev.tid;
    emit(ev);
    task_gone(tid);
    0
}

/// Extends the traced set to children (so `record -- CMD` follows the whole tree) and records
/// the fork itself, the context of `track_pfn_copy` and `copy_page_range`.
#[tracepoint(category = "sched", name = "sched_process_fork")]
pub fn sched_process_fork_tp(ctx: TracePointContext) -> u32 {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if !process_allowed(tgid) {
        return 0;
    }
    let o = offsets();
    let child = tp_field_u32(&ctx, o.tp_fork_child_pid) as u32;
    let f = filter();
    if f.by_tgid != 0 && f.follow_children != 0 && child != 0 {
        let _ = TGIDS.insert(&child, &1u8, 0);
    }
    if spec(Hook::SchedProcessFork as u16).is_none() {
        return 0;
    }
    let Some(ev) = begin(Hook::SchedProcessFork as u16, Mode::Tracepoint as u8) else {
        return 0;
    };
    ev.args[0] = tp_field_u32(&ctx, o.tp_fork_parent_pid);
    ev.args[1] = child as u64;
    ev.parent = current_parent(ev.tid);
    ev.id = next_id(ev.cpu);
    emit(ev);
    0
}
