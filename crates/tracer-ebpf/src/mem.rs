//! Clearing and copying memory on the hot path.
//!
//! LLVM folds runs of zero stores into `memset` and struct copies into `memcpy`/`memmove`
//! calls, and the BPF versions it links are byte-at-a-time loops: five to eight instructions
//! per byte, over 1,000 per event, which was most of the cost of a traced fault. Volatile word
//! accesses cannot be folded: one or two instructions per 8 bytes.

/// Zeroes `v` with 8-byte stores. `T` must be a multiple of 8 bytes and 8-byte aligned (every
/// ABI struct is: integers only, `repr(C)`, checked at compile time).
#[inline(always)]
pub fn zero<T: Copy>(v: &mut T) {
    unsafe { zero_at(v) }
}

/// Zeroes `m` in place and hands it out initialised. (Building a zeroed value and moving it
/// does not work: LLVM turns the copy of known zeros back into a `memset`.)
#[inline(always)]
pub fn zero_in<T: Copy>(m: &mut core::mem::MaybeUninit<T>) -> &mut T {
    unsafe {
        zero_at(m.as_mut_ptr());
        m.assume_init_mut()
    }
}

/// # Safety
/// `v` is valid for writes of a `T`.
#[inline(always)]
unsafe fn zero_at<T: Copy>(v: *mut T) {
    const { assert!(size_of::<T>() % 8 == 0 && align_of::<T>() >= 8) };
    let p = v as *mut u64;
    let mut i = 0;
    while i < size_of::<T>() / 8 {
        unsafe { core::ptr::write_volatile(p.add(i), 0) };
        i += 1;
    }
}

/// A single store the compiler cannot fold into a neighbouring `memset`.
#[inline(always)]
pub fn set<T: Copy>(dst: &mut T, v: T) {
    unsafe { core::ptr::write_volatile(dst, v) };
}

/// `*dst = *src` with 8-byte loads and stores (same layout rules as [`zero`]).
#[inline(always)]
pub fn copy<T: Copy>(dst: &mut T, src: &T) {
    const { assert!(size_of::<T>() % 8 == 0 && align_of::<T>() >= 8) };
    let (d, s) = (dst as *mut T as *mut u64, src as *const T as *const u64);
    let mut i = 0;
    while i < size_of::<T>() / 8 {
        unsafe { core::ptr::write_volatile(d.add(i), core::ptr::read_volatile(s.add(i))) };
        i += 1;
    }
}
