// SPDX-License-Identifier: GPL-2.0

//! The counters of a context and what user space reads of its state: `KSTLS_IOC_INFO`,
//! `KSTLS_IOC_STATS` and `/proc/<pid>/fdinfo/<fd>`.
//!
//! One `Totals` per context, kept with its state behind the context lock; the per-module and
//! per-thread counters live in `TlsModule` and `Thread`. Marshalling reads the state through a
//! `View`, made under the lock, which holds shared references only: reading the counters cannot
//! change what it reads.
//!
//! fdinfo must never wait for the context lock, which a thread holds while its first touch of a
//! module faults (a block in memory that userfaultfd or a stalled FUSE file holds). So the holder
//! of the lock publishes the context's figures in a `Summary` of its own, under a spinlock,
//! before it touches user memory and before it lets the lock go; a reader that finds the lock
//! taken shows those (and `busy: 1`, without the module lines).

use kernel::{
    new_spinlock,
    prelude::*,
    seq_file::{
        seq_print,
        SeqFile, //
    },
    sync::SpinLock,
    task::Pid,
};

use core::sync::atomic::{
    AtomicU64,
    Ordering::Relaxed, //
};

use crate::budget::Budget;
use crate::cache;
use crate::exit_hook;
use crate::limits::{
    self,
    LIMITS, //
};
use crate::registry::Registry;
use crate::rows::PackedRows;
use crate::threads::Threads;
use crate::uapi::*;

/// Counters that outlive threads and modules.
#[derive(Default)]
pub(crate) struct Totals {
    pub(crate) lookups: u64,
    pub(crate) allocs: u64,
    pub(crate) thread_exits: u64,
    /// Lookups made while strict mode was on: every access trapped.
    pub(crate) traps: u64,
    /// Cache entries written.
    pub(crate) fills: u64,
}

/// The state of one context, as the counters are read from it, under the context lock.
pub(crate) struct View<'a> {
    pub(crate) registry: &'a Registry,
    pub(crate) threads: &'a Threads,
    pub(crate) rows: &'a PackedRows,
    pub(crate) budget: &'a Budget,
    pub(crate) totals: &'a Totals,
}

/// What a context is apart from its state: the fields fdinfo shows besides the counters.
pub(crate) struct Identity {
    /// The process that opened the context, as the reader's pid namespace numbers it (0: it is
    /// not in that namespace).
    pub(crate) tgid: Pid,
    pub(crate) strict: bool,
    /// Threads in the fast-path cache now.
    pub(crate) cached_threads: usize,
}

/// The figures fdinfo shows before the module lines.
#[derive(Clone, Copy, Default)]
struct Figures {
    modules: u64,
    threads: u64,
    blocks: u64,
    block_bytes: u64,
    mapped: u64,
    rows: u64,
    packed: u64,
    images: u64,
    kernel: u64,
    user_kernel: u64,
    max_user_kernel: u64,
    lookups: u64,
    allocs: u64,
    thread_exits: u64,
    traps: u64,
    fills: u64,
}

/// Prints `f` and `id`, as fdinfo shows them, `busy` telling whether they were read from the
/// state or from the last `Summary`.
fn show_figures(m: &SeqFile, f: &Figures, id: &Identity, busy: bool) {
    seq_print!(m, "kstls-abi:\t{}\n", KSTLS_ABI_VERSION);
    seq_print!(m, "owner-tgid:\t{}\n", id.tgid);
    seq_print!(m, "busy:\t{}\n", u8::from(busy));
    seq_print!(m, "modules:\t{}\n", f.modules);
    seq_print!(m, "threads:\t{}\n", f.threads);
    seq_print!(m, "blocks:\t{}\n", f.blocks);
    seq_print!(m, "block-bytes:\t{}\n", f.block_bytes);
    seq_print!(m, "mapped-bytes:\t{}\n", f.mapped);
    seq_print!(m, "rows:\t{}\n", f.rows);
    seq_print!(m, "packed-modules:\t{}\n", f.packed);
    seq_print!(m, "image-bytes:\t{}\n", f.images);
    seq_print!(m, "kernel-bytes:\t{}\n", f.kernel);
    seq_print!(m, "user-kernel-bytes:\t{}\n", f.user_kernel);
    seq_print!(m, "max-user-kernel-bytes:\t{}\n", f.max_user_kernel);
    seq_print!(m, "lookups:\t{}\n", f.lookups);
    seq_print!(m, "allocs:\t{}\n", f.allocs);
    seq_print!(m, "thread-exits:\t{}\n", f.thread_exits);
    seq_print!(m, "strict:\t{}\n", u8::from(id.strict));
    seq_print!(m, "traps:\t{}\n", f.traps);
    seq_print!(m, "cache-fills:\t{}\n", f.fills);
    seq_print!(m, "cached-threads:\t{}\n", id.cached_threads);
}

/// The figures of a context as the holder of its lock last published them, for fdinfo when
/// the lock is taken. One per context.
///
/// The counters a lookup changes are words of their own, stored without a lock: a hit on the
/// strict path publishes them with three plain stores (only the lock holder writes, so nothing
/// is lost), and a reader may see one of them a lookup ahead of another, never a value that was
/// not published.
#[pin_data]
pub(crate) struct Summary {
    #[pin]
    figures: SpinLock<Figures>,
    lookups: AtomicU64,
    traps: AtomicU64,
    fills: AtomicU64,
}

impl Summary {
    pub(crate) fn new() -> impl PinInit<Self> {
        pin_init!(Self {
            figures <- new_spinlock!(Figures::default()),
            lookups: AtomicU64::new(0),
            traps: AtomicU64::new(0),
            fills: AtomicU64::new(0),
        })
    }

    /// Publishes the figures of `v` (the caller holds the context lock). Walks the modules and
    /// the threads: for a change, not for a lookup (`publish_totals`).
    pub(crate) fn publish(&self, v: &View<'_>) {
        let f = v.figures();
        self.store_counters(f.lookups, f.traps, f.fills);
        *self.figures.lock() = f;
    }

    /// Publishes the counters that a lookup changes, and only those.
    pub(crate) fn publish_totals(&self, t: &Totals) {
        self.store_counters(t.lookups, t.traps, t.fills);
    }

    fn store_counters(&self, lookups: u64, traps: u64, fills: u64) {
        self.lookups.store(lookups, Relaxed);
        self.traps.store(traps, Relaxed);
        self.fills.store(fills, Relaxed);
    }

    /// fdinfo while the context lock is taken: the last published figures.
    pub(crate) fn show(&self, m: &SeqFile, id: &Identity) {
        let mut f = *self.figures.lock();
        f.lookups = self.lookups.load(Relaxed);
        f.traps = self.traps.load(Relaxed);
        f.fills = self.fills.load(Relaxed);
        show_figures(m, &f, id, true);
    }
}

/// Bytes of the cache a context maps, 0 when there is none.
fn cache_size() -> u32 {
    if exit_hook::active() {
        cache::size_for(limits::cache_threads()).unwrap_or(0) as u32
    } else {
        0
    }
}

/// `bytes` in KiB, rounded up, as a `u32` of the ABI (saturated).
fn kbytes(bytes: u64) -> u32 {
    u32::try_from(bytes.div_ceil(1024)).unwrap_or(u32::MAX)
}

impl View<'_> {
    /// Live blocks of all modules, and their bytes.
    fn live_blocks(&self) -> (u64, u64) {
        self.registry.iter().fold((0, 0), |(n, b), m| {
            (n + m.live(), b + m.live() * m.layout.memsz as u64)
        })
    }

    /// `KSTLS_IOC_INFO`: the features, the limits and their use.
    pub(crate) fn info(&self, strict: bool) -> kstls_info {
        kstls_info {
            abi_version: KSTLS_ABI_VERSION,
            features: KSTLS_FEAT_EXIT_TRACKING
                | KSTLS_FEAT_STATS
                | KSTLS_FEAT_FDINFO
                | KSTLS_FEAT_ADOPT
                | KSTLS_FEAT_STRICT
                | KSTLS_FEAT_USER_QUOTA
                | if exit_hook::active() {
                    KSTLS_FEAT_CACHE
                } else {
                    0
                },
            max_modules: LIMITS.max_modules,
            max_align: LIMITS.max_align,
            max_image_size: LIMITS.max_image_size,
            max_block_bytes: LIMITS.max_block_bytes,
            nr_modules: self.registry.len() as u32,
            nr_threads: self.threads.iter().filter(|t| t.nr_blocks > 0).count() as u32,
            block_bytes: self.budget.mapped(),
            max_image_total: LIMITS.max_image_total,
            image_bytes: self.budget.images(),
            cache_size: cache_size(),
            mode: if strict { KSTLS_MODE_STRICT } else { 0 },
            max_user_kbytes: kbytes(self.budget.quota().max_bytes()),
            user_kbytes: kbytes(self.budget.quota().bytes()),
        }
    }

    /// `KSTLS_IOC_STATS`: the counters of module `module` (0: all) and thread `tid` (0: all).
    /// `EINVAL` for an unknown module; an unknown thread has no counters.
    pub(crate) fn stats(&self, module: u64, tid: Pid) -> Result<kstls_stats> {
        let mut out = kstls_stats {
            module,
            tid: tid as u32,
            ..Default::default()
        };
        let module = match module {
            0 => None,
            id => Some(self.registry.get(id)?),
        };
        match (module, tid) {
            (None, 0) => {
                let (blocks, bytes) = self.live_blocks();
                out.lookups = self.totals.lookups;
                out.allocs = self.totals.allocs;
                out.blocks = blocks;
                out.block_bytes = bytes;
                out.thread_exits = self.totals.thread_exits;
            }
            (Some(m), 0) => {
                out.lookups = m.lookups;
                out.allocs = m.allocs;
                out.blocks = m.live();
                out.block_bytes = m.live() * m.layout.memsz as u64;
            }
            (None, tid) => {
                if let Some(t) = self.threads.get(tid) {
                    out.lookups = t.lookups;
                    out.allocs = t.allocs;
                    out.blocks = t.nr_blocks;
                    out.block_bytes = t.block_bytes;
                }
            }
            (Some(m), tid) => {
                if let Some(b) = self.threads.get(tid).and_then(|t| t.block(m.id.index)) {
                    out.lookups = b.lookups;
                    out.allocs = 1;
                    out.blocks = 1;
                    out.block_bytes = m.layout.memsz as u64;
                }
            }
        }
        Ok(out)
    }

    /// The figures fdinfo shows.
    fn figures(&self) -> Figures {
        let (blocks, block_bytes) = self.live_blocks();
        let packed = self.registry.iter().filter(|md| md.storage.is_packed());
        Figures {
            modules: self.registry.len() as u64,
            threads: self.threads.iter().count() as u64,
            blocks,
            block_bytes,
            mapped: self.budget.mapped(),
            rows: self.rows.live(),
            packed: packed.count() as u64,
            images: self.budget.images(),
            kernel: self.budget.kernel(),
            user_kernel: self.budget.quota().bytes(),
            max_user_kernel: self.budget.quota().max_bytes(),
            lookups: self.totals.lookups,
            allocs: self.totals.allocs,
            thread_exits: self.totals.thread_exits,
            traps: self.totals.traps,
            fills: self.totals.fills,
        }
    }

    /// `/proc/<pid>/fdinfo/<fd>`: the state of the context, readable by an operator.
    pub(crate) fn show(&self, m: &SeqFile, id: &Identity) {
        show_figures(m, &self.figures(), id, false);
        for md in self.registry.iter() {
            seq_print!(
                m,
                "module:\t{:#x} filesz={} memsz={} align={} align_offset={} blocks={} lookups={} allocs={}\n",
                md.id.encode(),
                md.layout.filesz,
                md.layout.memsz,
                md.layout.align,
                md.layout.align_offset,
                md.live(),
                md.lookups,
                md.allocs
            );
        }
    }
}

#[kunit_tests(rust_kstls_stats)]
mod tests {
    use super::*;
    use crate::block::Storage;
    use crate::layout::Layout;
    use crate::quota::ContextSlot;
    use crate::registry::TlsModule;
    use crate::thread::Thread;

    #[test]
    fn stats_narrow_to_a_module_and_a_thread() -> Result {
        let mut registry = Registry::new();
        let user = ContextSlot::open_for(0x7ffa_0001, u64::MAX)?;
        let mut budget = Budget::new(&LIMITS, user.quota());
        let id = registry.insert(4, &mut budget, |id| {
            let layout = Layout::new(0, 24, 8, 0, &LIMITS)?;
            let storage = Storage::Packed { column: 0, live: 1 };
            let mut m = TlsModule::new(id, layout, KVVec::new(), storage);
            m.lookups = 5;
            m.allocs = 1;
            Ok(m)
        })?;
        let cur = kernel::current!();
        let mut t = Thread::new(&cur, 0x7f00_0000_1000);
        t.reserve(id.index, &mut budget)?;
        t.set(id.index, 0x7f00_0001_0000, 24);
        t.lookups = 7;
        if let Some(b) = t.block_mut(id.index) {
            b.lookups = 5;
        }
        let mut threads = Threads::new(0);
        threads.insert(42, t, &mut budget)?;
        let rows = PackedRows::new(&LIMITS)?;
        let totals = Totals {
            lookups: 9,
            thread_exits: 2,
            ..Default::default()
        };
        let v = View {
            registry: &registry,
            threads: &threads,
            rows: &rows,
            budget: &budget,
            totals: &totals,
        };

        let all = v.stats(0, 0)?;
        assert_eq!((all.lookups, all.blocks, all.block_bytes), (9, 1, 24));
        assert_eq!(all.thread_exits, 2);
        let m = v.stats(id.encode(), 0)?;
        assert_eq!((m.lookups, m.allocs, m.blocks), (5, 1, 1));
        let t = v.stats(0, 42)?;
        assert_eq!((t.lookups, t.blocks, t.block_bytes), (7, 1, 24));
        let b = v.stats(id.encode(), 42)?;
        assert_eq!((b.lookups, b.allocs, b.block_bytes), (5, 1, 24));
        // A thread without a table has no counters; an unknown module is an error.
        assert_eq!(v.stats(id.encode(), 43)?.lookups, 0);
        assert_eq!(v.stats(id.encode() + (1 << 32), 0).err(), Some(EINVAL));

        let info = v.info(true);
        assert_eq!((info.nr_modules, info.nr_threads), (1, 1));
        assert_eq!(info.mode, KSTLS_MODE_STRICT);
        assert_eq!(info.max_modules, LIMITS.max_modules);
        Ok(())
    }
}
