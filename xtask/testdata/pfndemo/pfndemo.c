// SPDX-License-Identifier: GPL-2.0
/*
 * pfndemo: the smallest driver with a PFN mapping, for `cargo xtask testbox --module` (its
 * end-to-end test and README's example). /dev/pfndemo maps `pages` pages of RAM allocated at
 * load; ->fault inserts them one at a time with vmf_insert_pfn into a VM_PFNMAP vma, the shape
 * of many GPU drivers' fault handlers. Shared mappings only: vmf_insert_pfn BUGs on a COW
 * VM_PFNMAP vma (mm/memory.c).
 */
#include <linux/fs.h>
#include <linux/gfp.h>
#include <linux/miscdevice.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/slab.h>
#include <linux/version.h>

static unsigned int pages = 8;
module_param(pages, uint, 0444);
MODULE_PARM_DESC(pages, "pages /dev/pfndemo maps (1-256)");

static struct page **pd_pages;

static vm_fault_t pd_fault(struct vm_fault *vmf)
{
	if (vmf->pgoff >= pages)
		return VM_FAULT_SIGBUS;
	return vmf_insert_pfn(vmf->vma, vmf->address, page_to_pfn(pd_pages[vmf->pgoff]));
}

static const struct vm_operations_struct pd_vm_ops = {
	.fault = pd_fault,
};

static int pd_mmap(struct file *file, struct vm_area_struct *vma)
{
	if (!(vma->vm_flags & VM_SHARED))
		return -EINVAL;
	if (vma->vm_pgoff + vma_pages(vma) > pages)
		return -EINVAL;
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 3, 0)
	/* 6.3 made vm_flags read-only behind the vm_flags_*() wrappers (bc292ab00f6c). */
	vm_flags_set(vma, VM_PFNMAP | VM_IO | VM_DONTEXPAND | VM_DONTDUMP);
#else
	vma->vm_flags |= VM_PFNMAP | VM_IO | VM_DONTEXPAND | VM_DONTDUMP;
#endif
	vma->vm_ops = &pd_vm_ops;
	return 0;
}

static const struct file_operations pd_fops = {
	.owner = THIS_MODULE,
	.mmap = pd_mmap,
};

static struct miscdevice pd_misc = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = "pfndemo",
	.fops = &pd_fops,
	.mode = 0666,
};

static void pd_free(void)
{
	unsigned int i;

	for (i = 0; i < pages; i++)
		if (pd_pages[i])
			__free_page(pd_pages[i]);
	kfree(pd_pages);
}

static int __init pd_init(void)
{
	unsigned int i;
	int err;

	if (pages < 1 || pages > 256)
		return -EINVAL;
	pd_pages = kcalloc(pages, sizeof(*pd_pages), GFP_KERNEL);
	if (!pd_pages)
		return -ENOMEM;
	for (i = 0; i < pages; i++) {
		pd_pages[i] = alloc_page(GFP_KERNEL | __GFP_ZERO);
		if (!pd_pages[i]) {
			pd_free();
			return -ENOMEM;
		}
	}
	err = misc_register(&pd_misc);
	if (err)
		pd_free();
	return err;
}

static void __exit pd_exit(void)
{
	misc_deregister(&pd_misc);
	pd_free();
}

module_init(pd_init);
module_exit(pd_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("pfndemo: RAM pages inserted one by one into a VM_PFNMAP vma, for pfnscope");
