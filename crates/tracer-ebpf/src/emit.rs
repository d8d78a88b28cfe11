//! Getting an event into the ring buffer without waking the consumer.

use aya_ebpf::bindings::BPF_RB_NO_WAKEUP;
use pfnscope_abi::{Event, counter};

use crate::maps::{EVENTS, bump};

#[inline(always)]
pub fn emit(ev: &Event) {
    if EVENTS.output::<Event>(ev, BPF_RB_NO_WAKEUP as u64).is_err() {
        bump(counter::DROPPED);
    }
}
