// SPDX-License-Identifier: GPL-2.0

//! The fast-path cache, the library's side of the protocol in `uapi/linux/kstls.h`: where the cache
//! is found, how it is mapped and withdrawn, and the lookup. This file is the one statement of
//! that contract; the assembly `__tls_get_addr` in `entry.rs` is its other reader and takes
//! every symbol and immediate it builds in from here ([`EMPTY_CACHE`], [`FAST`], the `ASM_*`
//! constants), and [`fast_lookup`] is the same lookup in Rust for `kstls_get_tls_addr` and the
//! Rust API.
//!
//! **The lookup.** Hash the thread pointer `tp` (`%fs:0`) to its home slot, `(tp *
//! KSTLS_CACHE_HASH_MUL) >> (64 - KSTLS_CACHE_SLOTS_LOG2)`; read the slot's `dtv_offset`, the
//! entry of the module's registry slot (`id & (KSTLS_CACHE_DTV_ENTRIES - 1)`): its block, then
//! its module id, and the slot's `tp` last (x86-64 keeps loads in program order, which is all
//! the protocol asks of a reader). It is a hit when the module equals the full id and the `tp`
//! read last is the reader's own: the address is `block + offset`. Otherwise the next slots, up
//! to `KSTLS_CACHE_PROBES` in all; a slot with the reader's `tp` but another module ends the
//! search (a miss). The cache version's geometry is built in: [`map`] publishes no cache whose
//! header disagrees with it.
//!
//! **Finding the cache.** A lookup reads `EMPTY_CACHE + FAST.delta`. `EMPTY_CACHE` is a zeroed
//! `.bss` array as large as the part of a cache a lookup can read before its `tp` check fails,
//! where no slot holds any thread's pointer: while there is no cache every lookup misses with
//! no test for "is there a cache". `FAST` is a page of its own with `MADV_WIPEONFORK`: a forked
//! child reads `delta` as 0, hence `EMPTY_CACHE`, never the parent's mapping (which the kernel
//! does not copy into the child), and takes the slow path, where it adopts the context and maps
//! its own cache.

use core::ffi::c_void;
use core::mem::offset_of;
use core::mem::size_of;
use core::ptr::null_mut;
use core::sync::atomic::AtomicU64;
use core::sync::atomic::Ordering::Acquire;
use core::sync::atomic::Ordering::Relaxed;
use core::sync::atomic::Ordering::Release;

use rustix::fd::BorrowedFd;
use rustix::mm::Advice;
use rustix::mm::MapFlags;
use rustix::mm::ProtFlags;

use crate::arch;
use crate::arch::PAGE;
use crate::uapi::kstls_cache_dtv_entry;
use crate::uapi::kstls_cache_header;
use crate::uapi::kstls_cache_slot;
use crate::uapi::kstls_info;
use crate::uapi::KSTLS_CACHE_DTV_ENTRIES;
use crate::uapi::KSTLS_CACHE_HASH_MUL;
use crate::uapi::KSTLS_CACHE_MAGIC;
use crate::uapi::KSTLS_CACHE_PROBES;
use crate::uapi::KSTLS_CACHE_SLOTS_LOG2;
use crate::uapi::KSTLS_CACHE_SLOTS_OFFSET;
use crate::uapi::KSTLS_CACHE_VERSION;
use crate::uapi::KSTLS_FEAT_CACHE;

const SLOT: usize = size_of::<kstls_cache_slot>();
const ENTRY: usize = size_of::<kstls_cache_dtv_entry>();
const NR_SLOTS: u64 = 1 << KSTLS_CACHE_SLOTS_LOG2;

// The layout the assembly reads with fixed displacements: a slot is `{tp, dtv_offset}` and an
// entry `{module, block}`, 16 bytes each (`and $-16`, `shl $4`), and `movzbl` is the registry
// slot modulo 256 entries.
const _: () = assert!(SLOT == 16);
const _: () = assert!(offset_of!(kstls_cache_slot, tp) == 0);
const _: () = assert!(offset_of!(kstls_cache_slot, dtv_offset) == 8);
const _: () = assert!(ENTRY == 16);
const _: () = assert!(offset_of!(kstls_cache_dtv_entry, module) == 0);
const _: () = assert!(offset_of!(kstls_cache_dtv_entry, block) == 8);
const _: () = assert!(KSTLS_CACHE_DTV_ENTRIES == 256);

/// The immediates of the assembly lookup, all derived from the uapi's geometry: the hash
/// multiplier; the right shift that leaves the home slot's index times the slot size (then
/// `and $-16`); the byte offset of the slot array; the index mask of the probe loop, in bytes;
/// the probes after the home slot's.
#[cfg(any(feature = "capi", test))]
pub(crate) const ASM_HASH_MUL: i64 = KSTLS_CACHE_HASH_MUL;
#[cfg(any(feature = "capi", test))]
pub(crate) const ASM_HASH_SHIFT: u32 = 64 - 4 - KSTLS_CACHE_SLOTS_LOG2;
#[cfg(any(feature = "capi", test))]
pub(crate) const ASM_SLOTS: u32 = KSTLS_CACHE_SLOTS_OFFSET;
#[cfg(any(feature = "capi", test))]
pub(crate) const ASM_SLOT_MASK: u64 = (NR_SLOTS - 1) << 4;
#[cfg(any(feature = "capi", test))]
pub(crate) const ASM_PROBES_AFTER_HOME: u32 = KSTLS_CACHE_PROBES - 1;

/// Bytes that a lookup may read from a cache before its tp check fails: the header page (entries
/// at `dtv_offset` 0) and the slot array.
const EMPTY_CACHE_WORDS: usize = (KSTLS_CACHE_SLOTS_OFFSET as usize + NR_SLOTS as usize * SLOT) / 8;

/// What the lookups read while there is no cache: zeroes (in `.bss`, never written), where no
/// slot has a thread pointer, so every lookup misses. It saves the assembly entry a test.
pub(crate) static EMPTY_CACHE: [AtomicU64; EMPTY_CACHE_WORDS] =
    [const { AtomicU64::new(0) }; EMPTY_CACHE_WORDS];

/// The wipe-on-fork page: where the mapped cache is, for the lookups. A page of its own, so
/// that `MADV_WIPEONFORK` takes nothing else with it.
///
/// `delta` is written last when the cache is published and first when it is withdrawn, and is
/// what the lookups use: non-zero means every other field is valid.
#[repr(C, align(4096))]
pub(crate) struct FastState {
    /// Address of the mapped cache minus that of `EMPTY_CACHE`, 0: no cache in this process
    /// (the lookups then read `EMPTY_CACHE`). The assembly adds the word at `FAST` itself.
    pub(crate) delta: AtomicU64,
    /// The largest `dtv_offset` whose entries lie inside the mapping.
    dtv_limit: AtomicU64,
    /// Length of the cache mapping.
    cache_len: AtomicU64,
    /// Whether the page is wiped on fork: without that there is no fast path, since a forked
    /// child could not tell that the cache is not its own. (A child reads false and asks again.)
    wipes: AtomicU64,
}

const _: () = assert!(size_of::<FastState>() == PAGE);
const _: () = assert!(offset_of!(FastState, delta) == 0);

/// The one `FastState`, zero (no cache) until a context maps one.
pub(crate) static FAST: FastState = FastState {
    delta: AtomicU64::new(0),
    dtv_limit: AtomicU64::new(0),
    cache_len: AtomicU64::new(0),
    wipes: AtomicU64::new(0),
};

fn empty_cache() -> u64 {
    EMPTY_CACHE.as_ptr() as u64
}

/// The mapped cache's address, if there is one.
fn cache() -> Option<u64> {
    let delta = FAST.delta.load(Acquire);
    (delta != 0).then(|| empty_cache().wrapping_add(delta))
}

/// Makes `FAST` wipe-on-fork, once per process. Without `MADV_WIPEONFORK` (a kernel built
/// without `CONFIG_ADVISE_SYSCALLS`, or a loader that mapped our `.bss` from a file) there is
/// simply no fast path.
fn state_page() -> bool {
    if FAST.wipes.load(Relaxed) != 0 {
        return true;
    }
    let page = core::ptr::addr_of!(FAST).cast_mut().cast::<c_void>();
    // SAFETY: `FAST` is a whole page of our own `.bss` (its size and alignment are one page),
    // so the advice changes nothing but the fate of these bytes in a forked child.
    if unsafe { rustix::mm::madvise(page, PAGE, Advice::LinuxWipeOnFork) }.is_err() {
        return false;
    }
    FAST.wipes.store(1, Relaxed);
    true
}

/// Whether a cache of `len` bytes with header `h` has the geometry the lookups build in; if so
/// the largest `dtv_offset` whose entries lie inside it.
fn dtv_limit(h: &kstls_cache_header, len: usize) -> Option<u64> {
    let n = h.nr_slots as u64;
    let dtv_bytes = (h.dtv_entries as u64).saturating_mul(ENTRY as u64);
    let ok = h.magic == KSTLS_CACHE_MAGIC
        && h.version == KSTLS_CACHE_VERSION
        && h.nr_slots_log2 == KSTLS_CACHE_SLOTS_LOG2
        && n == NR_SLOTS
        && h.nr_probes == KSTLS_CACHE_PROBES
        && h.dtv_entries == KSTLS_CACHE_DTV_ENTRIES
        && h.slots_offset == KSTLS_CACHE_SLOTS_OFFSET as u64
        && h.slots_offset
            .checked_add(n * SLOT as u64)
            .is_some_and(|end| end <= len as u64)
        && dtv_bytes <= len as u64;
    ok.then(|| len as u64 - dtv_bytes)
}

/// Maps and publishes the cache of the context `fd` when the kernel offers one (`info`) and its
/// header makes sense; on any doubt there is no cache, and every access takes the ioctl.
pub(crate) fn map(fd: BorrowedFd<'_>, info: &kstls_info) {
    if !state_page() {
        return;
    }
    let len = info.cache_size as usize;
    if info.features & KSTLS_FEAT_CACHE == 0 || len < size_of::<kstls_cache_header>() {
        return;
    }
    // The lookup reads %fs:0: only when the thread pointer follows the psABI (every libc's
    // does; a program without libc may have no FS base at all).
    let fs = arch::fs_base();
    // SAFETY: `fs` is this thread's FS base, tested to be non-zero and hence readable.
    if fs == 0 || unsafe { arch::thread_pointer() } != fs {
        return;
    }
    // SAFETY: A shared read-only mapping of the device, as uapi/linux/kstls.h describes.
    let Ok(p) =
        (unsafe { rustix::mm::mmap(null_mut(), len, ProtFlags::READ, MapFlags::SHARED, fd, 0) })
    else {
        return;
    };
    // SAFETY: The mapping is at least one header long.
    let h = unsafe { &*(p as *const kstls_cache_header) };
    let Some(limit) = dtv_limit(h, len) else {
        // SAFETY: Our own mapping, not yet published.
        let _ = unsafe { rustix::mm::munmap(p, len) };
        return;
    };
    FAST.cache_len.store(len as u64, Relaxed);
    FAST.dtv_limit.store(limit, Relaxed);
    // Never 0: the mapping is not `EMPTY_CACHE`.
    FAST.delta
        .store((p as u64).wrapping_sub(empty_cache()), Release);
}

/// Withdraws and unmaps the cache of this process, if any.
pub(crate) fn unmap() {
    let Some(base) = cache() else { return };
    FAST.delta.store(0, Release);
    let len = FAST.cache_len.swap(0, Relaxed);
    // SAFETY: The mapping `map` made, withdrawn above.
    let _ = unsafe { rustix::mm::munmap(base as *mut c_void, len as usize) };
}

/// The lookup (see the module doc) for the calling thread, in the published cache: the address
/// of `offset` in `module`, or `None` (a miss, or no cache).
pub(crate) fn fast_lookup(module: u64, offset: u64) -> Option<u64> {
    let cache = cache()?;
    // SAFETY: `cache()` gave an address: the cache was published, which required %fs:0 to be the
    // FS base.
    let tp = unsafe { arch::thread_pointer() };
    // SAFETY: The published cache: `map` checked its slot array lies in the mapping and set
    // `dtv_limit` for its entries.
    unsafe { lookup(cache, FAST.dtv_limit.load(Relaxed), tp, module, offset) }
}

/// The lookup on the cache at `cache` for the thread whose pointer is `tp`.
///
/// # Safety
///
/// `cache` is readable for `KSTLS_CACHE_SLOTS_OFFSET` plus the slot array, and for the entries
/// at every `dtv_offset` up to `dtv_limit`.
unsafe fn lookup(cache: u64, dtv_limit: u64, tp: u64, module: u64, offset: u64) -> Option<u64> {
    let slots = cache + KSTLS_CACHE_SLOTS_OFFSET as u64;
    // The id's registry slot, modulo dtv_entries (a power of two): the entry may hold another
    // module of the same index, which the id compare below rejects.
    let idx = module & 0xffff_ffff & (KSTLS_CACHE_DTV_ENTRIES as u64 - 1);
    let mut h = tp.wrapping_mul(KSTLS_CACHE_HASH_MUL as u64) >> (64 - KSTLS_CACHE_SLOTS_LOG2);
    for _ in 0..KSTLS_CACHE_PROBES {
        h &= NR_SLOTS - 1;
        // SAFETY: `h < NR_SLOTS`, and the caller guarantees the slot array is readable.
        let slot = unsafe { &*((slots + h * SLOT as u64) as *const [AtomicU64; 2]) };
        // The order of the protocol: dtv_offset, block, module, and the slot's tp last.
        let off = slot[1].load(Acquire);
        let e = cache + off.min(dtv_limit) + idx * ENTRY as u64;
        // SAFETY: `off` is bounded by `dtv_limit` and `idx < dtv_entries`, which keeps the entry
        // where the caller guarantees it is readable.
        let e = unsafe { &*(e as *const [AtomicU64; 2]) };
        let block = e[1].load(Acquire);
        let m = e[0].load(Acquire);
        if slot[0].load(Acquire) == tp {
            return (m == module && off <= dtv_limit).then(|| block.wrapping_add(offset));
        }
        h += 1;
    }
    None
}

#[cfg(test)]
mod tests {

    use std::sync::Mutex;

    use super::*;
    use crate::uapi::KSTLS_CACHE_TP_SHARED;
    use crate::uapi::KSTLS_MODULE_ID_MIN;

    /// Threads cached by the synthetic caches below.
    const THREADS: usize = 4;
    /// Where thread `t`'s entries are: after the slot array, one array per thread.
    const fn dtv_offset(t: usize) -> u64 {
        (KSTLS_CACHE_SLOTS_OFFSET as usize + NR_SLOTS as usize * SLOT + t * 256 * ENTRY) as u64
    }

    /// A cache page built to the layout of `uapi/linux/kstls.h`, as the kernel would fill it.
    struct Cache {
        words: Vec<u64>,
    }

    impl Cache {
        fn new() -> Self {
            let mut c = Cache {
                words: std::vec![0; dtv_offset(THREADS) as usize / 8],
            };
            let h = kstls_cache_header {
                magic: KSTLS_CACHE_MAGIC,
                version: KSTLS_CACHE_VERSION,
                nr_slots: NR_SLOTS as u32,
                nr_slots_log2: KSTLS_CACHE_SLOTS_LOG2,
                nr_probes: KSTLS_CACHE_PROBES,
                dtv_entries: KSTLS_CACHE_DTV_ENTRIES,
                slots_offset: KSTLS_CACHE_SLOTS_OFFSET as u64,
                ..Default::default()
            };
            *c.header() = h;
            c
        }

        fn header(&mut self) -> &mut kstls_cache_header {
            // SAFETY: The words start with room for a header, suitably aligned.
            unsafe { &mut *(self.words.as_mut_ptr() as *mut kstls_cache_header) }
        }

        fn len(&self) -> usize {
            self.words.len() * 8
        }

        fn addr(&self) -> u64 {
            self.words.as_ptr() as u64
        }

        fn limit(&self) -> u64 {
            dtv_offset(THREADS - 1)
        }

        fn set(&mut self, byte: u64, v: u64) {
            self.words[byte as usize / 8] = v;
        }

        /// Slot `i` holds thread `tp`, whose entries are array `t`.
        fn slot(&mut self, i: u64, tp: u64, t: usize) {
            let at = KSTLS_CACHE_SLOTS_OFFSET as u64 + (i % NR_SLOTS) * SLOT as u64;
            self.set(at, tp);
            self.set(at + 8, dtv_offset(t));
        }

        /// Thread array `t` caches `block` for `module`.
        fn entry(&mut self, t: usize, module: u64, block: u64) {
            let at = dtv_offset(t) + (module as u32 as u64 % 256) * ENTRY as u64;
            self.set(at, module);
            self.set(at + 8, block);
        }

        fn lookup(&self, tp: u64, module: u64, offset: u64) -> Option<u64> {
            // SAFETY: The words hold the header page, the slot array and the entry arrays at
            // every offset up to `limit()`.
            unsafe { lookup(self.addr(), self.limit(), tp, module, offset) }
        }
    }

    fn home(tp: u64) -> u64 {
        tp.wrapping_mul(KSTLS_CACHE_HASH_MUL as u64) >> (64 - KSTLS_CACHE_SLOTS_LOG2)
    }

    const TP: u64 = 0x7f12_3456_7740;
    const ID: u64 = (3 << 32) | 5;
    const BLOCK: u64 = 0x7f00_0000_1000;

    #[test]
    fn a_hit_in_the_home_slot_is_block_plus_offset() {
        let mut c = Cache::new();
        c.slot(home(TP), TP, 0);
        c.entry(0, ID, BLOCK);
        assert_eq!(c.lookup(TP, ID, 0), Some(BLOCK));
        assert_eq!(c.lookup(TP, ID, 0x18), Some(BLOCK + 0x18));
    }

    #[test]
    fn another_thread_or_generation_misses() {
        let mut c = Cache::new();
        c.slot(home(TP), TP, 0);
        c.entry(0, ID, BLOCK);
        assert_eq!(c.lookup(TP + 0x1000, ID, 0), None, "another thread pointer");
        assert_eq!(
            c.lookup(TP, ID + KSTLS_MODULE_ID_MIN, 0),
            None,
            "a newer generation"
        );
        assert_eq!(c.lookup(TP, ID + 1, 0), None, "another registry slot");
        assert_eq!(
            c.lookup(TP, ID + 256, 0),
            None,
            "a registry slot sharing the entry"
        );
    }

    #[test]
    fn modules_sharing_an_entry_hit_only_for_the_one_cached() {
        let mut c = Cache::new();
        let other = ID + 256;
        c.slot(home(TP), TP, 0);
        c.entry(0, other, BLOCK + 0x100);
        assert_eq!(c.lookup(TP, other, 4), Some(BLOCK + 0x104));
        assert_eq!(c.lookup(TP, ID, 4), None);
    }

    #[test]
    fn probing_finds_a_slot_after_the_home_slot() {
        let mut c = Cache::new();
        let h = home(TP);
        for i in 0..KSTLS_CACHE_PROBES as u64 - 1 {
            c.slot(h + i, 0x1000 + i, 1);
        }
        c.slot(h + KSTLS_CACHE_PROBES as u64 - 1, TP, 0);
        c.entry(0, ID, BLOCK);
        c.entry(1, ID, BLOCK + 0x5000);
        assert_eq!(c.lookup(TP, ID, 8), Some(BLOCK + 8));
    }

    #[test]
    fn probing_stops_after_nr_probes_slots() {
        let mut c = Cache::new();
        let h = home(TP);
        for i in 0..KSTLS_CACHE_PROBES as u64 {
            c.slot(h + i, 0x1000 + i, 1);
        }
        c.slot(h + KSTLS_CACHE_PROBES as u64, TP, 0);
        c.entry(0, ID, BLOCK);
        assert_eq!(c.lookup(TP, ID, 0), None);
    }

    #[test]
    fn probing_wraps_around_the_slot_array() {
        let tp = (1..)
            .map(|k: u64| k << 12)
            .find(|&tp| home(tp) == NR_SLOTS - 1)
            .unwrap();
        let mut c = Cache::new();
        c.slot(NR_SLOTS - 1, KSTLS_CACHE_TP_SHARED as u64, 1);
        c.slot(0, tp, 0);
        c.entry(0, ID, BLOCK);
        assert_eq!(c.lookup(tp, ID, 0), Some(BLOCK));
    }

    #[test]
    fn the_own_slot_without_the_entry_ends_the_search() {
        let mut c = Cache::new();
        let h = home(TP);
        c.slot(h, TP, 0);
        c.slot(h + 1, TP, 1);
        c.entry(1, ID, BLOCK);
        assert_eq!(c.lookup(TP, ID, 0), None);
    }

    #[test]
    fn a_dtv_offset_past_the_limit_never_hits() {
        let mut c = Cache::new();
        c.slot(home(TP), TP, THREADS - 1);
        c.entry(THREADS - 1, ID, BLOCK);
        assert_eq!(c.lookup(TP, ID, 0), Some(BLOCK), "at the limit");
        let at = KSTLS_CACHE_SLOTS_OFFSET as u64 + home(TP) * SLOT as u64;
        c.set(at + 8, c.limit() + 8);
        assert_eq!(c.lookup(TP, ID, 0), None, "past the limit");
    }

    #[test]
    fn the_empty_cache_misses_for_every_thread_and_module() {
        // SAFETY: `EMPTY_CACHE` covers the header page and the slot array; with `dtv_limit` 0
        // every entry read is in its first page.
        let miss = |tp, m| unsafe { lookup(empty_cache(), 0, tp, m, 0) };
        for tp in [TP, 0x1000, u64::MAX & !7] {
            assert_eq!(miss(tp, ID), None);
            assert_eq!(miss(tp, KSTLS_MODULE_ID_MIN), None);
        }
    }

    #[test]
    fn the_header_must_have_the_built_in_geometry() {
        let mut c = Cache::new();
        let len = c.len();
        let limit = len as u64 - 256 * ENTRY as u64;
        assert_eq!(dtv_limit(c.header(), len), Some(limit));
        let bad: [fn(&mut kstls_cache_header); 7] = [
            |h| h.magic ^= 1,
            |h| h.version += 1,
            |h| h.nr_slots /= 2,
            |h| h.nr_slots_log2 -= 1,
            |h| h.nr_probes += 1,
            |h| h.dtv_entries *= 2,
            |h| h.slots_offset += 4096,
        ];
        for f in bad {
            let mut h = *c.header();
            f(&mut h);
            assert_eq!(dtv_limit(&h, len), None);
        }
        let short = KSTLS_CACHE_SLOTS_OFFSET as usize + NR_SLOTS as usize * SLOT - 1;
        assert_eq!(dtv_limit(c.header(), short), None, "slots past the mapping");
    }

    #[test]
    fn the_assembly_immediates_compute_the_same_slots() {
        for tp in [TP, 0x1000, 0x7fff_ffff_f000, u64::MAX & !7] {
            let h = tp.wrapping_mul(ASM_HASH_MUL as u64) >> ASM_HASH_SHIFT & !15;
            assert_eq!(h, home(tp) * SLOT as u64);
            let probes: std::vec::Vec<u64> = (1..=ASM_PROBES_AFTER_HOME as u64)
                .map(|i| (h + 16 * i) & ASM_SLOT_MASK)
                .collect();
            let want: std::vec::Vec<u64> = (1..KSTLS_CACHE_PROBES as u64)
                .map(|i| (home(tp) + i) % NR_SLOTS * SLOT as u64)
                .collect();
            assert_eq!(probes, want);
        }
        assert_eq!(ASM_SLOTS as u64, KSTLS_CACHE_SLOTS_OFFSET as u64);
    }

    /// Tests that publish a cache in `FAST` take turns.
    static PUBLISHED: Mutex<()> = Mutex::new(());

    #[test]
    fn fast_lookup_reads_the_published_cache_for_this_thread() {
        let _turn = PUBLISHED.lock().unwrap();
        assert_eq!(fast_lookup(ID, 0), None, "no cache published");
        // SAFETY: A glibc thread: %fs:0 is its thread pointer.
        let tp = unsafe { arch::thread_pointer() };
        let mut c = Cache::new();
        c.slot(home(tp), tp, 2);
        c.entry(2, ID, BLOCK);
        FAST.dtv_limit.store(c.limit(), Relaxed);
        FAST.delta
            .store(c.addr().wrapping_sub(empty_cache()), Release);
        let hit = fast_lookup(ID, 0x40);
        let other = fast_lookup(ID + KSTLS_MODULE_ID_MIN, 0);
        let elsewhere = std::thread::spawn(|| fast_lookup(ID, 0)).join().unwrap();
        FAST.delta.store(0, Release);
        FAST.dtv_limit.store(0, Relaxed);
        assert_eq!(hit, Some(BLOCK + 0x40));
        assert_eq!(other, None);
        assert_eq!(elsewhere, None, "another thread's pointer finds no slot");
    }
}
