// SPDX-License-Identifier: GPL-2.0

//! User memory of the process that owns a context: mapping arenas and filling blocks.
//!
//! The `kernel` crate has no abstraction for mapping anonymous memory into a process, so the raw
//! `vm_mmap`/`vm_munmap` bindings are wrapped here, once. They act on `current->mm`, which is why
//! every operation takes an `OwnerMm`: a token that can only be made by checking that the calling
//! task runs in the address space the context belongs to.

use core::ptr;

use kernel::{
    bindings,
    mm::Mm,
    prelude::*,
    types::NotThreadSafe,
    uaccess::{
        UserPtr,
        UserSlice, //
    },
};

const PROT_READ: c_ulong = 0x1;
const PROT_WRITE: c_ulong = 0x2;
const MAP_PRIVATE: c_ulong = 0x02;
const MAP_ANONYMOUS: c_ulong = 0x20;

/// Proof that the calling task runs in the context's address space.
///
/// # Invariants
///
/// While this value exists, `current->mm` is the mm the context was opened in, and the caller is
/// in process context (an ioctl or a release from that process).
pub(crate) struct OwnerMm<'a> {
    _mm: &'a Mm,
    /// The token proves something about the task that made it: it must not reach another thread,
    /// so it is neither `Send` nor `Sync` (`&Mm` alone would be both).
    _not_thread_safe: NotThreadSafe,
}

// `OwnerMm` is not `Send`: if it were, both impls below would apply and the name in the closure
// would be ambiguous, which does not compile.
const _: fn() = || {
    trait AmbiguousIfSend<A> {
        fn some_item() {}
    }
    impl<T: ?Sized> AmbiguousIfSend<()> for T {}
    struct Sendable;
    impl<T: ?Sized + Send> AmbiguousIfSend<Sendable> for T {}
    let _ = <OwnerMm<'static> as AmbiguousIfSend<_>>::some_item;
};

impl<'a> OwnerMm<'a> {
    /// Returns the token when the calling task's mm is `owner`.
    pub(crate) fn check(owner: &'a Mm) -> Option<Self> {
        let cur = kernel::current!();
        let mm = cur.mm()?;
        if !ptr::eq(mm.as_raw(), owner.as_raw()) {
            return None;
        }
        // INVARIANT: `current->mm` was just compared with `owner`; the token borrows `owner` and
        // cannot leave this task (`NotThreadSafe` keeps it from being `Send` or `Sync`).
        Some(Self {
            _mm: owner,
            _not_thread_safe: NotThreadSafe,
        })
    }

    /// Maps `len` bytes of zeroed, private, read-write anonymous memory into the process.
    pub(crate) fn map_anon(&self, len: usize) -> Result<usize> {
        // SAFETY: By the type invariant we run in process context with `current->mm` the owner's
        // mm; `vm_mmap` with a null file maps anonymous memory there and takes the mmap lock
        // itself. No arguments point to kernel memory.
        let ret = unsafe {
            bindings::vm_mmap(
                ptr::null_mut(),
                0,
                len as c_ulong,
                PROT_READ | PROT_WRITE,
                MAP_PRIVATE | MAP_ANONYMOUS,
                0,
            )
        };
        // `vm_mmap` returns either an address or a negative errno.
        if ret >= (-(bindings::MAX_ERRNO as i64)) as c_ulong {
            return Err(Error::from_errno(ret as c_int));
        }
        Ok(ret as usize)
    }

    /// Unmaps an arena that `map_anon` returned.
    pub(crate) fn unmap(&self, addr: usize, len: usize) {
        // SAFETY: By the type invariant `current->mm` is the owner's mm; unmapping a user range
        // cannot affect kernel memory. A failure (the range was already unmapped by the process
        // itself) leaves nothing to undo, so the result is ignored.
        let _ = unsafe { bindings::vm_munmap(addr as c_ulong, len) };
    }

    /// Whether `addr` lies in a mapping of the process (a failed user copy into a block that is
    /// still mapped was an allocation failure while faulting the page in, not a bad address).
    pub(crate) fn is_mapped(&self, addr: usize) -> bool {
        let cur = kernel::current!();
        cur.mm()
            .is_some_and(|mm| mm.mmap_read_lock().vma_lookup(addr).is_some())
    }

    /// Stores `words` at `addr` (a page the context mapped).
    pub(crate) fn write_words(&self, addr: usize, words: &[u64]) -> Result {
        let mut w = UserSlice::new(UserPtr::from_addr(addr), core::mem::size_of_val(words)).writer();
        for word in words {
            w.write(word)?;
        }
        Ok(())
    }

    /// Loads `words.len()` words from `addr`.
    pub(crate) fn read_words(&self, addr: usize, words: &mut [u64]) -> Result {
        let mut r = UserSlice::new(UserPtr::from_addr(addr), core::mem::size_of_val(words)).reader();
        for word in words.iter_mut() {
            *word = r.read()?;
        }
        Ok(())
    }

    /// Initialises a block: `image` at `addr`, then zeroes up to `memsz` unless the memory is
    /// known to be zero already (`fresh`).
    pub(crate) fn init_block(
        &self,
        addr: usize,
        image: &[u8],
        memsz: usize,
        fresh: bool,
    ) -> Result {
        let mut w = UserSlice::new(UserPtr::from_addr(addr), memsz).writer();
        w.write_slice(image)?;
        if fresh {
            return Ok(());
        }
        static ZEROES: [u8; 256] = [0; 256];
        let mut left = memsz - image.len();
        while left > 0 {
            let n = left.min(ZEROES.len());
            w.write_slice(&ZEROES[..n])?;
            left -= n;
        }
        Ok(())
    }
}
