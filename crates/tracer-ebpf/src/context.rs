//! The generic halves of every function hook: `enter` stashes the call, `leave` completes and
//! emits it. A per-task stack of open call ids links nested calls (a PFN insert inside a fault,
//! a `memtype_free` inside `untrack_pfn`) to the context they ran in.

use core::ffi::c_void;

use aya_ebpf::{
    EbpfContext,
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_smp_processor_id, bpf_ktime_get_ns, generated as helper,
    },
};
use aya_log_ebpf::warn;
use pfnscope_abi::{Event, HookSpec, MAX_ARGS, MAX_DEPTH, NO_SLOT, Offsets, counter, flags};

use crate::{
    emit::emit,
    filter::{addr_allowed, process_allowed, vma_allowed},
    maps::{CALLS_LIVE, HOOK_SPECS, OPEN, SCRATCH, TASKS, TaskStack, bump, next_id, offsets},
    mem::{set, zero},
    stacks,
    vma::{read_u64_at, snapshot},
};

/// The pfn of a `struct page *`: its index in the vmemmap array, whose start is the kernel
/// variable `vmemmap_base` (x86-64 SPARSEMEM_VMEMMAP; arch/x86/mm/kaslr.c randomizes it).
/// All ones when it cannot be told: no kernel pointer ever reaches the trace.
#[inline(always)]
fn page_to_pfn(page: u64, o: &Offsets) -> u64 {
    if page == 0 || o.vmemmap_base == 0 || o.page_shift == 0 {
        return u64::MAX;
    }
    match read_u64_at(o.vmemmap_base, 0) {
        Some(base) if page >= base => (page - base) >> (o.page_shift & 63),
        _ => u64::MAX,
    }
}

#[inline(always)]
pub fn open_key(tid: u32, depth: u64) -> u64 {
    ((tid as u64) << 8) | depth
}

#[inline(always)]
pub fn spec(hook: u16) -> Option<&'static HookSpec> {
    let s = HOOK_SPECS.get(hook as u32)?;
    if s.enabled == 0 { None } else { Some(s) }
}

/// Fills the fields every event has. Returns None when the current task is filtered out.
#[inline(always)]
pub fn begin(hook: u16, mode: u8) -> Option<&'static mut Event> {
    begin_task(hook, mode).map(|(ev, _)| ev)
}

/// [`begin`], also returning the task id as the helper gave it: the event is per-CPU scratch,
/// and a program that can be preempted must not read the id back from it.
#[inline(always)]
pub fn begin_task(hook: u16, mode: u8) -> Option<(&'static mut Event, u32)> {
    let pid_tgid = bpf_get_current_pid_tgid();
    if !process_allowed((pid_tgid >> 32) as u32) {
        return None;
    }
    let ev = begin_at(hook, mode, pid_tgid, unsafe { bpf_ktime_get_ns() })?;
    read_comm(ev);
    Some((ev, pid_tgid as u32))
}

/// The current task's name, straight into the event: aya's wrapper returns an array that is
/// then copied byte by byte. On failure the helper clears the buffer itself.
#[inline(always)]
pub fn read_comm(ev: &mut Event) {
    unsafe {
        helper::bpf_get_current_comm(ev.comm.as_mut_ptr() as *mut c_void, ev.comm.len() as u32)
    };
}

/// [`begin`] for a caller that has already read the task ids and the clock, and filtered on
/// the process: with retpolines and SRSO's safe RET, every helper call costs tens of ns.
/// The caller fills `comm` (see [`read_comm`]).
#[inline(always)]
pub fn begin_at(hook: u16, mode: u8, pid_tgid: u64, now: u64) -> Option<&'static mut Event> {
    let tgid = (pid_tgid >> 32) as u32;
    let ev = unsafe { &mut *SCRATCH.get_ptr_mut(0)? };
    ev.ts_entry = now;
    ev.ts_exit = now;
    ev.pid = tgid;
    ev.tid = pid_tgid as u32;
    ev.cpu = unsafe { bpf_get_smp_processor_id() };
    ev.hook = hook;
    ev.mode = mode;
    ev.flags = 0;
    set(&mut ev.ret, 0);
    set(&mut ev.ptr_entry, 0);
    set(&mut ev.ptr_exit, 0);
    set(&mut ev.parent, 0);
    set(&mut ev.id, 0);
    set(&mut ev.offcpu_ns, 0);
    set(&mut ev.kstack, 0);
    set(&mut ev.ustack, 0);
    zero(&mut ev.vma);
    Some(ev)
}

/// The id of the innermost open call of the current task, for events that do not nest others.
#[inline(always)]
pub fn current_parent(tid: u32) -> u64 {
    if CALLS_LIVE.get(0).is_none_or(|v| *v == 0) {
        return 0;
    }
    match unsafe { TASKS.get(&tid) } {
        Some(s) if s.depth > 0 => s.top,
        _ => 0,
    }
}

/// The parent of a fault taken in user mode: none, as no kernel call of a task can be open
/// while it runs user code. A stack that still holds calls then leaked: their returns were
/// never seen (a fexit attached after its fentry fired, an LRU eviction). Left alone, every
/// later call of the task named the lost call as parent and could not be checked, for the
/// rest of the trace; so the stack is emptied here and the loss counted.
#[inline(always)]
pub fn user_mode_parent(tid: u32) -> u64 {
    if CALLS_LIVE.get(0).is_none_or(|v| *v == 0) {
        return 0;
    }
    if let Some(s) = TASKS.get_ptr_mut(&tid) {
        let s = unsafe { &mut *s };
        if s.depth > 0 {
            forget_open(tid, s.depth);
            s.depth = 0;
            s.top = 0;
            bump(counter::UNPAIRED);
        }
    }
    0
}

/// Drops a task's open calls, the innermost `depth` of them.
#[inline(always)]
fn forget_open(tid: u32, depth: u64) {
    for d in 0..MAX_DEPTH as u64 {
        if d >= depth {
            break;
        }
        let _ = OPEN.remove(&open_key(tid, d));
    }
}

/// A task's end: its stack goes with it, so a later task given the same id starts clean.
/// Calls still open here (an oops inside a probed call kills the task in it) never return.
#[inline(always)]
pub fn task_gone(tid: u32) {
    if CALLS_LIVE.get(0).is_none_or(|v| *v == 0) {
        return;
    }
    if let Some(s) = unsafe { TASKS.get(&tid) } {
        forget_open(tid, s.depth);
        let _ = TASKS.remove(&tid);
    }
}

/// Entry of a function hook. `arg(i)` yields argument slot `i` for the attach kind at hand.
#[inline(always)]
pub fn enter<C: EbpfContext>(ctx: &C, hook: u16, mode: u8, arg: impl Fn(u32) -> u64) {
    let Some(spec) = spec(hook) else { return };
    // See the check after the insert.
    let Some((ev, tid)) = begin_task(hook, mode) else {
        return;
    };
    let nargs = spec.nargs as u32;
    let mut i = 0;
    while i < MAX_ARGS as u32 {
        ev.args[i as usize] = if i < nargs { arg(i) } else { 0 };
        i += 1;
    }
    let o = offsets();
    // Not an Option: the payload of a `None` is undef, LLVM may spill it as a register that was
    // never written, and the verifier rejects the read ("R5 !read_ok").
    let (mut addr, mut has_addr) = (0u64, false);
    let mut vma_ptr = 0;
    if (spec.vma_slot as usize) < MAX_ARGS {
        vma_ptr = ev.args[spec.vma_slot as usize];
    } else if (spec.vmf_slot as usize) < MAX_ARGS {
        let vmf = ev.args[spec.vmf_slot as usize];
        vma_ptr = read_u64_at(vmf, o.vmf_vma).unwrap_or(0);
        // The vmf pointer itself is never written out: the slot carries vmf->address instead.
        let a = read_u64_at(vmf, o.vmf_address).unwrap_or(0);
        ev.args[spec.vmf_slot as usize] = a;
        (addr, has_addr) = (a, true);
    }
    if vma_ptr != 0 {
        if snapshot(vma_ptr, o, &mut ev.vma) {
            ev.flags |= flags::HAS_VMA;
            if !vma_allowed(ev.vma.flags) {
                return;
            }
        } else {
            bump(counter::READ_FAILED);
        }
    }
    if (spec.addr_slot as usize) < MAX_ARGS {
        (addr, has_addr) = (ev.args[spec.addr_slot as usize], true);
    }
    if has_addr && !addr_allowed(addr) {
        return;
    }
    if (spec.ptr_slot as usize) < MAX_ARGS {
        if let Some(v) = read_u64_at(ev.args[spec.ptr_slot as usize], 0) {
            ev.ptr_entry = v;
            ev.flags |= flags::HAS_PTR;
        }
    }
    if (spec.page_slot as usize) < MAX_ARGS {
        let slot = spec.page_slot as usize;
        ev.args[slot] = page_to_pfn(ev.args[slot], o);
    }

    let stack = match TASKS.get_ptr_mut(&tid) {
        Some(s) => s,
        None => {
            let fresh = TaskStack { depth: 0, top: 0 };
            if TASKS.insert(&tid, &fresh, 0).is_err() {
                return;
            }
            match TASKS.get_ptr_mut(&tid) {
                Some(s) => s,
                None => return,
            }
        }
    };
    let stack = unsafe { &mut *stack };
    let depth = stack.depth;
    if depth as usize >= MAX_DEPTH {
        // Only a leaked stack (returns never seen) gets this deep: say so once it happens.
        bump(counter::UNPAIRED);
        warn!(
            ctx,
            "pfnscope: task {} has {} probed calls open; call {} not recorded", tid, depth, hook
        );
        return;
    }
    ev.id = next_id(ev.cpu);
    if depth > 0 {
        ev.parent = stack.top;
    }
    let id = ev.id;
    let key = open_key(tid, depth);
    if OPEN.insert(&key, ev, 0).is_err() {
        return;
    }
    // fentry programs run with migration, not preemption, disabled: on a kernel that preempts
    // (lazy or full), another traced task can run a program on this CPU between `begin_at` and
    // the insert and overwrite the per-CPU scratch event. The copy in OPEN belongs to this task
    // alone, so it is ours only if it still names this task, hook and id. A mixed-up copy left
    // open would never meet its return (another hook's), and every later call of the task would
    // name it as parent.
    let ours = match OPEN.get_ptr(&key) {
        Some(o) => {
            let o = unsafe { &*o };
            o.tid == tid && o.hook == hook && o.id == id
        }
        None => false,
    };
    if ours {
        stack.depth = depth + 1;
        stack.top = id;
    } else {
        let _ = OPEN.remove(&key);
        bump(counter::UNPAIRED);
    }
}

/// Return of a function hook: completes the call stashed by `enter` and emits it.
#[inline(always)]
pub fn leave<C: EbpfContext>(ctx: &C, hook: u16, ret: u64) {
    let Some(spec) = spec(hook) else { return };
    let tid = bpf_get_current_pid_tgid() as u32;
    let Some(stack) = TASKS.get_ptr_mut(&tid) else {
        return;
    };
    let stack = unsafe { &mut *stack };
    let depth = stack.depth;
    if depth == 0 || depth as usize > MAX_DEPTH {
        return;
    }
    let key = open_key(tid, depth - 1);
    let Some(ev) = OPEN.get_ptr_mut(&key) else {
        bump(counter::UNPAIRED);
        warn!(
            ctx,
            "pfnscope: return of hook {} on task {} without its entry (evicted?)", hook, tid
        );
        stack.depth = depth - 1;
        stack.top = 0; // the lost entry knew its parent; nothing else does
        return;
    };
    let ev = unsafe { &mut *ev };
    // The innermost open call is not ours: our entry was filtered out, so there is nothing to do.
    if ev.hook != hook {
        return;
    }
    stack.depth = depth - 1;
    stack.top = ev.parent;
    ev.ts_exit = unsafe { bpf_ktime_get_ns() };
    ev.ret = ret;
    ev.flags |= flags::HAS_RET;
    stacks::at_return(ctx, ev);
    if spec.ptr_slot != NO_SLOT && (spec.ptr_slot as usize) < MAX_ARGS {
        if let Some(v) = read_u64_at(ev.args[spec.ptr_slot as usize], 0) {
            ev.ptr_exit = v;
        }
    }
    emit(ev);
    let _ = OPEN.remove(&key);
}
