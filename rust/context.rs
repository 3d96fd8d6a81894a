// SPDX-License-Identifier: GPL-2.0

//! The context behind one open `/dev/kstls`: a process's TLS modules and its threads' tables.
//!
//! One `Context` per open file, owned by the process (the mm) that opened it: a call from any
//! other address space, through an fd inherited over fork or passed with `SCM_RIGHTS`, is refused
//! with `EPERM` before anything of the context is read or changed (the command's own input has
//! been read and checked by then, `uapi::read_input`). Everything mutable sits behind one mutex,
//! the only lock of the slow path. Lock order: the context mutex, then the mmap lock (taken by
//! `vm_mmap` and by faults while a block is initialised) or the cache's spinlock; nothing here
//! runs with the mmap lock held.
//!
//! This file wires the commands to the state; the policies live below it: where blocks come from
//! (`block.rs`), what memory a context may use (`budget.rs`), when threads are found gone
//! (`threads.rs`), what a forked child inherits (`fork.rs`), and how the counters are read
//! (`stats.rs`).

use core::{
    mem::size_of,
    sync::atomic::{
        AtomicU32,
        Ordering, //
    },
};

use kernel::{
    mm::{
        virt::VmaNew,
        Mm, //
    },
    new_mutex,
    prelude::*,
    seq_file::SeqFile,
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
use crate::budget::{
    self,
    Budget, //
};
use crate::cache::{
    self,
    Cache, //
};
use crate::exit_hook;
use crate::fork;
use crate::layout::Layout;
use crate::limits::{
    self,
    LIMITS, //
};
use crate::quota::ContextSlot;
use crate::registry::Registry;
use crate::rows::PackedRows;
use crate::stats::{
    Identity,
    Totals,
    View, //
};
use crate::threads::Threads;
use crate::uapi::*;
use crate::usermem::OwnerMm;

/// The fields protected by the context lock.
struct Inner {
    registry: Registry,
    threads: Threads,
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
    /// The context's place in its user's quota; dropped last, after everything it paid for.
    user: ContextSlot,
}

impl Inner {
    /// Reclaims the tables of every thread that has exited.
    fn sweep(&mut self) {
        self.totals.thread_exits +=
            self.threads
                .sweep(&mut self.registry, &mut self.rows, &mut self.budget);
    }

    /// The state, for reading the counters.
    fn view(&self) -> View<'_> {
        View {
            registry: &self.registry,
            threads: &self.threads,
            rows: &self.rows,
            budget: &self.budget,
            totals: &self.totals,
        }
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
        let user = ContextSlot::open(limits::max_user_bytes())?;
        let mut budget = Budget::new(&LIMITS, user.quota());
        // The context itself is kernel memory its user keeps.
        budget.charge_kernel(budget::alloc_size(size_of::<Self>()))?;
        Ok(try_pin_init!(Self {
            mm,
            tgid,
            mode: AtomicU32::new(0),
            cache: SetOnce::new(),
            inner <- new_mutex!(Inner {
                registry: Registry::new(),
                threads: Threads::new(),
                rows,
                budget,
                totals: Totals::default(),
            }),
            user,
        }))
    }

    /// Whether every access must trap into the kernel.
    fn strict(&self) -> bool {
        limits::strict_forced() || self.mode.load(Ordering::Relaxed) & KSTLS_MODE_STRICT != 0
    }

    /// The calling thread's thread pointer, if its blocks may be cached: there is a cache, the
    /// context is not strict, and `cache::thread_pointer` vouches for it. Reads user memory, so
    /// it runs before the lock is taken.
    fn cacheable_tp(&self) -> Option<u64> {
        self.cache.as_ref()?;
        if self.strict() {
            return None;
        }
        cache::thread_pointer()
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
        let mut image = KVVec::with_capacity(layout.filesz, GFP_KERNEL_ACCOUNT)?;
        let src = usize::try_from(r.image).map_err(|_| EFAULT)?;
        UserSlice::new(UserPtr::from_addr(src), layout.filesz)
            .read_all(&mut image, GFP_KERNEL_ACCOUNT)?;

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
        g.threads.forget_module(m.id.index, m.layout.memsz);
        let packed = m
            .storage
            .release(&m.layout, &mut g.rows, &mut g.budget, &owner);
        // No packed block is left (the common case: the last small module is gone): no table
        // points into a row any more, so the rows are unmapped as a module's arenas are, and a
        // thread gets a new row at its next packed first touch.
        if packed && !g.registry.packed_live() {
            g.threads.forget_rows();
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
        inner.threads.enter(
            task,
            pid,
            &mut inner.registry,
            &mut inner.rows,
            &mut inner.budget,
            &mut inner.totals.thread_exits,
        )?;
        let Inner {
            registry,
            threads,
            rows,
            budget,
            totals,
        } = inner;
        let t = threads.get_mut(pid).ok_or(EINVAL)?;
        let m = registry.by_index_mut(index).ok_or(EINVAL)?;

        let block = match t.block(index) {
            Some(b) => b.addr,
            None => {
                t.reserve(index, budget)?;
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
        fork::may_adopt(&self.mm, &parent.mm)?;
        let cur = kernel::current!();
        let task: &Task = &cur;

        // The child's state is built under the parent's lock alone; the two context locks are
        // never held together.
        let child = {
            let g = parent.inner.lock();
            fork::inherit(
                &g.registry,
                &g.threads,
                &g.rows,
                &g.budget,
                task,
                arch::current_fsbase(),
            )?
        };

        let mut guard = self.inner.lock();
        let g = &mut *guard;
        if g.registry.len() != 0 || !g.threads.is_empty() {
            return Err(EINVAL);
        }
        let before = g.budget.inherit(child.mapped, child.images, child.kernel)?;
        if let Err(e) = g.threads.insert(task.pid(), child.thread, &mut g.budget) {
            g.budget.undo_inherit(before);
            return Err(e);
        }
        g.registry = child.registry;
        g.rows = child.rows;
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
            // Every check first: a refused mapping makes no cache.
            cache::check_vma(vma, cache::size_for(threads).ok_or(ENOMEM)?)?;
            let mm = self.mm.as_raw() as usize;
            let quota = self.user.quota();
            let c = Arc::pin_init(
                Cache::new(mm, threads, self.strict(), quota)?,
                GFP_KERNEL_ACCOUNT,
            )?;
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
        Ok(g.view().info(self.strict()))
    }

    /// `KSTLS_IOC_STATS`: counters, optionally narrowed to a module and/or a thread.
    pub(crate) fn stats(&self, q: &kstls_stats) -> Result<kstls_stats> {
        let _owner = self.owner()?;
        let tid = Pid::try_from(q.tid).map_err(|_| EINVAL)?;
        let mut g = self.inner.lock();
        g.sweep();
        g.view().stats(q.module, tid)
    }

    /// `/proc/<pid>/fdinfo/<fd>`: the state of the context, readable by an operator.
    pub(crate) fn show(&self, m: &SeqFile) {
        let mut g = self.inner.lock();
        g.sweep();
        let id = Identity {
            tgid: self.tgid,
            strict: self.strict(),
            cached_threads: self.cache.as_ref().map_or(0, |c| c.cached_threads()),
        };
        g.view().show(m, &id);
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
