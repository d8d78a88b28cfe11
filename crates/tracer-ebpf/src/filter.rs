//! In-kernel filtering: everything not wanted is dropped before it costs ring-buffer space.

use core::{ffi::c_void, mem::MaybeUninit};

use aya_ebpf::helpers::generated::bpf_get_current_comm;
use pfnscope_abi::COMM_LEN;

use crate::{
    maps::{TGIDS, filter},
    mem::zero_in,
};

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
        // As words: aya's wrapper clears and copies the name byte by byte.
        let mut slot = MaybeUninit::<[u64; COMM_LEN / 8]>::uninit();
        let words = zero_in(&mut slot);
        if unsafe { bpf_get_current_comm(words.as_mut_ptr() as *mut c_void, COMM_LEN as u32) } != 0
        {
            return false;
        }
        let comm = unsafe { &*(words as *const [u64; COMM_LEN / 8] as *const [u8; COMM_LEN]) };
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
