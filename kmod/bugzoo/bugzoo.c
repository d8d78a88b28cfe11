// SPDX-License-Identifier: GPL-2.0
/*
 * bugzoo: a driver that gets the page-fault path of device and PFN mappings wrong on purpose, one
 * bug class per mode, so that pfnscope's replay can be shown each bug on a real kernel (issue 19;
 * the classes come from the LKML threads in docs/lkml of the shared docs).
 *
 * Interface: open /dev/bugzoo, write(2) one mode name to the file (a trailing newline is
 * ignored), then mmap(2) it. The mode belongs to the open file and cannot change once the file
 * has been mapped (write fails with EBUSY). mmap fails with EINVAL without a mode, or when the
 * mapping does not fit the mode's window (below) or is private where the mode needs shared (or
 * the other way round); the device-memory modes fail with ENODEV when no ivshmem device is bound.
 *
 *   correct          device memory reserved WC at probe (arch_io_reserve_memtype_wc, as GPU
 *                    drivers reserve their aperture), inserted WC page by page from ->fault with
 *                    vmf_insert_pfn_prot: nothing to report. MAP_SHARED, up to 16 MiB.
 *   ram-wc           16 RAM pages (alloc_page) inserted WC into a VM_PFNMAP vma: PAT silently
 *                    makes them WB, the cache mode of their alias in the linear map.
 *                    MAP_SHARED, up to 64 KiB.
 *   per-page-pat     64 MiB of device memory with no reservation, inserted UC- page by page from
 *                    ->fault: one PAT lookup per page. MAP_SHARED, up to 64 MiB.
 *   double-insert    ->fault inserts a pfn, then another pfn at the same address: the second
 *                    insert finds the PTE present and keeps the first, yet returns
 *                    VM_FAULT_NOPAGE like a success. MAP_SHARED, up to 2 MiB.
 *   stale-page       ->fault reads a page of a private shmem file, truncates that index from the
 *                    file (the page leaves the page cache) and hands the page to the fault anyway:
 *                    the fault-vs-truncate race, made certain. MAP_SHARED, up to 64 pages.
 *   partial-untrack  remap_pfn_range of device memory over the whole vma at mmap; the workload
 *                    then unmaps its head, so 6.1/6.12's untrack_pfn frees a range that was never
 *                    reserved ("freeing invalid memtype") and the tail's untrack shrinks the
 *                    reservation instead of freeing it. MAP_SHARED, up to 4 MiB.
 *   pat-leak         reserves its device range WC at mmap (arch_io_reserve_memtype_wc) and never
 *                    frees it; faults insert WC. MAP_SHARED, up to 4 MiB.
 *   nopage-loop      ->fault returns VM_FAULT_NOPAGE without inserting anything: the access
 *                    faults again, forever (the workload kills the task; after 2^20 such faults
 *                    per open file the driver gives up with SIGBUS, a safety net only).
 *                    MAP_SHARED, any size.
 *   cow-pgoff        MAP_PRIVATE remap_pfn_range of device memory (which makes vm_pgoff the first
 *                    pfn, so that the generic vm_normal_page can tell raw pfns from COWed pages),
 *                    after which the driver puts its own vm_pgoff back: the special bit and the
 *                    linear rule disagree. MAP_PRIVATE, up to 4 MiB.
 *   insert-page-wc   16 RAM pages (alloc_page) inserted with vm_insert_page at mmap into a vma
 *                    whose vm_page_prot the driver made WC: insert_page takes the vma's
 *                    protection as is and asks PAT nothing (mm/memory.c:insert_page), so the
 *                    user mapping is WC while the linear map keeps the pages WB, the cache
 *                    alias Documentation/arch/x86/pat.rst forbids (set_memory_wc first, or map
 *                    WB). MAP_SHARED, up to 64 KiB.
 *
 * Device memory is BAR2 of a qemu ivshmem-plain device (1af4:1110, at least 128 MiB), bound as a
 * PCI driver. Its layout: [0, 16M) correct (reserved WC at probe, freed at remove);
 * [16M, 20M) double-insert; [20M, 24M) partial-untrack; [24M, 28M) pat-leak; [28M, 32M)
 * cow-pgoff; [64M, 128M) per-page-pat (never reserved). Each mode has its own window because the
 * leaks of pat-leak and partial-untrack outlive their mappings and would change the cache mode
 * the next mode sees. A mapping's file offset is an offset into its mode's window.
 *
 * No mode may oops or WARN: the one BUG-prone call, vmf_insert_pfn_prot on a COW VM_PFNMAP vma
 * (mm/memory.c:vmf_insert_pfn_prot), is ruled out by refusing private mappings for the modes
 * that insert.
 */

#include <linux/atomic.h>
#include <linux/err.h>
#include <linux/fs.h>
#include <linux/io.h>
#include <linux/miscdevice.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/pci.h>
#include <linux/shmem_fs.h>
#include <linux/sizes.h>
#include <linux/slab.h>
#include <linux/uaccess.h>
#include <linux/version.h>

#define BZ_BAR			2
#define BZ_BAR_MIN		SZ_128M
#define BZ_OWNED_OFF		0
#define BZ_OWNED_SIZE		SZ_16M
#define BZ_SLICE_SIZE		SZ_4M
#define BZ_SLICE(i)		(SZ_16M + (i) * BZ_SLICE_SIZE)
#define BZ_RAW_OFF		SZ_64M
#define BZ_RAW_SIZE		SZ_64M
/* double-insert's second pfn, this many pages after the first (its window is half a slice). */
#define BZ_DOUBLE_GAP		((BZ_SLICE_SIZE / 2) >> PAGE_SHIFT)
#define BZ_RAM_PAGES		16
#define BZ_SHM_PAGES		64
#define BZ_NOPAGE_CAP		(1 << 20)

enum bz_mode {
	BZ_NONE,
	BZ_CORRECT,
	BZ_RAM_WC,
	BZ_PER_PAGE_PAT,
	BZ_DOUBLE_INSERT,
	BZ_STALE_PAGE,
	BZ_PARTIAL_UNTRACK,
	BZ_PAT_LEAK,
	BZ_NOPAGE_LOOP,
	BZ_COW_PGOFF,
	BZ_INSERT_PAGE_WC,
	BZ_NR_MODES,
};

static const char *const bz_mode_names[BZ_NR_MODES] = {
	[BZ_NONE] = "",
	[BZ_CORRECT] = "correct",
	[BZ_RAM_WC] = "ram-wc",
	[BZ_PER_PAGE_PAT] = "per-page-pat",
	[BZ_DOUBLE_INSERT] = "double-insert",
	[BZ_STALE_PAGE] = "stale-page",
	[BZ_PARTIAL_UNTRACK] = "partial-untrack",
	[BZ_PAT_LEAK] = "pat-leak",
	[BZ_NOPAGE_LOOP] = "nopage-loop",
	[BZ_COW_PGOFF] = "cow-pgoff",
	[BZ_INSERT_PAGE_WC] = "insert-page-wc",
};

/*
 * The bound ivshmem device, its BAR requested and the `correct` window reserved. Set at probe,
 * cleared at remove; one device serves every mode.
 */
static struct {
	struct pci_dev *pdev;
	resource_size_t base;
} bz_dev;

struct bz_file {
	struct mutex lock;
	/* Fixed once `mapped`: the fault handlers read it without the lock. */
	enum bz_mode mode;
	bool mapped;
	/* First pfn of the mode's device window (the fault adds vmf->pgoff). */
	unsigned long base_pfn;
	struct page *ram[BZ_RAM_PAGES];
	struct file *shm;
	atomic_t refaults;
};

static void bz_set_flags(struct vm_area_struct *vma, vm_flags_t flags)
{
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 3, 0)
	/* 6.3 made vm_flags read-only behind the vm_flags_*() wrappers (bc292ab00f6c). */
	vm_flags_set(vma, flags);
#else
	vma->vm_flags |= flags;
#endif
}

/*
 * Checks that the vma fits `size` bytes of the device window at `off` (its file offset counts
 * from the window's start) and returns the window's first pfn.
 */
static int bz_window(struct vm_area_struct *vma, resource_size_t off, resource_size_t size,
		     unsigned long *base_pfn)
{
	unsigned long len = vma->vm_end - vma->vm_start;

	if (!bz_dev.pdev)
		return -ENODEV;
	if (vma->vm_pgoff > (size >> PAGE_SHIFT) ||
	    len > size - ((resource_size_t)vma->vm_pgoff << PAGE_SHIFT))
		return -EINVAL;
	*base_pfn = PHYS_PFN(bz_dev.base + off);
	return 0;
}

static vm_fault_t bz_fault_stale(struct vm_fault *vmf, struct bz_file *bf)
{
	loff_t start = (loff_t)vmf->pgoff << PAGE_SHIFT;
	struct page *page;

	if (vmf->pgoff >= BZ_SHM_PAGES)
		return VM_FAULT_SIGBUS;
	page = shmem_read_mapping_page(bf->shm->f_mapping, vmf->pgoff);
	if (IS_ERR(page))
		return vmf_error(PTR_ERR(page));
	/*
	 * The bug: the page leaves the page cache while this fault holds it (what a truncate racing
	 * with the fault does), and the fault maps it anyway. A correct ->fault returns the page
	 * locked and rechecks page->mapping under the lock (mm/filemap.c:filemap_fault, the 2007
	 * fault-vs-truncate fix); this one hands it over unlocked, and __do_fault only locks it.
	 * The shmem file is private to this open file: nothing else truncates or writes it, so no
	 * inode lock is needed (and taking i_rwsem under mmap_lock would invert their order).
	 */
	shmem_truncate_range(file_inode(bf->shm), start, start + PAGE_SIZE - 1);
	vmf->page = page;
	return 0;
}

static vm_fault_t bz_fault(struct vm_fault *vmf)
{
	struct vm_area_struct *vma = vmf->vma;
	struct bz_file *bf = vma->vm_private_data;
	unsigned long pfn = bf->base_pfn + vmf->pgoff;
	vm_fault_t ret;

	switch (bf->mode) {
	case BZ_CORRECT:
	case BZ_PER_PAGE_PAT:
	case BZ_PAT_LEAK:
		return vmf_insert_pfn_prot(vma, vmf->address, pfn, vma->vm_page_prot);
	case BZ_RAM_WC:
		if (vmf->pgoff >= BZ_RAM_PAGES)
			return VM_FAULT_SIGBUS;
		/* The bug: RAM asked for WC. PAT answers the page's memtype, WB. */
		return vmf_insert_pfn_prot(vma, vmf->address, page_to_pfn(bf->ram[vmf->pgoff]),
					   vma->vm_page_prot);
	case BZ_DOUBLE_INSERT:
		ret = vmf_insert_pfn_prot(vma, vmf->address, pfn, vma->vm_page_prot);
		if (ret != VM_FAULT_NOPAGE)
			return ret;
		/*
		 * The bug: a second pfn at the same address. insert_pfn finds the PTE present and,
		 * not being asked to mkwrite, leaves it and returns VM_FAULT_NOPAGE
		 * (mm/memory.c:insert_pfn): the driver cannot tell it was ignored.
		 */
		return vmf_insert_pfn_prot(vma, vmf->address, pfn + BZ_DOUBLE_GAP, vma->vm_page_prot);
	case BZ_STALE_PAGE:
		return bz_fault_stale(vmf, bf);
	case BZ_NOPAGE_LOOP:
		/* The bug: "done, retry the access" with nothing mapped. */
		if (atomic_inc_return(&bf->refaults) > BZ_NOPAGE_CAP)
			return VM_FAULT_SIGBUS;
		return VM_FAULT_NOPAGE;
	default:
		/* The remap modes filled every PTE at mmap: a fault here found a hole. */
		return VM_FAULT_SIGBUS;
	}
}

static const struct vm_operations_struct bz_vm_ops = {
	.fault = bz_fault,
};

static int bz_alloc_ram(struct bz_file *bf)
{
	int i;

	if (bf->ram[0])
		return 0;
	for (i = 0; i < BZ_RAM_PAGES; i++) {
		bf->ram[i] = alloc_page(GFP_KERNEL | __GFP_ZERO);
		if (!bf->ram[i])
			goto fail;
	}
	return 0;
fail:
	while (i--) {
		__free_page(bf->ram[i]);
		bf->ram[i] = NULL;
	}
	return -ENOMEM;
}

static int bz_make_shm(struct bz_file *bf)
{
	struct file *shm;

	if (bf->shm)
		return 0;
#ifdef EMPTY_VMA_FLAGS
	/* shmem_file_setup takes a vma_flags_t since the vma flags conversion (7.x). */
	shm = shmem_file_setup("bugzoo", BZ_SHM_PAGES * PAGE_SIZE, EMPTY_VMA_FLAGS);
#else
	shm = shmem_file_setup("bugzoo", BZ_SHM_PAGES * PAGE_SIZE, 0);
#endif
	if (IS_ERR(shm))
		return PTR_ERR(shm);
	bf->shm = shm;
	return 0;
}

/* The modes whose ->fault inserts pfns: vmf_insert_pfn_prot BUGs on a COW VM_PFNMAP vma. */
static int bz_mmap_insert(struct bz_file *bf, struct vm_area_struct *vma)
{
	int ret = 0;

	if (is_cow_mapping(vma->vm_flags))
		return -EINVAL;
	switch (bf->mode) {
	case BZ_CORRECT:
		ret = bz_window(vma, BZ_OWNED_OFF, BZ_OWNED_SIZE, &bf->base_pfn);
		vma->vm_page_prot = pgprot_writecombine(vma->vm_page_prot);
		break;
	case BZ_RAM_WC:
		if (vma->vm_pgoff > BZ_RAM_PAGES ||
		    vma_pages(vma) > BZ_RAM_PAGES - vma->vm_pgoff)
			return -EINVAL;
		ret = bz_alloc_ram(bf);
		vma->vm_page_prot = pgprot_writecombine(vma->vm_page_prot);
		break;
	case BZ_PER_PAGE_PAT:
		/* UC- is what PAT answers for unreserved MMIO: no downgrade, only the lookups. */
		ret = bz_window(vma, BZ_RAW_OFF, BZ_RAW_SIZE, &bf->base_pfn);
		vma->vm_page_prot = pgprot_noncached(vma->vm_page_prot);
		break;
	case BZ_DOUBLE_INSERT:
		ret = bz_window(vma, BZ_SLICE(0), BZ_SLICE_SIZE / 2, &bf->base_pfn);
		vma->vm_page_prot = pgprot_noncached(vma->vm_page_prot);
		break;
	case BZ_PAT_LEAK:
		ret = bz_window(vma, BZ_SLICE(2), BZ_SLICE_SIZE, &bf->base_pfn);
		if (ret)
			break;
		/*
		 * The bug: a reservation that nothing frees, neither munmap nor release (a correct
		 * driver pairs it with arch_io_free_memtype_wc when the mapping or device goes).
		 */
		ret = arch_io_reserve_memtype_wc(PFN_PHYS(bf->base_pfn + vma->vm_pgoff),
						 vma->vm_end - vma->vm_start);
		vma->vm_page_prot = pgprot_writecombine(vma->vm_page_prot);
		break;
	case BZ_NOPAGE_LOOP:
		break;
	default:
		return -EINVAL;
	}
	if (ret)
		return ret;
	bz_set_flags(vma, VM_PFNMAP | VM_DONTEXPAND | VM_DONTDUMP |
			  (bf->mode == BZ_RAM_WC ? 0 : VM_IO));
	return 0;
}

static int bz_mmap_remap(struct bz_file *bf, struct vm_area_struct *vma)
{
	unsigned long len = vma->vm_end - vma->vm_start;
	pgoff_t cookie = vma->vm_pgoff;
	bool cow = bf->mode == BZ_COW_PGOFF;
	pgprot_t prot;
	int ret;

	if (is_cow_mapping(vma->vm_flags) != cow)
		return -EINVAL;
	ret = bz_window(vma, BZ_SLICE(cow ? 3 : 1), BZ_SLICE_SIZE, &bf->base_pfn);
	if (ret)
		return ret;
	/*
	 * UC- for the device pages only: a COW copy takes vm_page_prot (mm/memory.c:wp_page_copy),
	 * and a UC- vm_page_prot would map anonymous RAM UC-, aliasing the linear map's WB: a bug
	 * of its own, kept out of cow-pgoff.
	 */
	prot = pgprot_noncached(vma->vm_page_prot);
	if (!cow)
		vma->vm_page_prot = prot;
	ret = remap_pfn_range(vma, vma->vm_start, bf->base_pfn + vma->vm_pgoff, len, prot);
	if (ret || !cow)
		return ret;
	/*
	 * The bug: remap_pfn_range made vm_pgoff the first pfn of this COW mapping
	 * (mm/memory.c:remap_pfn_range, "a horrible special case"), which is how the generic
	 * vm_normal_page tells a raw pfn (pfn == vm_pgoff + index) from a COWed page; the driver
	 * puts back the offset it uses as its own cookie.
	 */
	vma->vm_pgoff = cookie;
	return 0;
}

/* insert-page-wc: every page inserted at mmap, so no fault reaches the driver. */
static int bz_mmap_pages(struct bz_file *bf, struct vm_area_struct *vma)
{
	unsigned long i;
	int ret;

	if (is_cow_mapping(vma->vm_flags) || vma->vm_pgoff > BZ_RAM_PAGES ||
	    vma_pages(vma) > BZ_RAM_PAGES - vma->vm_pgoff)
		return -EINVAL;
	ret = bz_alloc_ram(bf);
	if (ret)
		return ret;
	/* The bug: RAM mapped WC with no set_memory_wc on its linear alias. */
	vma->vm_page_prot = pgprot_writecombine(vma->vm_page_prot);
	bz_set_flags(vma, VM_DONTEXPAND | VM_DONTDUMP);
	for (i = 0; i < vma_pages(vma); i++) {
		/* Sets VM_MIXEDMAP on the first call; mmap holds mmap_lock for write. */
		ret = vm_insert_page(vma, vma->vm_start + (i << PAGE_SHIFT),
				     bf->ram[vma->vm_pgoff + i]);
		if (ret)
			return ret;
	}
	return 0;
}

static int bz_mmap(struct file *file, struct vm_area_struct *vma)
{
	struct bz_file *bf = file->private_data;
	int ret;

	mutex_lock(&bf->lock);
	switch (bf->mode) {
	case BZ_PARTIAL_UNTRACK:
	case BZ_COW_PGOFF:
		ret = bz_mmap_remap(bf, vma);
		break;
	case BZ_STALE_PAGE:
		ret = -EINVAL;
		if (is_cow_mapping(vma->vm_flags) || vma->vm_pgoff > BZ_SHM_PAGES ||
		    vma_pages(vma) > BZ_SHM_PAGES - vma->vm_pgoff)
			break;
		ret = bz_make_shm(bf);
		if (!ret)
			bz_set_flags(vma, VM_DONTEXPAND | VM_DONTDUMP);
		break;
	case BZ_INSERT_PAGE_WC:
		ret = bz_mmap_pages(bf, vma);
		break;
	case BZ_NONE:
		ret = -EINVAL;
		break;
	default:
		ret = bz_mmap_insert(bf, vma);
		break;
	}
	if (!ret) {
		vma->vm_ops = &bz_vm_ops;
		vma->vm_private_data = bf;
		bf->mapped = true;
	}
	mutex_unlock(&bf->lock);
	return ret;
}

static ssize_t bz_write(struct file *file, const char __user *buf, size_t count, loff_t *ppos)
{
	struct bz_file *bf = file->private_data;
	char name[32];
	size_t len = count;
	int mode;

	if (count == 0 || count >= sizeof(name))
		return -EINVAL;
	if (copy_from_user(name, buf, count))
		return -EFAULT;
	if (name[len - 1] == '\n')
		len--;
	name[len] = '\0';
	for (mode = BZ_NONE + 1; mode < BZ_NR_MODES; mode++)
		if (!strcmp(name, bz_mode_names[mode]))
			break;
	if (mode == BZ_NR_MODES)
		return -EINVAL;
	mutex_lock(&bf->lock);
	if (bf->mapped) {
		mutex_unlock(&bf->lock);
		return -EBUSY;
	}
	bf->mode = mode;
	mutex_unlock(&bf->lock);
	return count;
}

static int bz_open(struct inode *inode, struct file *file)
{
	struct bz_file *bf = kzalloc(sizeof(*bf), GFP_KERNEL);

	if (!bf)
		return -ENOMEM;
	mutex_init(&bf->lock);
	atomic_set(&bf->refaults, 0);
	file->private_data = bf;
	return 0;
}

/* Runs once the last vma of the file is gone (each holds a file reference). */
static int bz_release(struct inode *inode, struct file *file)
{
	struct bz_file *bf = file->private_data;
	int i;

	for (i = 0; i < BZ_RAM_PAGES; i++)
		if (bf->ram[i])
			__free_page(bf->ram[i]);
	if (bf->shm)
		fput(bf->shm);
	kfree(bf);
	return 0;
}

static const struct file_operations bz_fops = {
	.owner = THIS_MODULE,
	.open = bz_open,
	.release = bz_release,
	.write = bz_write,
	.mmap = bz_mmap,
};

static struct miscdevice bz_misc = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = "bugzoo",
	.fops = &bz_fops,
	.mode = 0600,
};

static int bz_probe(struct pci_dev *pdev, const struct pci_device_id *id)
{
	resource_size_t len = pci_resource_len(pdev, BZ_BAR);
	int ret;

	if (bz_dev.pdev)
		return -EBUSY;
	if (len < BZ_BAR_MIN) {
		dev_info(&pdev->dev, "BAR%d of %pa bytes, need %d\n", BZ_BAR, &len, BZ_BAR_MIN);
		return -ENODEV;
	}
	ret = pci_enable_device_mem(pdev);
	if (ret)
		return ret;
	ret = pci_request_region(pdev, BZ_BAR, "bugzoo");
	if (ret)
		goto disable;
	bz_dev.base = pci_resource_start(pdev, BZ_BAR);
	/*
	 * `correct` owns the first 16 MiB the way GPU drivers own their aperture: reserved WC once,
	 * here, before anything maps it (e.g. ttm/i915 through io_mapping_init_wc, which is this
	 * call plus a kernel mapping). Its inserts then find WC in lookup_memtype.
	 */
	ret = arch_io_reserve_memtype_wc(bz_dev.base + BZ_OWNED_OFF, BZ_OWNED_SIZE);
	if (ret)
		goto release;
	bz_dev.pdev = pdev;
	dev_info(&pdev->dev, "BAR%d at %pa, %pa bytes; first 16 MiB reserved WC\n",
		 BZ_BAR, &bz_dev.base, &len);
	return 0;
release:
	pci_release_region(pdev, BZ_BAR);
disable:
	pci_disable_device(pdev);
	return ret;
}

static void bz_remove(struct pci_dev *pdev)
{
	arch_io_free_memtype_wc(bz_dev.base + BZ_OWNED_OFF, BZ_OWNED_SIZE);
	bz_dev.pdev = NULL;
	pci_release_region(pdev, BZ_BAR);
	pci_disable_device(pdev);
}

static const struct pci_device_id bz_ids[] = {
	{ PCI_DEVICE(0x1af4, 0x1110) },	/* qemu ivshmem-plain */
	{ }
};
MODULE_DEVICE_TABLE(pci, bz_ids);

static struct pci_driver bz_pci_driver = {
	.name = "bugzoo",
	.id_table = bz_ids,
	.probe = bz_probe,
	.remove = bz_remove,
};

static int __init bz_init(void)
{
	int ret = pci_register_driver(&bz_pci_driver);

	if (ret)
		return ret;
	ret = misc_register(&bz_misc);
	if (ret) {
		pci_unregister_driver(&bz_pci_driver);
		return ret;
	}
	if (!bz_dev.pdev)
		pr_info("bugzoo: no ivshmem-plain device (1af4:1110): the device-memory modes fail with ENODEV\n");
	return 0;
}

static void __exit bz_exit(void)
{
	misc_deregister(&bz_misc);
	pci_unregister_driver(&bz_pci_driver);
}

module_init(bz_init);
module_exit(bz_exit);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("bugzoo: page-fault path bugs on purpose, one per mode, for pfnscope");
