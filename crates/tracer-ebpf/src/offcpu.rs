//! Off-CPU time inside traced calls. `sched_switch` runs in `__schedule` while `current` is
//! still the task being switched out (kernel/sched/core.c), so its kernel stack there is where
//! it blocked; `sched_waking` runs in the waker's context (try_to_wake_up), so `current` is
//! who woke it. An episode opens at switch-out of a task inside a probed call and closes at
//! its switch-in: then it becomes a `sched:sched_switch` row, child of the call it blocked
//! in, and its time is added to every call the task had open.
//!
//! Where no function hook attached (the tracepoint rung), the programs cannot know whether a
//! task is still inside its fault: a task switched out on the CPU whose last fault entry was
//! its own is a candidate, flagged [`flags::IN_CALL_UNSURE`], and user space keeps the episode
//! only if its kernel stack runs through the fault entry.

use core::ffi::c_void;

use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_kernel,
        generated::{bpf_get_current_comm, bpf_get_smp_processor_id},
    },
    macros::btf_tracepoint,
    programs::BtfTracePointContext,
};
use pfnscope_abi::{Hook, MAX_DEPTH, Mode, Offsets, episode, flags};

use crate::{
    context::{open_key, spec},
    emit::emit,
    filter::process_allowed,
    maps::{
        BLOCKED, BLOCKED_SCRATCH, CALLS_LIVE, EPISODE_SCRATCH, LAST_FAULT, OPEN, TASKS, next_id,
        offsets,
    },
    mem::{set, zero},
    stacks::stack_id,
};

#[inline(always)]
fn read_u32_at(base: u64, off: u32) -> Option<u32> {
    if base == 0 || off == Offsets::UNKNOWN {
        return None;
    }
    unsafe { bpf_probe_read_kernel((base + off as u64) as *const u32) }.ok()
}

// tp_btf arguments: (bool preempt, struct task_struct *prev, struct task_struct *next,
// unsigned int prev_state) since 5.18.
#[btf_tracepoint(function = "sched_switch")]
pub fn sched_switch_btf(ctx: BtfTracePointContext) -> u32 {
    if spec(Hook::SchedSwitch as u16).is_none() {
        return 0;
    }
    let preempt: u64 = ctx.arg(0);
    let next: u64 = ctx.arg(2);
    let now = unsafe { bpf_ktime_get_ns() };
    switched_out(&ctx, now, preempt & 0xff != 0);
    if let Some(tid) = read_u32_at(next, offsets().task_pid) {
        switched_in(tid, now);
    }
    0
}

#[btf_tracepoint(function = "sched_waking")]
pub fn sched_waking_btf(ctx: BtfTracePointContext) -> u32 {
    let p: u64 = ctx.arg(0);
    let Some(tid) = read_u32_at(p, offsets().task_pid) else {
        return 0;
    };
    let Some(b) = BLOCKED.get_ptr_mut(&tid) else {
        return 0;
    };
    let b = unsafe { &mut *b };
    // The first wakeup is the one that ended the wait; later ones found it runnable.
    if b.wake_ts != 0 {
        return 0;
    }
    b.wake_ts = unsafe { bpf_ktime_get_ns() };
    b.waker = bpf_get_current_pid_tgid();
    unsafe {
        bpf_get_current_comm(
            b.waker_comm.as_mut_ptr() as *mut c_void,
            (b.waker_comm.len() * 8) as u32,
        )
    };
    0
}

#[inline(always)]
fn switched_out(ctx: &BtfTracePointContext, now: u64, preempted: bool) {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tid = pid_tgid as u32;
    if tid == 0 {
        return; // the idle task
    }
    let calls_live = CALLS_LIVE.get(0).is_some_and(|v| *v != 0);
    let (parent, depth, unsure) = if calls_live {
        match unsafe { TASKS.get(&tid) } {
            Some(s) if s.depth > 0 => (s.top, s.depth, false),
            _ => return,
        }
    } else {
        match LAST_FAULT.get(0) {
            Some(l) if l.tid == tid as u64 && l.id != 0 => (l.id, 0, true),
            _ => return,
        }
    };
    if !process_allowed((pid_tgid >> 32) as u32) {
        return;
    }
    let Some(b) = BLOCKED_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    let b = unsafe { &mut *b };
    zero(b);
    b.ts_out = now;
    b.parent = parent;
    b.depth = depth;
    b.tgid = (pid_tgid >> 32) as u32;
    b.preempted = preempted as u32;
    b.flags = if unsure {
        flags::IN_CALL_UNSURE as u32
    } else {
        0
    };
    b.kstack = stack_id(ctx, false);
    unsafe {
        bpf_get_current_comm(
            b.comm.as_mut_ptr() as *mut c_void,
            (b.comm.len() * 8) as u32,
        )
    };
    let _ = BLOCKED.insert(&tid, b, 0);
}

#[inline(always)]
fn switched_in(tid: u32, now: u64) {
    if tid == 0 {
        return;
    }
    let Some(b) = BLOCKED.get_ptr(&tid) else {
        return;
    };
    let b = unsafe { &*b };
    let off = now.wrapping_sub(b.ts_out);
    // Every call the task has open was waiting as long.
    let mut d = 0u64;
    while d < MAX_DEPTH as u64 {
        if d >= b.depth {
            break;
        }
        if let Some(o) = OPEN.get_ptr_mut(&open_key(tid, d)) {
            let o = unsafe { &mut *o };
            o.offcpu_ns = o.offcpu_ns.wrapping_add(off);
        }
        d += 1;
    }
    // The task runs on this CPU now: a second episode inside the same fault is found here.
    if b.flags & flags::IN_CALL_UNSURE as u32 != 0
        && let Some(l) = LAST_FAULT.get_ptr_mut(0)
    {
        let l = unsafe { &mut *l };
        l.tid = tid as u64;
        l.id = b.parent;
    }
    if let Some(ev) = EPISODE_SCRATCH.get_ptr_mut(0) {
        let ev = unsafe { &mut *ev };
        ev.ts_entry = b.ts_out;
        ev.ts_exit = now;
        ev.pid = b.tgid;
        ev.tid = tid;
        ev.cpu = unsafe { bpf_get_smp_processor_id() };
        ev.hook = Hook::SchedSwitch as u16;
        ev.mode = Mode::TpBtf as u8;
        ev.flags = flags::HAS_RET | b.flags as u8;
        set(&mut ev.ret, 0);
        set(&mut ev.ptr_entry, 0);
        set(&mut ev.ptr_exit, 0);
        ev.offcpu_ns = off;
        ev.kstack = b.kstack;
        set(&mut ev.ustack, 0);
        zero(&mut ev.vma);
        ev.args[episode::WAKER_TID] = b.waker & 0xffff_ffff;
        ev.args[episode::WAKER_PID] = b.waker >> 32;
        ev.args[episode::PREEMPTED] = b.preempted as u64;
        ev.args[episode::WAKE_TS] = b.wake_ts;
        ev.args[episode::WAKER_COMM] = b.waker_comm[0];
        ev.args[episode::WAKER_COMM + 1] = b.waker_comm[1];
        let comm = unsafe { &mut *(ev.comm.as_mut_ptr() as *mut [u64; 2]) };
        comm[0] = b.comm[0];
        comm[1] = b.comm[1];
        ev.parent = b.parent;
        ev.id = next_id(ev.cpu);
        emit(ev);
    }
    let _ = BLOCKED.remove(&tid);
}
