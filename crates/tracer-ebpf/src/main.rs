//! pfnscope's eBPF side: generic entry/return programs, generated once per hook and per attach
//! kind (fentry/fexit, kprobe/kretprobe), plus the tracepoint programs.
//!
//! The programs know nothing about kernel versions. User space fills `HOOK_SPECS` (which argument
//! slot holds a vma, a `vm_fault`, an address, a `pgprot_t *`) and `OFFSETS` (struct layouts from
//! BTF) before attaching; here we only read what we are told to and stream it out.
//!
//! Streaming uses `BPF_RB_NO_WAKEUP`: the collector polls on a timer. A wakeup per event made a
//! fault storm 1.83x slower on the development VM (irq_work is expensive there), polling costs
//! about 1.07x (shared/docs/toolchain.md).
#![no_std]
#![no_main]

mod context;
mod emit;
mod filter;
mod functions;
mod maps;
mod mem;
mod offcpu;
mod stacks;
mod tracepoints;
mod vma;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

// bpf_probe_read_kernel, kprobes and bpf_find_vma are GPL-only helpers.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
