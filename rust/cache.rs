// SPDX-License-Identifier: GPL-2.0

//! The fast-path cache of a context: pages that the kernel fills and user space maps read-only.
//!
//! At most one `Cache` per context, made on its first `mmap`. It is the vDSO-style half of kstls:
//! libkstls answers `__tls_get_addr` from these pages without a syscall, and the kernel stays in
//! charge by what it writes here. The layout is `struct kstls_cache_header`, then a hash table of
//! thread slots keyed by thread pointer, then one page of `(module id, block)` entries per cached
//! thread (plus one page that stays empty, for slots that must never match).
//!
//! Readers take no lock and check no sequence count: they read a slot's `dtv_offset`, the entry,
//! and the slot's `tp` last (`uapi/linux/kstls.h`). What makes that safe is the order of the
//! writes here: only a `fill` for the running thread gives a slot its `tp` or an entry its module,
//! and every other change takes away, module before block and `tp` before the entries, with
//! release ordering between them. The kernel's own record of a slot (owner, thread pointer) is in
//! `State`, never read back from the mapped words.
//!
//! All writes happen under the cache's spinlock, never with an allocation or a user copy inside:
//! from `GET_ADDR` (fill), `UNREGISTER` (forget a module), `SET_MODE` (strict: empty everything)
//! and the `sched_process_exit` probe (forget a thread before its thread pointer can be reused).

use core::{
    mem::{
        offset_of,
        size_of, //
    },
    ptr::NonNull,
    sync::atomic::{
        fence,
        AtomicU64,
        Ordering, //
    },
};

use kernel::{
    bindings,
    mm::virt::VmaNew,
    new_spinlock,
    page::{
        BorrowedPage,
        PAGE_SIZE, //
    },
    prelude::*,
    sync::{
        Arc,
        SpinLock, //
    },
    uaccess::{
        UserPtr,
        UserSlice, //
    },
};

use crate::arch;
use crate::budget;
use crate::quota::{
    Charge,
    UserQuota, //
};
use crate::uapi::*;

pub(crate) const NR_SLOTS_LOG2: u32 = KSTLS_CACHE_SLOTS_LOG2;
pub(crate) const NR_SLOTS: usize = 1 << NR_SLOTS_LOG2;
pub(crate) const NR_PROBES: usize = KSTLS_CACHE_PROBES as usize;
/// Entries per cached thread: one page of them.
pub(crate) const DTV_ENTRIES: usize = KSTLS_CACHE_DTV_ENTRIES as usize;
const _: () = assert!(DTV_ENTRIES * size_of::<kstls_cache_dtv_entry>() == PAGE_SIZE);
// uapi/linux/kstls.h promises a power of two: a module's entry is at
// `index & (DTV_ENTRIES - 1)`.
const _: () = assert!(DTV_ENTRIES.is_power_of_two());

/// The byte offset, in a thread's page of entries, of the entry of the module at `index`:
/// modules whose indices are congruent modulo `DTV_ENTRIES` share it (the last one filled wins).
fn entry_offset(index: u32) -> usize {
    (index as usize & (DTV_ENTRIES - 1)) * size_of::<kstls_cache_dtv_entry>()
}

const WORD: usize = size_of::<u64>();
const SLOT_WORDS: usize = size_of::<kstls_cache_slot>() / WORD;
/// Words of a slot: the thread pointer, then the entries' offset.
const SLOT_TP: usize = offset_of!(kstls_cache_slot, tp) / WORD;
const SLOT_DTV: usize = offset_of!(kstls_cache_slot, dtv_offset) / WORD;
/// Bytes into an entry: the module id, then the block.
const ENTRY_MODULE: usize = offset_of!(kstls_cache_dtv_entry, module);
const ENTRY_BLOCK: usize = offset_of!(kstls_cache_dtv_entry, block);
const _: () = assert!(ENTRY_MODULE % WORD == 0 && ENTRY_BLOCK % WORD == 0);
/// The header's `mode` is the low half of its word (x86-64 is little-endian), `reserved0`, which
/// stays 0, the high half: storing the word stores `mode`.
const HEADER_MODE: usize = offset_of!(kstls_cache_header, mode);
const _: () = assert!(HEADER_MODE % WORD == 0);
const _: () = assert!(offset_of!(kstls_cache_header, reserved0) == HEADER_MODE + 4);
const _: () = assert!(cfg!(target_endian = "little"));
const SLOTS_OFFSET: usize = KSTLS_CACHE_SLOTS_OFFSET as usize;
const _: () = assert!(SLOTS_OFFSET == PAGE_SIZE);
const DTV_BASE: usize = SLOTS_OFFSET + NR_SLOTS * size_of::<kstls_cache_slot>();
/// The mapped `tp` of a slot that several live tasks share.
const TP_SHARED: u64 = KSTLS_CACHE_TP_SHARED as u64;
/// Owner of a slot whose thread pointer several live tasks share: nobody can be cached there.
const POISONED: usize = usize::MAX;

/// The home slot of a thread pointer (`uapi/linux/kstls.h` documents the same formula).
pub(crate) fn hash(tp: u64) -> usize {
    (tp.wrapping_mul(KSTLS_CACHE_HASH_MUL as u64) >> (64 - NR_SLOTS_LOG2)) as usize
}

/// The calling thread's thread pointer, if the cache can be keyed by it: the psABI self-pointer
/// at `%fs:0` is the real FS base, which is what user space will hash by. Reads user memory, so
/// it runs before any lock is taken.
pub(crate) fn thread_pointer() -> Option<u64> {
    let fsbase = arch::current_fsbase();
    let at = usize::try_from(fsbase).ok()?;
    let self_ptr: u64 = UserSlice::new(UserPtr::from_addr(at), 8)
        .reader()
        .read()
        .ok()?;
    (self_ptr == fsbase).then_some(fsbase)
}

/// Bytes of a cache for `threads` cached threads.
pub(crate) fn size_for(threads: usize) -> Option<usize> {
    threads
        .checked_add(1)?
        .checked_mul(PAGE_SIZE)?
        .checked_add(DTV_BASE)
}

/// Bytes of kernel memory a cache for `threads` threads keeps: the mapped pages and its state.
fn kernel_bytes_for(threads: usize) -> Option<usize> {
    let owners = budget::alloc_size(NR_SLOTS * size_of::<usize>());
    let keys = budget::alloc_size(NR_SLOTS * size_of::<u64>());
    let free = budget::alloc_size(threads.checked_mul(size_of::<usize>())?);
    size_for(threads)?
        .checked_add(owners + keys + free)?
        .checked_add(budget::alloc_size(size_of::<Cache>()))
}

/// Whether `vma` is a mapping of the whole cache of `size` bytes that `Cache::map` accepts:
/// read-only, from offset 0, and exactly as long. Checked before a cache is made, so a refused
/// mapping allocates nothing.
pub(crate) fn check_vma(vma: &VmaNew, size: usize) -> Result {
    if vma.writable() || vma.end() - vma.start() != size {
        return Err(EINVAL);
    }
    // SAFETY: `vm_pgoff` of a VMA being set up is plain data.
    if unsafe { (*vma.as_ptr()).vm_pgoff } != 0 {
        return Err(EINVAL);
    }
    Ok(())
}

/// The fields protected by the cache lock (the mapped words are written under it too).
struct State {
    /// Per slot: the task whose blocks it caches (its address, compared only), 0 when free.
    owners: KVVec<usize>,
    /// Per slot: the thread pointer it is for (the mapped `tp` of a shared slot is
    /// `TP_SHARED` instead), 0 when free.
    keys: KVVec<u64>,
    /// Entry pages not in use; capacity for all of them is reserved, so pushing never allocates.
    free_dtvs: KVVec<usize>,
    strict: bool,
}

/// The cache of one context.
#[pin_data]
pub(crate) struct Cache {
    /// The mapped memory, zeroed vmalloc pages, as words readers load concurrently.
    mem: VVec<AtomicU64>,
    threads: usize,
    #[pin]
    state: SpinLock<State>,
    /// The cache's memory, charged to its user's quota while it lives.
    _charge: Charge,
}

impl Cache {
    /// A cache for `threads` threads, charged to `quota` (`EDQUOT` when it has no room for it).
    pub(crate) fn new(
        threads: usize,
        strict: bool,
        quota: &Arc<UserQuota>,
    ) -> Result<impl PinInit<Self, Error>> {
        let charge = Charge::new(quota, kernel_bytes_for(threads).ok_or(ENOMEM)? as u64)?;
        let bytes = size_for(threads).ok_or(ENOMEM)?;
        let words = bytes / WORD;
        let mut mem = VVec::with_capacity(words, GFP_KERNEL_ACCOUNT)?;
        for _ in 0..words {
            mem.push_within_capacity(AtomicU64::new(0))
                .map_err(|_| ENOMEM)?;
        }
        let mut owners = KVVec::with_capacity(NR_SLOTS, GFP_KERNEL_ACCOUNT)?;
        owners.extend_with(NR_SLOTS, 0, GFP_KERNEL_ACCOUNT)?;
        let mut keys = KVVec::with_capacity(NR_SLOTS, GFP_KERNEL_ACCOUNT)?;
        keys.extend_with(NR_SLOTS, 0, GFP_KERNEL_ACCOUNT)?;
        let mut free_dtvs = KVVec::with_capacity(threads, GFP_KERNEL_ACCOUNT)?;
        for d in (0..threads).rev() {
            free_dtvs.push_within_capacity(d).map_err(|_| ENOMEM)?;
        }
        let header = kstls_cache_header {
            magic: KSTLS_CACHE_MAGIC,
            version: KSTLS_CACHE_VERSION,
            nr_slots: NR_SLOTS as u32,
            nr_slots_log2: NR_SLOTS_LOG2,
            nr_probes: NR_PROBES as u32,
            dtv_entries: DTV_ENTRIES as u32,
            mode: if strict { KSTLS_MODE_STRICT } else { 0 },
            slots_offset: SLOTS_OFFSET as u64,
            ..Default::default()
        };
        // SAFETY: `kstls_cache_header` is `repr(C)`, 64 bytes of integers without padding
        // (checked at compile time in `uapi.rs`), so it is also 8 initialised words.
        let hw: [u64; 8] = unsafe { core::mem::transmute(header) };
        for (i, w) in hw.iter().enumerate() {
            mem[i].store(*w, Ordering::Relaxed);
        }
        Ok(try_pin_init!(Self {
            mem,
            threads,
            state <- new_spinlock!(State {
                owners,
                keys,
                free_dtvs,
                strict
            }),
            _charge: charge,
        }))
    }

    /// Bytes user space maps.
    pub(crate) fn size(&self) -> usize {
        self.mem.len() * WORD
    }

    fn word(&self, byte: usize) -> &AtomicU64 {
        &self.mem[byte / WORD]
    }

    fn slot_word(&self, slot: usize, field: usize) -> &AtomicU64 {
        &self.mem[SLOTS_OFFSET / WORD + slot * SLOT_WORDS + field]
    }

    fn dtv_offset(d: usize) -> usize {
        DTV_BASE + d * PAGE_SIZE
    }

    /// Publishes `slot` for the thread pointer `tp` (the running thread's) with the entries at
    /// byte `dtv`: the offset first, so a reader that sees `tp` sees the offset too.
    fn publish_slot(&self, slot: usize, tp: u64, dtv: usize) {
        self.slot_word(slot, SLOT_DTV)
            .store(dtv as u64, Ordering::Relaxed);
        self.slot_word(slot, SLOT_TP).store(tp, Ordering::Release);
    }

    /// Takes `slot` away from its thread: its mapped `tp` becomes `tp` (0: free, or
    /// `TP_SHARED`) before anything else changes, then its entries point to `dtv`,
    /// and its old entry page is emptied and given back. A reader that still sees the old `tp`
    /// afterwards read nothing of what follows.
    fn retire_slot(&self, st: &mut State, slot: usize, tp: u64, dtv: usize) {
        let old = self.slot_word(slot, SLOT_DTV).load(Ordering::Relaxed) as usize;
        self.slot_word(slot, SLOT_TP).store(tp, Ordering::Relaxed);
        fence(Ordering::Release);
        self.slot_word(slot, SLOT_DTV)
            .store(dtv as u64, Ordering::Relaxed);
        let empty = Self::dtv_offset(self.threads);
        if st.owners[slot] != POISONED && old >= DTV_BASE && old < empty {
            for w in 0..PAGE_SIZE / WORD {
                self.word(old + w * WORD).store(0, Ordering::Relaxed);
            }
            // Cannot fail: capacity for every page was reserved in `new`.
            let _ = st
                .free_dtvs
                .push_within_capacity((old - DTV_BASE) / PAGE_SIZE);
        }
    }

    /// Empties `slot` and gives its entry page back.
    fn clear_slot(&self, st: &mut State, slot: usize) {
        self.retire_slot(st, slot, 0, 0);
        st.owners[slot] = 0;
        st.keys[slot] = 0;
    }

    /// The slot of `task` among those its thread pointer `tp` may use.
    fn slot_of(st: &State, task: usize, tp: u64) -> Option<usize> {
        let home = hash(tp);
        (0..NR_PROBES)
            .map(|k| (home + k) & (NR_SLOTS - 1))
            .find(|&i| st.owners[i] == task)
    }

    /// Records, for the thread `task` with thread pointer `tp`, that module `id` (at `index`,
    /// the id's low half) has its block at `block`. Returns the thread's slot if the entry was
    /// published: not when the thread cannot be cached (strict mode, a shared thread pointer, a
    /// full cache). The caller records the slot where the exit probe finds it (`exit_hook.rs`).
    ///
    /// `task` must be the running thread and `tp` its thread pointer, since it publishes `tp`
    /// (see this file's doc). `cached` is the thread's own record of the thread pointer it was
    /// last published under (0: never), which this keeps up to date: a thread that changed its
    /// thread pointer since loses its old slot, so that a task has one slot, the one the exit
    /// probe finds.
    pub(crate) fn fill(
        &self,
        task: usize,
        tp: u64,
        cached: &mut u64,
        id: u64,
        index: u32,
        block: usize,
    ) -> Option<usize> {
        if tp == 0 || tp == TP_SHARED {
            return None;
        }
        let mut st = self.state.lock();
        if st.strict {
            return None;
        }
        if *cached != 0 && *cached != tp {
            if let Some(old) = Self::slot_of(&st, task, *cached) {
                self.clear_slot(&mut st, old);
            }
            *cached = 0;
        }
        let home = hash(tp);
        let mut mine = None;
        let mut free = None;
        for k in 0..NR_PROBES {
            let i = (home + k) & (NR_SLOTS - 1);
            let owner = st.owners[i];
            if owner == 0 {
                free = free.or(Some(i));
            } else if st.keys[i] == tp {
                if owner == task {
                    mine = Some(i);
                    break;
                }
                if owner != POISONED {
                    // Two live tasks share this thread pointer: user space cannot tell them
                    // apart, so neither may be answered from the cache, for as long as the
                    // context lives (the slot never shows `tp` again).
                    self.retire_slot(&mut st, i, TP_SHARED, Self::dtv_offset(self.threads));
                    st.owners[i] = POISONED;
                }
                return None;
            }
        }
        let slot = match mine {
            Some(i) => i,
            None => {
                let (Some(i), Some(d)) = (free, st.free_dtvs.pop()) else {
                    return None;
                };
                st.owners[i] = task;
                st.keys[i] = tp;
                self.publish_slot(i, tp, Self::dtv_offset(d));
                i
            }
        };
        // Only this (running) thread reads its entries with a matching `tp`, and it is here, not
        // reading: the order of these two stores matters to nobody.
        let entry =
            self.slot_word(slot, SLOT_DTV).load(Ordering::Relaxed) as usize + entry_offset(index);
        self.word(entry + ENTRY_BLOCK)
            .store(block as u64, Ordering::Relaxed);
        self.word(entry + ENTRY_MODULE).store(id, Ordering::Release);
        *cached = tp;
        Some(slot)
    }

    /// Forgets the thread `task` (it is leaving the address space: exiting, or exec'ing) before
    /// its thread pointer can be reused, from the slot `fill` last returned for it. The slot may
    /// have been taken from it since (a shared thread pointer, strict mode): then there is
    /// nothing to forget. One slot is looked at, whatever the size of the cache.
    pub(crate) fn forget_slot(&self, task: usize, slot: usize) {
        let mut st = self.state.lock();
        if st.owners.get(slot) == Some(&task) {
            self.clear_slot(&mut st, slot);
        }
    }

    /// Forgets every thread's entry for module `id` (it is being unregistered; its blocks are
    /// freed after this returns).
    pub(crate) fn forget_module(&self, id: u64, index: u32) {
        let st = self.state.lock();
        for i in 0..NR_SLOTS {
            if st.owners[i] == 0 || st.owners[i] == POISONED {
                continue;
            }
            let entry =
                self.slot_word(i, SLOT_DTV).load(Ordering::Relaxed) as usize + entry_offset(index);
            // The entry may hold another module of the same entry index now: leave that one.
            if self.word(entry + ENTRY_MODULE).load(Ordering::Relaxed) == id {
                // The module first: a reader that still sees the id read the block before this.
                self.word(entry + ENTRY_MODULE).store(0, Ordering::Relaxed);
                self.word(entry + ENTRY_BLOCK).store(0, Ordering::Release);
            }
        }
    }

    /// Strict mode on: empty the cache and stop filling it; off: fill again.
    pub(crate) fn set_strict(&self, strict: bool) {
        let mut st = self.state.lock();
        st.strict = strict;
        let mode = if strict { KSTLS_MODE_STRICT } else { 0 };
        self.word(HEADER_MODE)
            .store(u64::from(mode), Ordering::Release);
        if strict {
            // A shared slot already answers nobody, and stays so (see `fill`).
            for i in 0..NR_SLOTS {
                if st.owners[i] != 0 && st.owners[i] != POISONED {
                    self.clear_slot(&mut st, i);
                }
            }
        }
    }

    /// Threads cached now, for fdinfo.
    pub(crate) fn cached_threads(&self) -> usize {
        let st = self.state.lock();
        st.owners
            .iter()
            .filter(|&&o| o != 0 && o != POISONED)
            .count()
    }

    /// Maps the whole cache, read-only, into `vma`.
    pub(crate) fn map(&self, vma: &VmaNew) -> Result {
        check_vma(vma, self.size())?;
        vma.try_clear_maywrite()?;
        vma.try_clear_mayexec()?;
        vma.set_dontcopy();
        vma.set_dontexpand();
        vma.set_dontdump();
        let mixed = vma.set_mixedmap();
        for off in (0..self.size()).step_by(PAGE_SIZE) {
            let addr = self.word(off).as_ptr();
            // SAFETY: `addr` is inside the vmalloc allocation `self.mem`, which lives as long as
            // `self`; `vmalloc_to_page` only looks it up.
            let page = unsafe { bindings::vmalloc_to_page(addr.cast()) };
            let page = NonNull::new(page).ok_or(ENOMEM)?;
            // SAFETY: The page belongs to `self.mem` and outlives this borrow; the mapping takes
            // its own reference on it (`vm_insert_page`), which keeps it alive while mapped.
            let page = unsafe { BorrowedPage::from_raw(page) };
            mixed.vm_insert_page(vma.start() + off, &page)?;
        }
        Ok(())
    }
}

#[kunit_tests(rust_kstls_cache)]
mod tests {
    use super::*;
    use crate::quota::ContextSlot;

    /// A quota for the tests' caches, of a user no process is.
    fn user() -> Result<ContextSlot> {
        ContextSlot::open_for(0x7ff9_0001, u64::MAX)
    }

    #[test]
    fn cache_layout_matches_the_header() {
        assert_eq!(size_of::<kstls_cache_header>(), 64);
        assert_eq!(size_of::<kstls_cache_slot>(), 16);
        assert_eq!(core::mem::offset_of!(kstls_cache_slot, tp), SLOT_TP * WORD);
        assert_eq!(
            core::mem::offset_of!(kstls_cache_slot, dtv_offset),
            SLOT_DTV * WORD
        );
        assert_eq!(size_of::<kstls_cache_dtv_entry>(), 16);
        assert_eq!(DTV_ENTRIES, 256);
        assert_eq!(core::mem::offset_of!(kstls_cache_header, mode), 24);
        assert_eq!(DTV_BASE % PAGE_SIZE, 0);
    }

    #[test]
    fn hash_spreads_stack_aligned_thread_pointers() {
        // glibc thread pointers differ by the stack size: the low bits are all alike.
        let base = 0x7f12_3456_7000u64;
        // A bitmap: a bool per slot would not fit the kernel stack.
        let mut seen = [0u64; NR_SLOTS / 64];
        let mut distinct = 0;
        for i in 0..1024u64 {
            let h = hash(base + i * (8 << 20));
            assert!(h < NR_SLOTS);
            if seen[h / 64] & (1 << (h % 64)) == 0 {
                seen[h / 64] |= 1 << (h % 64);
                distinct += 1;
            }
        }
        assert!(distinct > 900);
    }

    #[test]
    fn fill_forget_and_strict() -> Result {
        let (mut ca, mut cc) = (0u64, 0u64);
        let u = user()?;
        let c = KBox::pin_init(Cache::new(4, false, u.quota())?, GFP_KERNEL)?;
        let tp = 0x7f00_0000_1000u64;
        let id = (1u64 << 32) | 3;
        assert!(c.fill(0xaaaa, tp, &mut ca, id, 3, 0x5000).is_some());
        let home = hash(tp);
        assert_eq!(c.slot_word(home, SLOT_TP).load(Ordering::Relaxed), tp);
        let dtv = c.slot_word(home, SLOT_DTV).load(Ordering::Relaxed) as usize;
        assert!(dtv >= DTV_BASE);
        assert_eq!(c.word(dtv + 3 * 16).load(Ordering::Relaxed), id);
        assert_eq!(c.word(dtv + 3 * 16 + 8).load(Ordering::Relaxed), 0x5000);
        c.forget_module(id, 3);
        assert_eq!(c.word(dtv + 3 * 16).load(Ordering::Relaxed), 0);
        assert_eq!(c.word(dtv + 3 * 16 + 8).load(Ordering::Relaxed), 0);
        assert!(c.fill(0xaaaa, tp, &mut ca, id, 3, 0x5000).is_some());
        c.forget_slot(0xaaaa, hash(tp));
        assert_eq!(c.slot_word(home, SLOT_TP).load(Ordering::Relaxed), 0);
        assert_eq!(c.slot_word(home, SLOT_DTV).load(Ordering::Relaxed), 0);
        assert_eq!(c.word(dtv + 3 * 16).load(Ordering::Relaxed), 0);
        assert_eq!(c.cached_threads(), 0);
        c.set_strict(true);
        assert_eq!(c.cached_threads(), 0);
        assert!(c
            .fill(0xcccc, tp + 0x1000, &mut cc, id, 3, 0x7000)
            .is_none());
        assert_eq!(c.cached_threads(), 0);
        assert_eq!(
            c.word(HEADER_MODE).load(Ordering::Relaxed),
            u64::from(KSTLS_MODE_STRICT)
        );
        c.set_strict(false);
        assert!(c
            .fill(0xcccc, tp + 0x1000, &mut cc, id, 3, 0x7000)
            .is_some());
        Ok(())
    }

    #[test]
    fn a_shared_thread_pointer_is_never_answered_again() -> Result {
        let (mut ca, mut cb) = (0u64, 0u64);
        let u = user()?;
        let c = KBox::pin_init(Cache::new(4, false, u.quota())?, GFP_KERNEL)?;
        let tp = 0x7f00_0000_1000u64;
        let id = (1u64 << 32) | 3;
        let home = hash(tp);
        assert!(c.fill(0xaaaa, tp, &mut ca, id, 3, 0x5000).is_some());
        let dtv = c.slot_word(home, SLOT_DTV).load(Ordering::Relaxed) as usize;
        // Another task with the same thread pointer: the slot stops showing it, for good.
        assert!(c.fill(0xbbbb, tp, &mut cb, id, 3, 0x6000).is_none());
        assert_eq!(
            c.slot_word(home, SLOT_TP).load(Ordering::Relaxed),
            TP_SHARED
        );
        assert_eq!(c.word(dtv + 3 * 16).load(Ordering::Relaxed), 0);
        let empty = c.slot_word(home, SLOT_DTV).load(Ordering::Relaxed) as usize;
        assert_eq!(empty, Cache::dtv_offset(4));
        assert_eq!(c.word(empty + 3 * 16).load(Ordering::Relaxed), 0);
        c.forget_slot(0xaaaa, hash(tp));
        assert!(c.fill(0xaaaa, tp, &mut ca, id, 3, 0x5000).is_none());
        c.set_strict(true);
        c.set_strict(false);
        assert!(c.fill(0xbbbb, tp, &mut cb, id, 3, 0x6000).is_none());
        assert_eq!(
            c.slot_word(home, SLOT_TP).load(Ordering::Relaxed),
            TP_SHARED
        );
        assert_eq!(c.cached_threads(), 0);
        Ok(())
    }

    #[test]
    fn a_thread_that_moves_keeps_one_slot() -> Result {
        let mut ca = 0u64;
        let u = user()?;
        let c = KBox::pin_init(Cache::new(4, false, u.quota())?, GFP_KERNEL)?;
        let (old, new) = (0x7f00_0000_1000u64, 0x7f00_4000_1000u64);
        let id = (1u64 << 32) | 3;
        assert!(c.fill(0xaaaa, old, &mut ca, id, 3, 0x5000).is_some());
        assert!(c.fill(0xaaaa, new, &mut ca, id, 3, 0x5000).is_some());
        assert_eq!(ca, new);
        assert_eq!(c.cached_threads(), 1);
        assert_eq!(c.slot_word(hash(old), SLOT_TP).load(Ordering::Relaxed), 0);
        assert_eq!(c.slot_word(hash(new), SLOT_TP).load(Ordering::Relaxed), new);
        c.forget_slot(0xaaaa, hash(new));
        assert_eq!(c.cached_threads(), 0);
        // Both entry pages are free again.
        for t in 0..4u64 {
            assert!(c
                .fill(
                    0x100 + t as usize,
                    0x7f10_0000_0000 + (t << 23),
                    &mut 0,
                    id,
                    3,
                    0x9000
                )
                .is_some());
        }
        Ok(())
    }

    #[test]
    fn modules_of_one_index_share_an_entry() -> Result {
        let mut ca = 0u64;
        let u = user()?;
        let c = KBox::pin_init(Cache::new(4, false, u.quota())?, GFP_KERNEL)?;
        let tp = 0x7f00_0000_2000u64;
        let (a, b) = ((1u64 << 32) | 3, (1u64 << 32) | (3 + DTV_ENTRIES as u64));
        assert!(c.fill(0xaaaa, tp, &mut ca, a, 3, 0x5000).is_some());
        assert!(c
            .fill(0xaaaa, tp, &mut ca, b, 3 + DTV_ENTRIES as u32, 0x6000)
            .is_some());
        let dtv = c.slot_word(hash(tp), SLOT_DTV).load(Ordering::Relaxed) as usize;
        // The last one filled holds the entry; forgetting the other leaves it.
        assert_eq!(c.word(dtv + 3 * 16).load(Ordering::Relaxed), b);
        assert_eq!(c.word(dtv + 3 * 16 + 8).load(Ordering::Relaxed), 0x6000);
        c.forget_module(a, 3);
        assert_eq!(c.word(dtv + 3 * 16).load(Ordering::Relaxed), b);
        c.forget_module(b, 3 + DTV_ENTRIES as u32);
        assert_eq!(c.word(dtv + 3 * 16).load(Ordering::Relaxed), 0);
        Ok(())
    }

    #[test]
    fn full_cache_fills_nothing_more() -> Result {
        let u = user()?;
        let c = KBox::pin_init(Cache::new(2, false, u.quota())?, GFP_KERNEL)?;
        let id = 1u64 << 32;
        for t in 0..4u64 {
            let published = c.fill(
                0x100 + t as usize,
                0x7f00_0000_0000 + (t << 23),
                &mut 0,
                id,
                0,
                0x9000,
            );
            assert_eq!(published.is_some(), t < 2);
        }
        assert_eq!(c.cached_threads(), 2);
        Ok(())
    }
}
