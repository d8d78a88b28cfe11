//! In-kernel filtering: everything not wanted is dropped before it costs ring-buffer space.

use aya_ebpf::helpers::bpf_get_current_comm;
use pfnscope_abi::COMM_LEN;

use crate::maps::{TGIDS, filter};

#[inline(always)]
pub fn process_allowed(tgid: u32) -> bool {
    let f = filter();
    if tgid == f.self_tgid {
        return false;
    }
    if f.by_tgid != 0 && unsafe { TGIDS.get(&tgid) }.is_none() {
        return false;
    }
    if f.by_comm != 0 {
        let Ok(comm) = bpf_get_current_comm() else {
            return false;
        };
        let mut i = 0;
        while i < COMM_LEN {
            if comm[i] != f.comm[i] {
                return false;
            }
            if comm[i] == 0 {
                break;
            }
            i += 1;
        }
    }
    true
}

#[inline(always)]
pub fn vma_allowed(vm_flags: u64) -> bool {
    let mask = filter().vma_flags_mask;
    mask == 0 || vm_flags & mask != 0
}

#[inline(always)]
pub fn addr_allowed(addr: u64) -> bool {
    let f = filter();
    addr >= f.addr_lo && addr < f.addr_hi
}
