// SPDX-License-Identifier: GPL-2.0

//! The context behind one open `/dev/kstls`: a process's TLS modules and its threads' tables.
//!
//! One `Context` per open file, owned by the process (the mm) that opened it: a call from any
//! other address space, through an fd inherited over fork or passed with `SCM_RIGHTS`, is refused
//! with `EPERM` before anything of the context is read or changed (the command's own input has
//! been read and checked by then, `uapi::read_input`). Everything mutable sits behind one mutex,
//! the only lock of the slow path. Lock order: the context mutex, then the mmap lock (taken by
//! `vm_mmap` and by faults while a block is initialised), the cache's spinlock, the fork site's,
//! the snapshots' or the fdinfo summary's; nothing here runs with the mmap lock held but
//! `map_cache`, which takes only the cache's own mutex. Since a first touch holds the mutex
//! across a fault, nothing that another process does waits for it unkillably: fdinfo shows a
//! summary published under a spinlock while it is taken, and a forked child adopts a snapshot
//! made for it before the parent's change began, or waits for the lock interruptibly.
//!
//! Every change of the state (a registration, an unregistration, a new thread's table, a first
//! touch, a reclamation) begins with `keep_for_children`, which first keeps, for every child
//! forked since the previous change, the state it will adopt (`fork_log.rs`).
//!
//! This file wires the commands to the state; the policies live below it: where blocks come from
//! (`block.rs`), what memory a context may use (`budget.rs`, `quota.rs`), when threads are found
//! gone (`threads.rs`), what a forked child inherits (`fork.rs`) and as of when (`fork_log.rs`),
//! and how the counters are read (`stats.rs`).

use core::{
    mem::size_of,
    sync::atomic::{
        AtomicU32,
        Ordering, //
    },
};

use kernel::{
    bindings,
    mm::{
        virt::VmaNew,
        Mm, //
    },
    new_mutex,
    page::PAGE_SIZE,
    prelude::*,
    seq_file::SeqFile,
    sync::{
        aref::ARef,
        Arc,
        Mutex,
        MutexGuard,
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

use crate::budget::{
    self,
    Budget, //
};
use crate::cache::{
    self,
    Cache, //
};
use crate::exit_hook::{
    self,
    Room, //
};
use crate::fork::{
    self,
    Inheritance, //
};
use crate::fork_log::{
    ForkLog,
    Peek,
    Snapshot,
    Snapshots,
    Wanted,
    MAX_PENDING, //
};
use crate::layout::Layout;
use crate::limits::{
    self,
    LIMITS, //
};
use crate::pid::{
    self as pids,
    PinnedPid, //
};
use crate::quota::{
    Charge,
    ContextSlot, //
};
use crate::registry::Registry;
use crate::rows::PackedRows;
use crate::stats::{
    Identity,
    Summary,
    Totals,
    View, //
};
use crate::thread::{
    self,
    Thread, //
};
use crate::threads::{
    self,
    Threads, //
};
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
    /// The fork records up to this id (of the process's site) were made before the context's
    /// last change began: their children's states are kept already (`keep_for_children`).
    seen: u64,
    /// Room for the children whose state a change keeps, made with the context.
    wanted: KVec<Wanted>,
    /// The id of the record in each slot of the site, as the last change found them.
    ids: [u64; MAX_PENDING],
}

/// The state of one open `/dev/kstls`.
#[pin_data(PinnedDrop)]
pub(crate) struct Context {
    /// The address space this context serves; the reference (`mmgrab`) keeps the pointer from
    /// being reused, so comparing it with `current->mm` is an identity check.
    mm: ARef<Mm>,
    /// The process that opened the context, for diagnostics (its pid, not its task, is kept).
    process: PinnedPid,
    /// `KSTLS_MODE_*` set by `SET_MODE` (read without the lock by `mmap`).
    mode: AtomicU32,
    /// The fast-path cache, made by the first `mmap` that maps it.
    cache: SetOnce<Arc<Cache>>,
    /// Held by `mmap` while it makes the cache, so that a cache exists only once it is mapped.
    #[pin]
    cache_init: Mutex<()>,
    /// The context's membership of its process's fork site (`fork_log.rs`).
    forks: ForkLog,
    /// The states kept for forked children that have not adopted yet.
    #[pin]
    snapshots: Snapshots,
    /// What fdinfo shows while `inner` is locked: it never waits for the lock.
    #[pin]
    summary: Summary,
    #[pin]
    inner: Mutex<Inner>,
    /// The context's place in its user's quota; dropped last, after everything it paid for.
    user: ContextSlot,
}

/// Bytes of kernel memory the context keeps alive by holding its process's address space: the
/// `mm_struct` with its CPU masks, and its page-table root (two pages with page-table isolation).
fn pinned_mm_bytes() -> usize {
    budget::alloc_size(size_of::<bindings::mm_struct>() + 2 * size_of::<bindings::cpumask>())
        + 2 * PAGE_SIZE
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

    /// The state a child forked by `forker` gets, built under the lock.
    fn inherit(&self, forker: usize) -> Result<Inheritance> {
        fork::inherit(
            &self.registry,
            &self.threads,
            &self.rows,
            &self.budget,
            forker,
        )
    }

    /// An upper bound of the kernel memory a state built from this one keeps: it copies part
    /// of what the context keeps, never more. Charged before a state is built.
    fn inherit_bound(&self) -> u64 {
        self.budget.kernel() + (budget::alloc_size(size_of::<Snapshot>()) + thread::pinned_bytes()) as u64
    }
}

impl Context {
    /// A context for the calling process. What it publishes outside itself, its user's count
    /// (`ContextSlot`) and its membership of its process's fork site (`ForkLog`, which the fork
    /// probe finds), is owned by the initialiser until the context is made and by the context
    /// after, and taken back by its own drop: a context that fails to be made, its allocation
    /// included, leaves nothing behind.
    pub(crate) fn new() -> Result<impl PinInit<Self, Error>> {
        let cur = kernel::current!();
        // Kernel threads have no address space to put blocks in.
        let mm: ARef<Mm> = ARef::from(&**cur.mm().ok_or(EINVAL)?);
        let process = PinnedPid::of_process(&cur).ok_or(ESRCH)?;
        let rows = PackedRows::new(&LIMITS)?;
        let mut wanted = KVec::new();
        wanted.reserve(MAX_PENDING, GFP_KERNEL_ACCOUNT)?;
        let threads = Threads::new(mm.as_raw() as usize);
        let mm_addr = mm.as_raw() as usize;
        let user = ContextSlot::open(limits::max_user_bytes())?;
        let budget = Self::first_budget(&user)?;
        let forks = ForkLog::join(mm_addr)?;
        let born = forks.born();
        Ok(try_pin_init!(Self {
            mm,
            process,
            mode: AtomicU32::new(0),
            cache: SetOnce::new(),
            cache_init <- new_mutex!(()),
            forks,
            snapshots <- Snapshots::new()?,
            summary <- Summary::new(),
            inner <- new_mutex!(Inner {
                registry: Registry::new(),
                threads,
                rows,
                budget,
                totals: Totals::default(),
                seen: born,
                wanted,
                ids: [0; MAX_PENDING],
            }),
            user,
        }))
    }

    /// The budget of a new context of `user`, charged with what the context itself keeps: the
    /// context, its share of fork's records and snapshots, and the pinned mm and pid.
    fn first_budget(user: &ContextSlot) -> Result<Budget> {
        let mut budget = Budget::new(&LIMITS, user.quota());
        budget.charge_kernel(
            budget::alloc_size(size_of::<Self>())
                + ForkLog::kernel_bytes()
                + pinned_mm_bytes()
                + pids::pinned_bytes(),
        )?;
        Ok(budget)
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

    /// Begins a change of the state `g` (under the lock): every child forked since the last
    /// change, which has not adopted yet, first gets its snapshot of the state as it is, so
    /// that it never adopts a later one (`fork_log.rs`). A snapshot is charged before it is
    /// built; one that cannot be had keeps its error, which the child's `ADOPT` returns.
    fn keep_for_children(&self, g: &mut Inner) {
        g.seen = self.forks.since(g.seen, &mut g.wanted, &mut g.ids);
        self.snapshots.prune(&g.ids);
        let mut wanted = core::mem::take(&mut g.wanted);
        for w in wanted.drain_all() {
            let snapshot = Charge::new(g.budget.quota(), g.inherit_bound()).and_then(|mut charge| {
                let state = g.inherit(w.forker)?;
                charge.shrink_to(
                    state.kernel_total()
                        + budget::alloc_size(size_of::<Snapshot>()) as u64
                        + state.thread.as_ref().map_or(0, |_| thread::pinned_bytes() as u64),
                );
                Ok(KBox::new(Snapshot { state, _charge: charge }, GFP_KERNEL_ACCOUNT)?)
            });
            self.snapshots.put(w.slot, w.id, snapshot);
        }
        // The room goes back, empty.
        g.wanted = wanted;
    }

    /// Publishes the figures of `g` for fdinfo, before the lock may be held across a fault and
    /// before it is let go.
    fn publish(&self, g: &Inner) {
        self.summary.publish(&g.view());
    }

    /// `KSTLS_IOC_REGISTER`: validates the descriptor, snapshots the image, returns the id.
    pub(crate) fn register(&self, r: &kstls_register) -> Result<u64> {
        let _owner = self.owner()?;
        let layout = Layout::new(r.filesz, r.memsz, r.align, r.align_offset, &LIMITS)?;
        // The snapshot is read before taking the lock: no user copy under the lock when it can
        // be avoided. Its size is bounded by `max_image_size`, and charged to the user while
        // it is read (a copy stalled on a fault holds it), until the registry charges it.
        let reading = Charge::new(self.user.quota(), budget::alloc_size(layout.filesz) as u64)?;
        let mut image = KVVec::with_capacity(layout.filesz, GFP_KERNEL_ACCOUNT)?;
        let src = usize::try_from(r.image).map_err(|_| EFAULT)?;
        UserSlice::new(UserPtr::from_addr(src), layout.filesz)
            .read_all(&mut image, GFP_KERNEL_ACCOUNT)?;

        let mut g = self.inner.lock();
        self.keep_for_children(&mut g);
        let Inner {
            registry,
            rows,
            budget,
            ..
        } = &mut *g;
        let id = registry.add(LIMITS.max_modules, layout, image, rows, budget);
        drop(reading);
        self.publish(&g);
        Ok(id?.encode())
    }

    /// `KSTLS_IOC_UNREGISTER`: frees every thread's block of the module and its storage.
    pub(crate) fn unregister(&self, id: u64) -> Result {
        let owner = self.owner()?;
        let mut guard = self.inner.lock();
        // Checked before the change begins: an unknown id changes nothing.
        guard.registry.get(id)?;
        self.keep_for_children(&mut guard);
        let g = &mut *guard;
        // Counted in the fork mark before anything changes (`mark.rs`).
        g.budget.unregistering(&owner);
        let unreg = g.budget.mark().unregs();
        let mut m = g.registry.remove(id)?;
        if let Some(c) = self.cache.as_ref() {
            c.forget_module(id, m.id.index);
        }
        g.threads.forget_module(m.id.index, m.layout.memsz, unreg);
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
        self.publish(g);
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
        // A lookup that hits changes only counters; a new thread's table or a first touch is a
        // change.
        let hit =
            matches!(inner.threads.get(pid), Some(t) if t.is(task) && t.block(index).is_some());
        if !hit {
            self.make_block(inner, &owner, task, pid, index, memsz)?;
        }
        let Inner {
            registry,
            threads,
            budget,
            totals,
            ..
        } = inner;
        let t = threads.get_mut(pid).ok_or(EINVAL)?;
        let b = t.block_mut(index).ok_or(EINVAL)?;
        b.lookups += 1;
        let block = b.addr;
        t.lookups += 1;
        if let Some(m) = registry.by_index_mut(index) {
            m.lookups += 1;
        }
        totals.lookups += 1;
        if strict {
            totals.traps += 1;
        }
        if let (Some(c), Some(tp)) = (self.cache.as_ref(), tp) {
            if fill_cache(c, budget, t, task, tp, module, index, block) {
                totals.fills += 1;
            }
        }
        if hit {
            self.summary.publish_totals(&g.totals);
        } else {
            self.publish(&g);
        }
        // Cannot overflow: `offset < memsz` and the block lies inside a mapping.
        Ok((block + offset as usize) as u64)
    }

    /// The change `get_addr` makes when the calling thread `task` (tid `pid`) has no table yet
    /// or no block of the module at `index` (`memsz` bytes): the table, the block allocated and
    /// initialised.
    fn make_block(
        &self,
        inner: &mut Inner,
        owner: &OwnerMm<'_>,
        task: &Task,
        pid: Pid,
        index: u32,
        memsz: usize,
    ) -> Result {
        self.keep_for_children(inner);
        inner.threads.enter(
            task,
            pid,
            &mut inner.registry,
            &mut inner.rows,
            &mut inner.budget,
            &mut inner.totals.thread_exits,
        )?;
        // A first touch may map memory and fault on the block: fdinfo shows this meanwhile.
        self.publish(inner);
        let Inner {
            registry,
            threads,
            rows,
            budget,
            totals,
            ..
        } = inner;
        let t = threads.get_mut(pid).ok_or(EINVAL)?;
        if t.block(index).is_none() {
            let m = registry.by_index_mut(index).ok_or(EINVAL)?;
            t.reserve(index, budget)?;
            let addr = m
                .storage
                .first_touch(&m.layout, &m.image, &mut t.row, rows, budget, owner)?;
            t.set(index, addr, memsz);
            m.allocs += 1;
            totals.allocs += 1;
        }
        Ok(())
    }

    /// `KSTLS_IOC_ADOPT`: takes over, in a forked child, what its forking thread had in `parent`
    /// (the context of the process that forked it) at the fork: a snapshot made before the
    /// parent's first change since, or the parent's state if it has not changed, fitted to the
    /// child's own copy of the address space (`fork.rs`). Any thread of the child may call it;
    /// the table goes to the child's first thread. A failure leaves nothing charged, and one the
    /// child can mend (`EDQUOT`, `ENOMEM`, `EINTR`) leaves the record for another try.
    pub(crate) fn adopt(&self, parent: &Context) -> Result {
        let owner = self.owner()?;
        fork::may_adopt(&self.mm, &parent.mm)?;
        let cur = kernel::current!();
        let task: &Task = &cur;
        // Only a child forked from the context may adopt it, into a context nothing has used.
        let rec = parent.forks.find(task).ok_or(EPERM)?;
        // A fork is adopted once per context.
        if matches!(parent.snapshots.peek(rec.slot, rec.id), Peek::Adopted) {
            return Err(EPERM);
        }
        self.check_fresh()?;
        let room = Threads::reserve()?;
        let (mut guard, mut state, cost) = self.inheritance(parent, task, rec.slot, rec.id, rec.forker)?;
        // Charged and taken: what fails from here on is final, and gives the charge back.
        if let Err(e) = state.fit_to_copy(&owner) {
            guard.budget.uncharge_kernel(cost);
            return Err(e);
        }
        let g = &mut *guard;
        g.budget.inherit(state.mapped, state.images, state.mark);
        g.registry = state.registry;
        g.rows = state.rows;
        if let Some(mut t) = state.thread {
            match rec.first.as_deref() {
                // The table is the child's first thread's (the forking thread's copy),
                // whichever thread of the child adopts.
                Some(first) => {
                    t.give_to(first);
                    g.threads.insert_into(room, t.tid(), t);
                }
                // The child's first thread is gone already: its blocks are free again.
                None => {
                    g.registry.reclaim(&mut g.rows, &t);
                    g.budget
                        .uncharge_kernel(Threads::node_bytes() + t.kernel_bytes() as usize);
                }
            }
        }
        self.publish(g);
        Ok(())
    }

    /// The state the calling child (`task`) of `parent` adopts for the record `id` in `slot`
    /// (forked by `forker`), taken once this context, locked and still fresh, has been charged
    /// for it (the bytes are returned too): the snapshot kept for it, or the parent's present
    /// state if the parent has not changed since the fork, built under the parent's lock (the
    /// two context locks are never held together). The parent's lock may be held by a change
    /// stalled on a fault: it is waited for interruptibly, and a snapshot made meanwhile is
    /// taken instead. Nothing is taken when the charge fails.
    fn inheritance(
        &self,
        parent: &Context,
        task: &Task,
        slot: usize,
        id: u64,
        forker: usize,
    ) -> Result<(MutexGuard<'_, Inner>, Inheritance, usize)> {
        loop {
            match parent.snapshots.peek(slot, id) {
                Peek::Adopted => return Err(EPERM),
                Peek::Ready(Err(e)) => return Err(e),
                Peek::Ready(Ok(bytes)) => {
                    let (mut g, cost) = self.charged(bytes)?;
                    let Some(s) = parent.snapshots.take(slot, id) else {
                        g.budget.uncharge_kernel(cost);
                        return Err(EPERM);
                    };
                    // The parent's user's charge goes with the box: this context holds it now.
                    let state = KBox::into_inner(s).state;
                    return Ok((g, state, cost));
                }
                Peek::Nothing => {}
            }
            let Some(pg) = parent.inner.try_lock() else {
                if task.signal_pending() {
                    return Err(EINTR);
                }
                // SAFETY: `msleep_interruptible` only sleeps the calling task, which may sleep
                // here (no lock is held); a signal wakes it early.
                unsafe { bindings::msleep_interruptible(1) };
                continue;
            };
            // A change began since the record was made: it kept the snapshot, take that.
            if pg.seen > id {
                continue;
            }
            // Charged to this context's user while it is built, before it is charged to the
            // context itself.
            let building = Charge::new(self.user.quota(), pg.inherit_bound())?;
            let state = pg.inherit(forker)?;
            drop(pg);
            let (mut g, cost) = self.charged(state.kernel_total())?;
            drop(building);
            if !parent.snapshots.adopted(slot, id) {
                g.budget.uncharge_kernel(cost);
                return Err(EPERM);
            }
            return Ok((g, state, cost));
        }
    }

    /// This context, locked and still fresh, with `bytes` (of an adopted state) and its table's
    /// node charged to it: `EINVAL` if it was used meanwhile, `EDQUOT` when the quota has no
    /// room. Returns the bytes charged.
    fn charged(&self, bytes: u64) -> Result<(MutexGuard<'_, Inner>, usize)> {
        let mut g = self.inner.lock();
        Self::fresh(&g)?;
        let cost = usize::try_from(bytes)
            .ok()
            .and_then(|b| b.checked_add(Threads::node_bytes()))
            .ok_or(EDQUOT)?;
        g.budget.charge_kernel(cost)?;
        Ok((g, cost))
    }

    /// `EINVAL` unless the state `g` is that of a context nothing has used yet.
    fn fresh(g: &Inner) -> Result {
        if g.registry.len() != 0 || !g.threads.is_empty() {
            return Err(EINVAL);
        }
        Ok(())
    }

    /// The same, under the context's lock.
    fn check_fresh(&self) -> Result {
        Self::fresh(&self.inner.lock())
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
    /// lock held, so it must not take the context lock; a cache is kept only once it is mapped,
    /// so a mapping that fails leaves nothing allocated or charged.
    pub(crate) fn map_cache(&self, vma: &VmaNew) -> Result {
        if !core::ptr::eq(vma.mm().as_raw(), self.mm.as_raw()) {
            return Err(EPERM);
        }
        let threads = limits::cache_threads();
        if threads == 0 || !exit_hook::active() {
            return Err(ENODEV);
        }
        let _init = self.cache_init.lock();
        if let Some(c) = self.cache.as_ref() {
            return c.map(vma);
        }
        // Every check first: a refused mapping makes no cache.
        cache::check_vma(vma, cache::size_for(threads).ok_or(ENOMEM)?)?;
        let c = Arc::pin_init(
            Cache::new(threads, self.strict(), self.user.quota())?,
            GFP_KERNEL_ACCOUNT,
        )?;
        c.map(vma)?;
        // Cannot be refused: only this path populates it, under `cache_init`.
        self.cache.populate(c);
        Ok(())
    }

    /// `KSTLS_IOC_INFO`.
    pub(crate) fn info(&self) -> Result<kstls_info> {
        let _owner = self.owner()?;
        let mut g = self.inner.lock();
        self.sweep(&mut g);
        Ok(g.view().info(self.strict()))
    }

    /// Reclaims the tables of the threads that have exited, if any: a change.
    fn sweep(&self, g: &mut Inner) {
        if g.threads.any_exited() {
            self.keep_for_children(g);
            g.sweep();
            self.publish(g);
        }
    }

    /// `KSTLS_IOC_STATS`: counters, optionally narrowed to a module and/or a thread.
    pub(crate) fn stats(&self, q: &kstls_stats) -> Result<kstls_stats> {
        let _owner = self.owner()?;
        let tid = Pid::try_from(q.tid).map_err(|_| EINVAL)?;
        // The caller names the thread as its pid namespace does; the tables are by global tid.
        let global = match tid {
            0 => 0,
            t => threads::global_tid(t).unwrap_or(threads::NO_THREAD),
        };
        let mut g = self.inner.lock();
        self.sweep(&mut g);
        let mut out = g.view().stats(q.module, global)?;
        out.tid = q.tid;
        Ok(out)
    }

    /// `/proc/<pid>/fdinfo/<fd>`: the state of the context, readable by an operator. Never
    /// waits for the context lock, which a first touch may hold across a fault: while it is
    /// taken, the figures last published are shown instead (`busy: 1`).
    pub(crate) fn show(&self, m: &SeqFile) {
        let cur = kernel::current!();
        let id = Identity {
            // As the reader's pid namespace numbers it: a container is not shown a host pid.
            tgid: self.process.nr_seen_by(&cur),
            strict: self.strict(),
            cached_threads: self.cache.as_ref().map_or(0, |c| c.cached_threads()),
        };
        match self.inner.try_lock() {
            Some(g) => g.view().show(m, &id),
            None => self.summary.show(m, &id),
        }
    }
}

/// Publishes, in the cache `c`, the block `block` of module `module` (at `index`) for the
/// running thread `task` (table `t`, thread pointer `tp`), and records its slot where the exit
/// probe finds it. A thread's first slot needs an entry in the probe's index, charged to
/// `budget`: if it cannot be had, the thread is simply not cached. Returns whether the entry was
/// published.
#[expect(clippy::too_many_arguments)]
fn fill_cache(
    c: &Arc<Cache>,
    budget: &mut Budget,
    t: &mut Thread,
    task: &Task,
    tp: u64,
    module: u64,
    index: u32,
    block: usize,
) -> bool {
    let bytes = Room::bytes();
    let mut room = None;
    if t.index_bytes == 0 {
        if budget.charge_kernel(bytes).is_err() {
            return false;
        }
        match Room::new() {
            Ok(r) => room = Some(r),
            Err(_) => {
                budget.uncharge_kernel(bytes);
                return false;
            }
        }
    }
    let task = task.as_ptr() as usize;
    let Some(slot) = c.fill(task, tp, &mut t.cached_tp, module, index, block) else {
        if room.is_some() {
            budget.uncharge_kernel(bytes);
        }
        return false;
    };
    if t.cached_slot != Some(slot) {
        if exit_hook::published(task, c, slot, &mut room) {
            t.index_bytes = bytes;
        }
        t.cached_slot = Some(slot);
    }
    if room.is_some() {
        budget.uncharge_kernel(bytes);
    }
    true
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
            budget.unmap_mark(&owner);
        }
    }
}
