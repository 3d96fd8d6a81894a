// SPDX-License-Identifier: GPL-2.0

//! The context behind one open `/dev/kstls`: a process's TLS modules and its threads' tables.
//!
//! One `Context` per open file, owned by the process (the mm) that opened it: a call from any
//! other address space, through an fd inherited over fork or passed with `SCM_RIGHTS`, is refused
//! with `EPERM` before anything of the context is read or changed (the command's own input has
//! been read and checked by then, `uapi::read_input`). Everything mutable sits behind one mutex,
//! the only lock of the slow path. Lock order: the context mutex, then the mmap lock (taken by
//! `vm_mmap` and by faults while a block is initialised); nothing here runs with the mmap lock
//! held.
//!
//! Thread exit is detected by the driver itself: each `Thread` holds a reference to its task, a
//! table whose task has `PF_EXITING` is reclaimed (its blocks go back to their storage) whenever a
//! new thread makes its first call and whenever the counters are read (`STATS`, fdinfo), and a
//! new task that reuses a tid never sees the table of the task that had it before.

use core::sync::atomic::{
    AtomicU32,
    Ordering, //
};

use kernel::{
    mm::{
        virt::VmaNew,
        Mm, //
    },
    new_mutex,
    prelude::*,
    rbtree::RBTree,
    seq_file::{
        seq_print,
        SeqFile, //
    },
    sync::{
        aref::ARef,
        Arc,
        Mutex,
        SetOnce, //
    },
    task::{
        Pid,
        Task, //
    },
    uaccess::{
        UserPtr,
        UserSlice, //
    },
};

use crate::arch;
use crate::budget::Budget;
use crate::cache::{
    self,
    Cache, //
};
use crate::exit_hook;
use crate::layout::Layout;
use crate::limits::{
    self,
    LIMITS, //
};
use crate::registry::Registry;
use crate::rows::PackedRows;
use crate::thread::Thread;
use crate::uapi::*;
use crate::usermem::{
    self,
    OwnerMm, //
};

/// Counters that outlive threads and modules.
#[derive(Default)]
struct Totals {
    lookups: u64,
    allocs: u64,
    thread_exits: u64,
    /// Lookups made while strict mode was on: every access trapped.
    traps: u64,
    /// Cache entries written.
    fills: u64,
}

/// The fields protected by the context lock.
struct Inner {
    registry: Registry,
    threads: RBTree<Pid, Thread>,
    /// The threads' rows of packed blocks (of the small modules).
    rows: PackedRows,
    /// The memory the context holds: mapped for blocks, and kept for images.
    budget: Budget,
    totals: Totals,
}

/// The state of one open `/dev/kstls`.
#[pin_data(PinnedDrop)]
pub(crate) struct Context {
    /// The address space this context serves; the reference (`mmgrab`) keeps the pointer from
    /// being reused, so comparing it with `current->mm` is an identity check.
    mm: ARef<Mm>,
    /// The process that opened the context, for diagnostics.
    tgid: Pid,
    /// `KSTLS_MODE_*` set by `SET_MODE` (read without the lock by `mmap`).
    mode: AtomicU32,
    /// The fast-path cache, made by the first `mmap`.
    cache: SetOnce<Arc<Cache>>,
    #[pin]
    inner: Mutex<Inner>,
}

impl Inner {
    /// Reclaims the tables of every thread that has exited.
    fn sweep(&mut self) {
        let Self {
            registry,
            threads,
            rows,
            totals,
            ..
        } = self;
        let mut cursor = threads.cursor_front_mut();
        while let Some(c) = cursor {
            if c.current().1.exited() {
                let (next, node) = c.remove_current();
                registry.reclaim(rows, &node.to_key_value().1);
                totals.thread_exits += 1;
                cursor = next;
            } else {
                cursor = c.move_next();
            }
        }
    }

    /// Live blocks of all modules, and their bytes.
    fn live_blocks(&self) -> (u64, u64) {
        self.registry.iter().fold((0, 0), |(n, b), m| {
            (n + m.live(), b + m.live() * m.layout.memsz as u64)
        })
    }
}

impl Context {
    /// A context for the calling process.
    pub(crate) fn new() -> Result<impl PinInit<Self, Error>> {
        let cur = kernel::current!();
        // Kernel threads have no address space to put blocks in.
        let mm: ARef<Mm> = ARef::from(&**cur.mm().ok_or(EINVAL)?);
        let tgid = cur.tgid();
        let rows = PackedRows::new(&LIMITS)?;
        Ok(try_pin_init!(Self {
            mm,
            tgid,
            mode: AtomicU32::new(0),
            cache: SetOnce::new(),
            inner <- new_mutex!(Inner {
                registry: Registry::new(),
                threads: RBTree::new(),
                rows,
                budget: Budget::new(&LIMITS),
                totals: Totals::default(),
            }),
        }))
    }

    /// Whether every access must trap into the kernel.
    fn strict(&self) -> bool {
        limits::strict_forced() || self.mode.load(Ordering::Relaxed) & KSTLS_MODE_STRICT != 0
    }

    /// The calling thread's thread pointer, if its blocks may be cached: there is a cache, the
    /// context is not strict, and the psABI self-pointer at `%fs:0` is the real FS base (what
    /// user space will hash by). Reads user memory, so it runs before the lock is taken.
    fn cacheable_tp(&self) -> Option<u64> {
        self.cache.as_ref()?;
        if self.strict() {
            return None;
        }
        let fsbase = arch::current_fsbase();
        let at = usize::try_from(fsbase).ok()?;
        let self_ptr: u64 = UserSlice::new(UserPtr::from_addr(at), 8)
            .reader()
            .read()
            .ok()?;
        (self_ptr == fsbase).then_some(fsbase)
    }

    /// The proof that the caller runs in this context's process; `EPERM` otherwise.
    fn owner(&self) -> Result<OwnerMm<'_>> {
        OwnerMm::check(&self.mm).ok_or(EPERM)
    }

    /// `KSTLS_IOC_REGISTER`: validates the descriptor, snapshots the image, returns the id.
    pub(crate) fn register(&self, r: &kstls_register) -> Result<u64> {
        let _owner = self.owner()?;
        let layout = Layout::new(r.filesz, r.memsz, r.align, r.align_offset, &LIMITS)?;
        // The snapshot is read before taking the lock: no user copy under the lock when it can
        // be avoided. Its size is bounded by `max_image_size`.
        let mut image = KVVec::with_capacity(layout.filesz, GFP_KERNEL)?;
        let src = usize::try_from(r.image).map_err(|_| EFAULT)?;
        UserSlice::new(UserPtr::from_addr(src), layout.filesz).read_all(&mut image, GFP_KERNEL)?;

        let mut g = self.inner.lock();
        let Inner {
            registry,
            rows,
            budget,
            ..
        } = &mut *g;
        let id = registry.add(LIMITS.max_modules, layout, image, rows, budget)?;
        Ok(id.encode())
    }

    /// `KSTLS_IOC_UNREGISTER`: frees every thread's block of the module and its storage.
    pub(crate) fn unregister(&self, id: u64) -> Result {
        let owner = self.owner()?;
        let mut guard = self.inner.lock();
        let g = &mut *guard;
        let mut m = g.registry.remove(id)?;
        if let Some(c) = self.cache.as_ref() {
            c.forget_module(id, m.id.index);
        }
        for t in g.threads.values_mut() {
            t.take(m.id.index, m.layout.memsz);
        }
        let packed = m
            .storage
            .release(&m.layout, &mut g.rows, &mut g.budget, &owner);
        // No packed block is left (the common case: the last small module is gone): no table
        // points into a row any more, so the rows are unmapped as a module's arenas are, and a
        // thread gets a new row at its next packed first touch.
        if packed && !g.registry.packed_live() {
            for t in g.threads.values_mut() {
                t.row = None;
            }
            g.rows.unmap_all(&mut g.budget, &owner);
        }
        g.budget.uncharge_image(m.layout.filesz);
        drop(guard);
        // The snapshot is freed here, after the lock is dropped.
        drop(m);
        Ok(())
    }

    /// `KSTLS_IOC_GET_ADDR`: the address of `offset` in the calling thread's block of `module`,
    /// allocating and initialising the block on first touch.
    pub(crate) fn get_addr(&self, module: u64, offset: u64) -> Result<u64> {
        let owner = self.owner()?;
        let cur = kernel::current!();
        let task: &Task = &cur;
        let pid = task.pid();
        let tp = self.cacheable_tp();
        let strict = self.strict();

        let mut g = self.inner.lock();
        let inner = &mut *g;
        let (index, memsz) = {
            let m = inner.registry.get(module)?;
            (m.id.index, m.layout.memsz)
        };
        if offset >= memsz as u64 {
            return Err(EINVAL);
        }
        if !matches!(inner.threads.get(&pid), Some(t) if t.is(task)) {
            // A table under this tid belongs to an earlier task, which has exited.
            if let Some(old) = inner.threads.remove(&pid) {
                inner.registry.reclaim(&mut inner.rows, &old);
                inner.totals.thread_exits += 1;
            }
            // A new thread: a good time to reclaim those that are gone.
            inner.sweep();
            inner.threads.try_create_and_insert(
                pid,
                Thread::new(task, arch::current_fsbase()),
                GFP_KERNEL,
            )?;
        }
        let Inner {
            registry,
            threads,
            rows,
            budget,
            totals,
        } = inner;
        let t = threads.get_mut(&pid).ok_or(EINVAL)?;
        let m = registry.by_index_mut(index).ok_or(EINVAL)?;

        let block = match t.block(index) {
            Some(b) => b.addr,
            None => {
                t.reserve(index)?;
                let addr = m
                    .storage
                    .first_touch(&m.layout, &m.image, &mut t.row, rows, budget, &owner)?;
                t.set(index, addr, memsz);
                m.allocs += 1;
                totals.allocs += 1;
                addr
            }
        };
        if let Some(b) = t.block_mut(index) {
            b.lookups += 1;
        }
        t.lookups += 1;
        m.lookups += 1;
        totals.lookups += 1;
        if strict {
            totals.traps += 1;
        }
        if let (Some(c), Some(tp)) = (self.cache.as_ref(), tp) {
            if c.fill(
                task.as_ptr() as usize,
                tp,
                &mut t.cached_tp,
                module,
                index,
                block,
            ) {
                totals.fills += 1;
            }
        }
        // Cannot overflow: `offset < memsz` and the block lies inside a mapping.
        Ok((block + offset as usize) as u64)
    }

    /// `KSTLS_IOC_ADOPT`: takes over, in a forked child, what `parent` (the context of the
    /// process that forked it) had for the forking thread.
    pub(crate) fn adopt(&self, parent: &Context) -> Result {
        let _owner = self.owner()?;
        if core::ptr::eq(self.mm.as_raw(), parent.mm.as_raw()) {
            // The same process: there is nothing to adopt.
            return Err(EINVAL);
        }
        if !usermem::parent_runs_in(&parent.mm) {
            return Err(EPERM);
        }
        let cur = kernel::current!();
        let task: &Task = &cur;
        let fsbase = arch::current_fsbase();

        // The child's state is built under the parent's lock alone; the two context locks are
        // never held together.
        let (registry, rows, thread, budget) = {
            let g = parent.inner.lock();
            // The child's only thread is the copy of the parent thread that forked: the one with
            // the same thread pointer (a dead thread may have had it too, so skip those).
            let forker = g
                .threads
                .values()
                .find(|t| t.fsbase == fsbase && !t.exited());
            let registry = g.registry.fork_copy(|m| {
                let index = m.id.index;
                let kept = forker.and_then(|t| t.block_addr(index));
                let others = g
                    .threads
                    .values()
                    .filter_map(move |t| t.block_addr(index))
                    .filter(move |a| Some(*a) != kept);
                m.storage.fork_copy(kept, others)
            })?;
            let kept_row = forker.and_then(|t| t.row);
            let other_rows = g
                .threads
                .values()
                .filter_map(|t| t.row)
                .filter(|r| Some(*r) != kept_row);
            let rows = g.rows.fork_copy(kept_row, other_rows)?;
            let mut thread = Thread::new(task, fsbase);
            thread.row = kept_row;
            if let Some(f) = forker {
                for (index, b) in f.blocks() {
                    let memsz = g
                        .registry
                        .iter()
                        .find(|m| m.id.index == index)
                        .map(|m| m.layout.memsz);
                    thread.inherit(index, b.addr, memsz.unwrap_or(0))?;
                }
            }
            (registry, rows, thread, g.budget.fork_copy())
        };

        let mut g = self.inner.lock();
        if g.registry.len() != 0 || !g.threads.is_empty() {
            return Err(EINVAL);
        }
        g.threads
            .try_create_and_insert(task.pid(), thread, GFP_KERNEL)?;
        g.registry = registry;
        g.rows = rows;
        g.budget = budget;
        Ok(())
    }

    /// `KSTLS_IOC_SET_MODE`, with `mode` made only of known bits.
    pub(crate) fn set_mode(&self, mode: u32) -> Result {
        let _owner = self.owner()?;
        // Under the context lock, so that no fill of a racing GET_ADDR lands after the switch.
        let _g = self.inner.lock();
        self.mode.store(mode, Ordering::Relaxed);
        if let Some(c) = self.cache.as_ref() {
            c.set_strict(self.strict());
        }
        Ok(())
    }

    /// `mmap`: maps the fast-path cache read-only, making it on first use. Runs with the mmap
    /// lock held, so it must not take the context lock.
    pub(crate) fn map_cache(&self, vma: &VmaNew) -> Result {
        if !core::ptr::eq(vma.mm().as_raw(), self.mm.as_raw()) {
            return Err(EPERM);
        }
        let threads = limits::cache_threads();
        if threads == 0 || !exit_hook::active() {
            return Err(ENODEV);
        }
        if self.cache.as_ref().is_none() {
            let mm = self.mm.as_raw() as usize;
            let c = Arc::pin_init(Cache::new(mm, threads, self.strict())?, GFP_KERNEL)?;
            exit_hook::add_cache(&c)?;
            if let Err(c) = self.cache.populate(c.clone()).then_some(()).ok_or(c) {
                // Another mmap made the cache first.
                exit_hook::remove_cache(&c);
            }
        }
        self.cache.as_ref().ok_or(ENOMEM)?.map(vma)
    }

    /// `KSTLS_IOC_INFO`.
    pub(crate) fn info(&self) -> Result<kstls_info> {
        let _owner = self.owner()?;
        let mut g = self.inner.lock();
        g.sweep();
        Ok(kstls_info {
            abi_version: KSTLS_ABI_VERSION,
            features: KSTLS_FEAT_EXIT_TRACKING
                | KSTLS_FEAT_STATS
                | KSTLS_FEAT_FDINFO
                | KSTLS_FEAT_ADOPT
                | KSTLS_FEAT_STRICT
                | if exit_hook::active() {
                    KSTLS_FEAT_CACHE
                } else {
                    0
                },
            max_modules: LIMITS.max_modules,
            max_align: LIMITS.max_align,
            max_image_size: LIMITS.max_image_size,
            max_block_bytes: LIMITS.max_block_bytes,
            nr_modules: g.registry.len() as u32,
            nr_threads: g.threads.values().filter(|t| t.nr_blocks > 0).count() as u32,
            block_bytes: g.budget.mapped(),
            max_image_total: LIMITS.max_image_total,
            image_bytes: g.budget.images(),
            cache_size: if exit_hook::active() {
                cache::size_for(limits::cache_threads()).unwrap_or(0) as u32
            } else {
                0
            },
            mode: if self.strict() { KSTLS_MODE_STRICT } else { 0 },
            ..Default::default()
        })
    }

    /// `KSTLS_IOC_STATS`: counters, optionally narrowed to a module and/or a thread.
    pub(crate) fn stats(&self, q: &kstls_stats) -> Result<kstls_stats> {
        let _owner = self.owner()?;
        let tid = Pid::try_from(q.tid).map_err(|_| EINVAL)?;
        let mut out = kstls_stats {
            module: q.module,
            tid: q.tid,
            ..Default::default()
        };
        let mut g = self.inner.lock();
        g.sweep();
        let (all_blocks, all_bytes) = g.live_blocks();
        let Inner {
            registry,
            threads,
            totals,
            ..
        } = &mut *g;
        let module = match q.module {
            0 => None,
            id => Some(registry.get_mut(id)?),
        };
        match (module, tid) {
            (None, 0) => {
                out.lookups = totals.lookups;
                out.allocs = totals.allocs;
                out.blocks = all_blocks;
                out.block_bytes = all_bytes;
                out.thread_exits = totals.thread_exits;
            }
            (Some(m), 0) => {
                out.lookups = m.lookups;
                out.allocs = m.allocs;
                out.blocks = m.live();
                out.block_bytes = m.live() * m.layout.memsz as u64;
            }
            (None, tid) => {
                if let Some(t) = threads.get(&tid) {
                    out.lookups = t.lookups;
                    out.allocs = t.allocs;
                    out.blocks = t.nr_blocks;
                    out.block_bytes = t.block_bytes;
                }
            }
            (Some(m), tid) => {
                if let Some(b) = threads.get(&tid).and_then(|t| t.block(m.id.index)) {
                    out.lookups = b.lookups;
                    out.allocs = 1;
                    out.blocks = 1;
                    out.block_bytes = m.layout.memsz as u64;
                }
            }
        }
        Ok(out)
    }

    /// `/proc/<pid>/fdinfo/<fd>`: the state of the context, readable by an operator.
    pub(crate) fn show(&self, m: &SeqFile) {
        let mut g = self.inner.lock();
        g.sweep();
        let (blocks, bytes) = g.live_blocks();
        seq_print!(m, "kstls-abi:\t{}\n", KSTLS_ABI_VERSION);
        seq_print!(m, "owner-tgid:\t{}\n", self.tgid);
        seq_print!(m, "modules:\t{}\n", g.registry.len());
        seq_print!(m, "threads:\t{}\n", g.threads.values().count());
        seq_print!(m, "blocks:\t{}\n", blocks);
        seq_print!(m, "block-bytes:\t{}\n", bytes);
        seq_print!(m, "mapped-bytes:\t{}\n", g.budget.mapped());
        seq_print!(m, "rows:\t{}\n", g.rows.live());
        let packed = g
            .registry
            .iter()
            .filter(|md| md.storage.is_packed())
            .count();
        seq_print!(m, "packed-modules:\t{}\n", packed);
        seq_print!(m, "image-bytes:\t{}\n", g.budget.images());
        seq_print!(m, "lookups:\t{}\n", g.totals.lookups);
        seq_print!(m, "allocs:\t{}\n", g.totals.allocs);
        seq_print!(m, "thread-exits:\t{}\n", g.totals.thread_exits);
        seq_print!(m, "strict:\t{}\n", u8::from(self.strict()));
        seq_print!(m, "traps:\t{}\n", g.totals.traps);
        seq_print!(m, "cache-fills:\t{}\n", g.totals.fills);
        let cached = self.cache.as_ref().map_or(0, |c| c.cached_threads());
        seq_print!(m, "cached-threads:\t{}\n", cached);
        for md in g.registry.iter() {
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

#[pinned_drop]
impl PinnedDrop for Context {
    fn drop(self: Pin<&mut Self>) {
        if let Some(c) = self.cache.as_ref() {
            exit_hook::remove_cache(c);
        }
        // Closed by its own process: give the arenas back. At exit or exec the address space is
        // already gone or replaced, and there is nothing to unmap.
        if let Some(owner) = OwnerMm::check(&self.mm) {
            let mut g = self.inner.lock();
            let Inner {
                registry,
                rows,
                budget,
                ..
            } = &mut *g;
            registry.release_all(rows, budget, &owner);
            rows.unmap_all(budget, &owner);
        }
    }
}
