// SPDX-License-Identifier: GPL-2.0

//! The memory budget of a context: what it holds, and may still take, against its limits.
//!
//! One `Budget` per context, behind the context lock. It counts three things: the user memory
//! mapped for blocks (arenas of the pools and the rows, capped by `max_block_bytes`, `ENOMEM`
//! past it), the `.tdata` snapshots (capped by `max_image_total`, `E2BIG` past it), and all the
//! kernel memory the context keeps, snapshots included: the context itself, its registry, thread
//! tables and pool lists. That last count is charged to the quota of the context's user
//! (`quota.rs`: `max_user_kbytes` for all of the user's contexts, `EDQUOT` past it) and every
//! such allocation is made with `GFP_KERNEL_ACCOUNT`, so the user's memory cgroup sees it too.
//! Whatever maps or allocates charges the budget first and gives back what it unmaps or frees,
//! so a request that fails leaves the counts as they were; what the context still holds when it
//! goes is given back to the quota then. This is where a context's memory is accounted;
//! `KSTLS_IOC_INFO` and fdinfo report it.

use core::mem::size_of;

use kernel::{
    bindings,
    prelude::*,
    sync::Arc, //
};

use crate::limits::Limits;
use crate::mark::{
    Mark,
    MARK_LEN, //
};
use crate::quota::UserQuota;
use crate::usermem::OwnerMm;

/// What one context holds, against its caps.
///
/// # Invariants
///
/// `mapped <= max_mapped`, `images <= max_images`, and `kernel` bytes are charged to `quota`.
pub(crate) struct Budget {
    max_mapped: u64,
    max_images: u64,
    /// Bytes of user memory mapped for blocks, by all pools and the rows.
    mapped: u64,
    /// Bytes of `.tdata` snapshots held for all modules.
    images: u64,
    /// The quota of the context's user.
    quota: Arc<UserQuota>,
    /// Bytes of kernel memory the context keeps (the snapshots included), charged to `quota`.
    kernel: u64,
    /// The fork mark (`mark.rs`): what a forked child's copy of the address space tells it of
    /// the arenas mapped and the unregistrations begun. Its one page is not a block's, and is
    /// not counted in `mapped`.
    mark: Mark,
}

/// The memory an allocation of `bytes` takes: the slab bucket, or the power-of-two pages of a
/// large one (an upper bound for `kvmalloc`, which may use vmalloc's whole pages instead). What
/// is charged, so that the quota counts what the allocator really hands out.
pub(crate) fn alloc_size(bytes: usize) -> usize {
    if bytes == 0 {
        return 0;
    }
    // SAFETY: `kmalloc_size_roundup` only computes a size; any value is a valid argument.
    unsafe { bindings::kmalloc_size_roundup(bytes) }
}

/// Adds `len` to `count` if the sum stays at or below `max`; else fails with `err` and leaves
/// `count` as it was.
fn charge(count: &mut u64, max: u64, len: usize, err: Error) -> Result {
    let total = count.checked_add(len as u64).ok_or(err)?;
    if total > max {
        return Err(err);
    }
    *count = total;
    Ok(())
}

impl Budget {
    /// An empty budget with the caps of `limits`, whose kernel memory `quota` pays for.
    pub(crate) fn new(limits: &Limits, quota: &Arc<UserQuota>) -> Self {
        // INVARIANT: Nothing is charged yet.
        Self {
            max_mapped: limits.max_block_bytes,
            max_images: limits.max_image_total,
            mapped: 0,
            images: 0,
            quota: quota.clone(),
            kernel: 0,
            mark: Mark::none(),
        }
    }

    /// The fork mark as last stored.
    pub(crate) fn mark(&self) -> &Mark {
        &self.mark
    }

    /// Maps the mark's page if there is none yet: done before an arena is mapped, so that the
    /// arena is counted there.
    pub(crate) fn prepare_arena(&mut self, mm: &OwnerMm<'_>) -> Result {
        if self.mark.addr() == 0 {
            let addr = mm.map_anon(MARK_LEN)?;
            self.mark.set_up(addr, mm);
        }
        Ok(())
    }

    /// Counts, in the mark, an arena whose mapping just returned; returns its number.
    pub(crate) fn arena_mapped(&mut self, mm: &OwnerMm<'_>) -> u64 {
        self.mark.arena_mapped(mm)
    }

    /// Counts, in the mark, an unregistration about to change the state. Without a page for
    /// the mark (it cannot be mapped), the count still grows, and children see too little.
    pub(crate) fn unregistering(&mut self, mm: &OwnerMm<'_>) {
        let _ = self.prepare_arena(mm);
        self.mark.unregistering(mm);
    }

    /// Unmaps the mark's page (the context is released by its own process).
    pub(crate) fn unmap_mark(&mut self, mm: &OwnerMm<'_>) {
        if self.mark.addr() != 0 {
            mm.unmap(self.mark.addr(), MARK_LEN);
            self.mark = Mark::none();
        }
    }

    /// The quota the kernel memory is charged to.
    pub(crate) fn quota(&self) -> &Arc<UserQuota> {
        &self.quota
    }

    /// Bytes of kernel memory the context keeps now.
    pub(crate) fn kernel(&self) -> u64 {
        self.kernel
    }

    /// Charges `len` bytes of kernel memory that are about to be allocated; `EDQUOT` when the
    /// user's quota has no room for them.
    pub(crate) fn charge_kernel(&mut self, len: usize) -> Result {
        let len = len as u64;
        let total = self.kernel.checked_add(len).ok_or(EDQUOT)?;
        self.quota.charge(len)?;
        // INVARIANT: `len` was just charged to the quota.
        self.kernel = total;
        Ok(())
    }

    /// Gives back `len` bytes of kernel memory that are freed (or were never allocated).
    pub(crate) fn uncharge_kernel(&mut self, len: usize) {
        let len = len as u64;
        self.kernel -= len;
        self.quota.uncharge(len);
    }

    /// Makes room in `v` for `additional` more elements, charging what its buffer grows by
    /// (`Vec::reserve` grows it to `max(2 * capacity, len + additional)`). Fails, with nothing
    /// charged, with `EDQUOT` or `ENOMEM`.
    pub(crate) fn reserve<T>(&mut self, v: &mut KVec<T>, additional: usize) -> Result {
        let (len, cap) = (v.len(), v.capacity());
        if cap - len >= additional {
            return Ok(());
        }
        let new_cap = (cap * 2).max(len.checked_add(additional).ok_or(ENOMEM)?);
        let new_bytes = new_cap.checked_mul(size_of::<T>()).ok_or(ENOMEM)?;
        let bytes = alloc_size(new_bytes) - alloc_size(cap * size_of::<T>());
        self.charge_kernel(bytes)?;
        if let Err(e) = v.reserve(additional, GFP_KERNEL_ACCOUNT) {
            self.uncharge_kernel(bytes);
            return Err(e.into());
        }
        Ok(())
    }

    /// Frees the buffer of `v` (emptied first) and gives back what it was charged.
    pub(crate) fn free_vec<T>(&mut self, v: &mut KVec<T>) {
        let bytes = alloc_size(v.capacity() * size_of::<T>());
        *v = KVec::new();
        self.uncharge_kernel(bytes);
    }

    /// Bytes of user memory mapped for blocks now.
    pub(crate) fn mapped(&self) -> u64 {
        self.mapped
    }

    /// Bytes of `.tdata` snapshots held now.
    pub(crate) fn images(&self) -> u64 {
        self.images
    }

    /// Charges a mapping of `len` bytes that is about to be made; `ENOMEM` when it does not fit.
    pub(crate) fn charge_mapping(&mut self, len: usize) -> Result {
        // INVARIANT: `charge` keeps `mapped <= max_mapped`.
        charge(&mut self.mapped, self.max_mapped, len, ENOMEM)
    }

    /// Gives back the charge of a mapping of `len` bytes that is gone (or was never made).
    pub(crate) fn uncharge_mapping(&mut self, len: usize) {
        self.mapped -= len as u64;
    }

    /// Charges a snapshot of `len` bytes that is about to be kept: `E2BIG` when it does not fit
    /// the context's cap, `EDQUOT` when it does not fit the user's quota.
    pub(crate) fn charge_image(&mut self, len: usize) -> Result {
        // INVARIANT: `charge` keeps `images <= max_images`.
        charge(&mut self.images, self.max_images, len, E2BIG)?;
        if let Err(e) = self.charge_kernel(alloc_size(len)) {
            self.images -= len as u64;
            return Err(e);
        }
        Ok(())
    }

    /// Gives back the charge of a snapshot of `len` bytes that is freed.
    pub(crate) fn uncharge_image(&mut self, len: usize) {
        self.images -= len as u64;
        self.uncharge_kernel(alloc_size(len));
    }

    /// Takes over what a forked child inherits (`fork::Inheritance`): the mappings of the
    /// parent's that its copy holds, `images` bytes of snapshots, and the mark it goes on with.
    /// Its kernel memory was charged already.
    pub(crate) fn inherit(&mut self, mapped: u64, images: u64, mark: Mark) {
        self.mapped = mapped;
        self.images = images;
        self.mark = mark;
    }
}

impl Drop for Budget {
    fn drop(&mut self) {
        // What the context still keeps is freed with it.
        self.quota.uncharge(self.kernel);
    }
}

#[kunit_tests(rust_kstls_budget)]
mod tests {
    use super::*;
    use crate::limits::LIMITS;
    use crate::quota::ContextSlot;

    const SMALL: Limits = Limits {
        max_block_bytes: 3 << 12,
        max_image_total: 100,
        ..LIMITS
    };
    /// A uid no test process has.
    const UID: u32 = 0x7ffe_0001;

    #[test]
    fn mappings_are_charged_up_to_the_cap() -> Result {
        let user = ContextSlot::open_for(UID, 1 << 20)?;
        let mut b = Budget::new(&SMALL, user.quota());
        b.charge_mapping(2 << 12)?;
        assert_eq!(b.charge_mapping(2 << 12), Err(ENOMEM));
        // A refused charge leaves the count as it was.
        assert_eq!(b.mapped(), 2 << 12);
        b.charge_mapping(1 << 12)?;
        assert_eq!(b.mapped(), SMALL.max_block_bytes);
        b.uncharge_mapping(2 << 12);
        assert_eq!(b.mapped(), 1 << 12);
        assert_eq!(b.charge_mapping(usize::MAX), Err(ENOMEM));
        // User memory is the user's own: the quota counts kernel memory only.
        assert_eq!(user.quota().bytes(), 0);
        Ok(())
    }

    #[test]
    fn images_are_charged_to_the_context_and_the_user() -> Result {
        // Sizes of slab buckets: what is charged is what the allocator hands out.
        let (s16, s32, s64) = (alloc_size(16), alloc_size(32), alloc_size(64));
        assert!(s16 >= 16 && s32 >= 32 && s64 >= 64);
        let user = ContextSlot::open_for(UID + 1, (s64 + s32 + s16) as u64)?;
        let mut b = Budget::new(&SMALL, user.quota());
        b.charge_image(64)?;
        assert_eq!(b.charge_image(37), Err(E2BIG));
        let mut other = Budget::new(&SMALL, user.quota());
        other.charge_image(32)?;
        // The context's cap has room for 36 more, the user's quota for a bucket of 16.
        assert_eq!(b.charge_image(32), Err(EDQUOT));
        assert_eq!((b.images(), b.kernel()), (64, s64 as u64));
        b.charge_image(16)?;
        assert_eq!(user.quota().bytes(), (s64 + s32 + s16) as u64);
        b.uncharge_image(64);
        assert_eq!((b.images(), user.quota().bytes()), (16, (s32 + s16) as u64));
        // A budget that goes gives back all it kept.
        drop(other);
        assert_eq!(user.quota().bytes(), s16 as u64);
        drop(b);
        assert_eq!(user.quota().bytes(), 0);
        Ok(())
    }

    #[test]
    fn vectors_are_charged_for_what_they_grow_by() -> Result {
        let user = ContextSlot::open_for(UID + 2, 4096)?;
        let mut b = Budget::new(&SMALL, user.quota());
        let mut v: KVec<u64> = KVec::new();
        b.reserve(&mut v, 3)?;
        let three = alloc_size(24) as u64;
        assert_eq!((v.capacity(), b.kernel()), (3, three));
        v.push_within_capacity(1).map_err(|_| ENOMEM)?;
        // Room is left: nothing more is charged.
        b.reserve(&mut v, 2)?;
        assert_eq!(b.kernel(), three);
        // Growing doubles the buffer; the bigger bucket is charged.
        b.reserve(&mut v, 3)?;
        let six = alloc_size(48) as u64;
        assert_eq!((v.capacity(), b.kernel()), (6, six));
        assert_eq!(b.reserve(&mut v, 1000), Err(EDQUOT));
        assert_eq!((v.capacity(), b.kernel()), (6, six));
        b.free_vec(&mut v);
        assert_eq!((v.capacity(), b.kernel(), user.quota().bytes()), (0, 0, 0));
        Ok(())
    }

    #[test]
    fn a_child_takes_over_the_parents_counts() -> Result {
        let user = ContextSlot::open_for(UID + 3, 100)?;
        let mut b = Budget::new(&SMALL, user.quota());
        b.charge_kernel(30)?;
        assert_eq!(b.charge_kernel(71), Err(EDQUOT));
        b.charge_kernel(70)?;
        b.inherit(4096, 50, Mark::none());
        assert_eq!((b.mapped(), b.images(), b.kernel()), (4096, 50, 100));
        Ok(())
    }
}
