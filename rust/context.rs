// SPDX-License-Identifier: GPL-2.0

//! The context behind one open `/dev/kstls`: a process's TLS modules and its threads' tables.
//!
//! One `Context` per open file, owned by the process (the mm) that opened it: a call from any
//! other address space, through an fd inherited over fork or passed with `SCM_RIGHTS`, is refused
//! with `EPERM` before anything of the context is read or changed (the command's own input has
//! been read and checked by then, `uapi::read_input`). Everything mutable sits behind one mutex,
//! the only lock of the slow path. Lock order: the context mutex, then the mmap lock (taken by
//! `vm_mmap` and by faults while a block is initialised), the cache's spinlock, the fork log's or
//! the fdinfo summary's; nothing here runs with the mmap lock held. Since a first touch holds the
//! mutex across a fault, nothing that another process does waits for it: fdinfo shows a summary
//! published under a spinlock while it is taken, and a forked child adopts a snapshot made for it
//! before the parent's change began.
//!
//! Every change of the state (a registration, an unregistration, a new thread's table, a first
//! touch, a reclamation) goes through `change`, which first keeps, for every child forked since
//! the previous change, the state it will adopt (`fork_log.rs`).
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
use crate::fork;
use crate::fork_log::{
    ForkLog,
    Snapshot, //
};
use crate::layout::Layout;
use crate::limits::{
    self,
    LIMITS, //
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
use crate::thread::Thread;
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
}

/// The state of one open `/dev/kstls`.
#[pin_data(PinnedDrop)]
pub(crate) struct Context {
    /// The address space this context serves; the reference (`mmgrab`) keeps the pointer from
    /// being reused, so comparing it with `current->mm` is an identity check.
    mm: ARef<Mm>,
    /// The thread group leader of the process that opened the context, for diagnostics.
    leader: ARef<Task>,
    /// `KSTLS_MODE_*` set by `SET_MODE` (read without the lock by `mmap`).
    mode: AtomicU32,
    /// The fast-path cache, made by the first `mmap`.
    cache: SetOnce<Arc<Cache>>,
    /// The forks of the process, for `ADOPT`; its epoch counts the changes of `inner`.
    forks: Arc<ForkLog>,
    /// What fdinfo shows while `inner` is locked: it never waits for the lock.
    #[pin]
    summary: Summary,
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
        let leader = ARef::from(cur.group_leader());
        let rows = PackedRows::new(&LIMITS)?;
        let user = ContextSlot::open(limits::max_user_bytes())?;
        let mut budget = Budget::new(&LIMITS, user.quota());
        // The context itself is kernel memory its user keeps, and so is its fork log.
        budget.charge_kernel(budget::alloc_size(size_of::<Self>()) + ForkLog::kernel_bytes())?;
        let forks = ForkLog::new(mm.as_raw() as usize)?;
        let threads = Threads::new(mm.as_raw() as usize);
        Ok(try_pin_init!(Self {
            mm,
            leader,
            mode: AtomicU32::new(0),
            cache: SetOnce::new(),
            forks,
            summary <- Summary::new(),
            inner <- new_mutex!(Inner {
                registry: Registry::new(),
                threads,
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

    /// Starts a change of the state `g` (under the lock): every child forked since the last
    /// change, which has not adopted yet, first gets its snapshot of the state as it is, so that
    /// it never adopts a later one (`fork_log.rs`). The change ends with `Change::finish`, or,
    /// when a failure cuts it short, when the guard is dropped.
    fn change(&self, g: &Inner) -> Result<Change<'_>> {
        let mut pending = self.forks.begin_change()?;
        let change = Change {
            log: &self.forks,
            map_ops: g.budget.map_ops(),
            done: false,
        };
        for (id, forker, child) in pending.wanted.drain_all() {
            let snapshot =
                fork::inherit(&g.registry, &g.threads, &g.rows, &g.budget, forker, &child)
                    .and_then(|state| {
                        let charge = Charge::new(g.budget.quota(), state.kernel_total())?;
                        Ok(KBox::new(
                            Snapshot {
                                state,
                                _charge: charge,
                            },
                            GFP_KERNEL_ACCOUNT,
                        )?)
                    });
            self.forks.attach(id, snapshot);
        }
        Ok(change)
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
        // be avoided. Its size is bounded by `max_image_size`.
        let mut image = KVVec::with_capacity(layout.filesz, GFP_KERNEL_ACCOUNT)?;
        let src = usize::try_from(r.image).map_err(|_| EFAULT)?;
        UserSlice::new(UserPtr::from_addr(src), layout.filesz)
            .read_all(&mut image, GFP_KERNEL_ACCOUNT)?;

        let mut g = self.inner.lock();
        let change = self.change(&g)?;
        let Inner {
            registry,
            rows,
            budget,
            ..
        } = &mut *g;
        let id = registry.add(LIMITS.max_modules, layout, image, rows, budget);
        change.finish(&g);
        self.publish(&g);
        Ok(id?.encode())
    }

    /// `KSTLS_IOC_UNREGISTER`: frees every thread's block of the module and its storage.
    pub(crate) fn unregister(&self, id: u64) -> Result {
        let owner = self.owner()?;
        let mut guard = self.inner.lock();
        // Checked before the change begins: an unknown id changes nothing.
        guard.registry.get(id)?;
        let change = self.change(&guard)?;
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
        change.finish(g);
        self.publish(&guard);
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
        // change, made first.
        let hit =
            matches!(inner.threads.get(pid), Some(t) if t.is(task) && t.block(index).is_some());
        let change = if hit {
            None
        } else {
            Some(self.make_block(inner, &owner, task, pid, index, memsz)?)
        };
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
        match change {
            Some(change) => {
                change.finish(&g);
                self.publish(&g);
            }
            None => self.summary.publish_totals(&g.totals),
        }
        // Cannot overflow: `offset < memsz` and the block lies inside a mapping.
        Ok((block + offset as usize) as u64)
    }

    /// The change `get_addr` makes when the calling thread `task` (tid `pid`) has no table yet
    /// or no block of the module at `index` (`memsz` bytes): the table, the block allocated and
    /// initialised. The caller finishes the returned change; a failure drops it.
    fn make_block(
        &self,
        inner: &mut Inner,
        owner: &OwnerMm<'_>,
        task: &Task,
        pid: Pid,
        index: u32,
        memsz: usize,
    ) -> Result<Change<'_>> {
        let change = self.change(inner)?;
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
        Ok(change)
    }

    /// `KSTLS_IOC_ADOPT`: takes over, in a forked child, what its forking thread had in `parent`
    /// (the context of the process that forked it) at the fork: a snapshot made before the
    /// parent's first change since, or the parent's state if it has not changed. Any thread of the
    /// child may call it; the table goes to the child's first thread. Everything that can fail is
    /// done before the fork's record is taken, so a failed ADOPT can be tried again.
    pub(crate) fn adopt(&self, parent: &Context) -> Result {
        let _owner = self.owner()?;
        fork::may_adopt(&self.mm, &parent.mm)?;
        let cur = kernel::current!();
        let task: &Task = &cur;
        // Only a child forked from the context may adopt it, into a context nothing has used.
        if !parent.forks.has(task) {
            return Err(EPERM);
        }
        self.check_fresh()?;
        let room = Threads::reserve()?;

        // A snapshot is taken without the parent's lock, which a change may hold across a
        // fault; else the parent's state is read under its lock alone (the two context locks
        // are never held together).
        let (mut guard, child) = loop {
            if !parent.forks.has(task) {
                return Err(EPERM);
            }
            if let Some(cost) = parent.forks.ready(task) {
                let guard = self.charged(cost?)?;
                match parent.forks.take(task, true).map(|rec| rec.snapshot) {
                    Some(Some(Ok(s))) => break (guard, KBox::into_inner(s).state),
                    _ => return Err(EPERM),
                }
            }
            let child = {
                let g = parent.inner.lock();
                // No change is under way while the lock is held: the epoch is even. A change
                // that ran since `ready` has made the snapshot: take that.
                let Some((epoch, forker, first)) = parent.forks.peek(task) else {
                    continue;
                };
                if epoch != parent.forks.epoch() {
                    return Err(ESTALE);
                }
                fork::inherit(&g.registry, &g.threads, &g.rows, &g.budget, forker, &first)?
            };
            let guard = self.charged(child.kernel_total())?;
            if parent.forks.take(task, false).is_none() {
                return Err(EPERM);
            }
            break (guard, child);
        };
        // Charged and room made: nothing below can fail.
        let change = self.change(&guard);
        let g = &mut *guard;
        g.budget.inherit(child.mapped, child.images);
        // The table is the child's first thread's (the forking thread's copy), whichever thread
        // of the child adopts.
        g.threads
            .insert_into(room, child.thread.tid(), child.thread);
        g.registry = child.registry;
        g.rows = child.rows;
        if let Ok(change) = change {
            change.finish(g);
        }
        self.publish(g);
        Ok(())
    }

    /// This context, locked and still fresh, with `cost` bytes (of an adopted state and its
    /// table's node) charged to it: `EINVAL` if it was used meanwhile, `EDQUOT` when the quota
    /// has no room. The charge is the adopted state's from then on.
    fn charged(&self, cost: u64) -> Result<MutexGuard<'_, Inner>> {
        let mut g = self.inner.lock();
        Self::fresh(&g)?;
        let bytes = usize::try_from(cost).map_err(|_| EDQUOT)?;
        g.budget.charge_kernel(bytes + Threads::node_bytes())?;
        Ok(g)
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
            let quota = self.user.quota();
            let c = Arc::pin_init(
                Cache::new(threads, self.strict(), quota)?,
                GFP_KERNEL_ACCOUNT,
            )?;
            // If another mmap made the cache first, this one goes: nothing refers to it yet.
            self.cache.populate(c);
        }
        self.cache.as_ref().ok_or(ENOMEM)?.map(vma)
    }

    /// `KSTLS_IOC_INFO`.
    pub(crate) fn info(&self) -> Result<kstls_info> {
        let _owner = self.owner()?;
        let mut g = self.inner.lock();
        self.sweep(&mut g)?;
        Ok(g.view().info(self.strict()))
    }

    /// Reclaims the tables of the threads that have exited, if any: a change.
    fn sweep(&self, g: &mut Inner) -> Result {
        if g.threads.any_exited() {
            let change = self.change(g)?;
            g.sweep();
            change.finish(g);
            self.publish(g);
        }
        Ok(())
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
        self.sweep(&mut g)?;
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
            tgid: self.leader.tgid_nr_ns(cur.active_pid_ns()),
            strict: self.strict(),
            cached_threads: self.cache.as_ref().map_or(0, |c| c.cached_threads()),
        };
        match self.inner.try_lock() {
            Some(g) => g.view().show(m, &id),
            None => self.summary.show(m, &id),
        }
    }
}

/// A change of a context under way (`Context::change`).
struct Change<'a> {
    log: &'a ForkLog,
    /// The budget's mapping count when it began.
    map_ops: u64,
    done: bool,
}

impl Change<'_> {
    /// Ends the change of `g`, telling the fork log whether it mapped or unmapped memory.
    fn finish(mut self, g: &Inner) {
        self.done = true;
        self.log.end_change(g.budget.map_ops() != self.map_ops);
    }
}

impl Drop for Change<'_> {
    fn drop(&mut self) {
        // Cut short by a failure: it may have touched the address space.
        if !self.done {
            self.log.end_change(true);
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
        self.forks.remove();
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
