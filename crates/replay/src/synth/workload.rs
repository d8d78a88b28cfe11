//! The mixed workload of a correct kernel that tests, the benchmark and the mutation harness start from.

use super::*;

/// A mixed workload of a correct kernel: /dev/mem-style remaps (ISA hole and a BAR), a TTM-style
/// driver inserting pfns with a WC request PAT downgrades, a vgem-style driver on WC RAM pages,
/// a COW write, a fork and munmaps. Used by tests and as the mutation harness's base.
pub fn workload(series: Series) -> TraceBuilder {
    let mut b = TraceBuilder::new(series);
    let bits = b.bits;
    // /dev/mem of the VGA hole, shared.
    let mut devmem = b.vma(0x7f00_0000_0000, 16, true, 0, Some("mmap_mem_ops"));
    b.remap(&mut devmem, 0xa0, Cache::UcMinus);
    // A PCI BAR through sysfs, shared, asked WC: reserved WC.
    let mut bar = b.vma(0x7f00_1000_0000, 8, true, 0, Some("pci_phys_vm_ops"));
    b.remap(&mut bar, 0xfe000, Cache::WC);
    // A second mapping of the same BAR asking UC- gets the WC reservation's type.
    let mut bar2 = b.vma(0x7f00_1100_0000, 8, true, 0, Some("pci_phys_vm_ops"));
    b.remap(&mut bar2, 0xfe000, Cache::UcMinus);
    // TTM/bochs VRAM: WC requested, no reservation: UC-.
    let ttm = b.vma(
        0x7f00_2000_0000,
        8,
        true,
        bits.pfnmap | bits.io | bits.dontexpand | bits.dontdump,
        Some("drm_gem_ttm_vm_ops [ttm]"),
    );
    for j in 0..8 {
        b.fault_insert(
            &ttm,
            ttm.start + j * PAGE_SIZE + 0x10,
            0xfd000 + j,
            Cache::WC,
            false,
        );
    }
    // vgem: shmem pages made WC, inserted through vmf_insert_pfn.
    let vgem = b.vma(
        0x7f00_3000_0000,
        4,
        true,
        bits.pfnmap | bits.io | bits.dontexpand | bits.dontdump,
        Some("vgem_gem_vm_ops [vgem]"),
    );
    b.set_ram_type(0x1234, 4, Cache::WC);
    for j in 0..4 {
        b.fault_insert(
            &vgem,
            vgem.start + j * PAGE_SIZE,
            0x1234 + j,
            Cache::WC,
            true,
        );
    }
    // /dev/mem private (COW) of the VGA hole: write page 2, then fork (succeeds: page 0 intact).
    let mut cow = b.vma(0x7f00_4000_0000, 4, false, 0, Some("mmap_mem_ops"));
    b.remap(&mut cow, 0xb0, Cache::UcMinus);
    b.cow_write(&cow, cow.start + 2 * PAGE_SIZE);
    b.fork(&bar, 2000);
    b.fork(&cow, 2001);
    // Writing page 0 then forking fails: PAT cannot recover the first page.
    let mut cow0 = b.vma(0x7f00_5000_0000, 2, false, 0, Some("mmap_mem_ops"));
    b.remap(&mut cow0, 0xc0, Cache::UcMinus);
    b.cow_write(&cow0, cow0.start);
    b.fork(&cow0, 2002);
    // A file page truncated.
    let file = b.vma(0x7f00_6000_0000, 4, true, 0, Some("ext4_file_vm_ops"));
    b.truncate_page(&file, file.start + PAGE_SIZE, 0x5_0000);
    // Tear down.
    b.munmap(&mut devmem);
    b.munmap(&mut bar);
    b.munmap(&mut bar2);
    b.munmap(&mut cow);
    b.munmap(&mut cow0);
    let mut ttm = ttm;
    b.munmap(&mut ttm);
    let mut vgem = vgem;
    b.munmap(&mut vgem);
    b
}
