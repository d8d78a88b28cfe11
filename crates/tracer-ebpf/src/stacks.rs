//! Stacks of slow calls, decided at the return: a call faster than the threshold costs one
//! compare; only a slow one pays for the unwind (`bpf_get_stackid`, a few microseconds).

use core::ffi::c_void;

use aya_ebpf::{EbpfContext, bindings::BPF_F_USER_STACK, helpers::generated::bpf_get_stackid};
use pfnscope_abi::Event;

use crate::maps::{IN_STACK_WALK, STACKS, stack_config};

/// The current task's stack in `STACKS`, as its id plus one; 0 when it could not be taken
/// (no frames, a full bucket).
#[inline(always)]
pub fn stack_id<C: EbpfContext>(ctx: &C, user: bool) -> u32 {
    let flags = if user { BPF_F_USER_STACK as u64 } else { 0 };
    // See `maps::IN_STACK_WALK`: faults the walk takes are ours, not the task's.
    let guard = IN_STACK_WALK.get_ptr_mut(0);
    if let Some(g) = guard {
        unsafe { *g = 1 };
    }
    let id = unsafe { bpf_get_stackid(ctx.as_ptr(), &STACKS as *const _ as *mut c_void, flags) };
    if let Some(g) = guard {
        unsafe { *g = 0 };
    }
    if id < 0 {
        0
    } else {
        (id as u32).wrapping_add(1)
    }
}

/// At a call's return: both stacks when it took at least the threshold.
#[inline(always)]
pub fn at_return<C: EbpfContext>(ctx: &C, ev: &mut Event) {
    let min = stack_config().min_ns;
    if ev.ts_exit.wrapping_sub(ev.ts_entry) < min {
        return;
    }
    ev.kstack = stack_id(ctx, false);
    ev.ustack = stack_id(ctx, true);
}

/// At an entry-only fault tracepoint: both stacks, only with `--stacks=all`.
#[inline(always)]
pub fn at_entry<C: EbpfContext>(ctx: &C, ev: &mut Event) {
    if stack_config().at_entry == 0 {
        return;
    }
    ev.kstack = stack_id(ctx, false);
    ev.ustack = stack_id(ctx, true);
}
