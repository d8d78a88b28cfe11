//! Reading kernel structs at BTF-derived offsets (Rust eBPF has no CO-RE relocations).

use aya_ebpf::helpers::bpf_probe_read_kernel;
use pfnscope_abi::{Offsets, VmaSnapshot};

#[inline(always)]
pub fn read_u64_at(base: u64, off: u32) -> Option<u64> {
    if base == 0 || off == Offsets::UNKNOWN {
        return None;
    }
    unsafe { bpf_probe_read_kernel((base + off as u64) as *const u64) }.ok()
}

/// Fills `out` from the `vm_area_struct` at `vma`. Fields this kernel lacks stay 0.
#[inline(always)]
pub fn snapshot(vma: u64, o: &Offsets, out: &mut VmaSnapshot) -> bool {
    if vma == 0 {
        return false;
    }
    out.ptr = vma;
    let Some(start) = read_u64_at(vma, o.vma_start) else {
        return false;
    };
    out.start = start;
    out.end = read_u64_at(vma, o.vma_end).unwrap_or(0);
    out.pgoff = read_u64_at(vma, o.vma_pgoff).unwrap_or(0);
    out.flags = read_u64_at(vma, o.vma_flags).unwrap_or(0);
    out.page_prot = read_u64_at(vma, o.vma_page_prot).unwrap_or(0);
    out.vm_ops = read_u64_at(vma, o.vma_ops).unwrap_or(0);
    out.vm_file = read_u64_at(vma, o.vma_file).unwrap_or(0);
    out.mm = read_u64_at(vma, o.vma_mm).unwrap_or(0);
    // Inside ->mmap the vma still has the empty dummy ops: its driver is its file's.
    if out.vm_ops != 0 && o.dummy_vm_ops.contains(&out.vm_ops) {
        if let Some(f_op) = read_u64_at(out.vm_file, o.file_f_op) {
            out.vm_ops = f_op;
        }
    }
    true
}
