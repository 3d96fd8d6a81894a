// SPDX-License-Identifier: GPL-2.0

//! The forks of a process that has contexts, recorded as they happen: which child may `ADOPT`
//! which context, and the states kept for the children that have not yet.
//!
//! One `Site` per address space in which a context is open, shared by all of that process's
//! contexts (each holds a `ForkLog`, its membership) and kept in the global index `SITES`, by mm,
//! while any of them exists. A probe on the `sched_process_fork` tracepoint, which runs in the
//! forking thread after the child's address space was copied and before the child first runs,
//! looks the forking process's site up (the only work under the global lock) and records the
//! fork in one of the site's `MAX_PENDING` slots: the child's pid (a `PinnedPid`: the
//! `struct pid`, not the task, is kept), its exec id, and the forking thread. The probe
//! allocates nothing; a fork of a process without a context costs one lookup (none while no
//! context exists), and a fork of a process with many contexts no more than with one.
//!
//! Only a child with a record may adopt a context of the site, and each context once: a child
//! forked before the context existed, one that has exec'd since (its exec id moved on), or any
//! other process that was passed the fd has none (`EPERM`). A record whose child is gone (reaped,
//! or exec'd) is dropped when its slot is needed and when a context of the site changes. A fork
//! that finds every slot taken by a live child is not recorded.
//!
//! A child must get what its forking thread had at the fork, never a later state, so each
//! context's state is copied on write: a context's change first builds, for every record made
//! since its previous change began, the state that record's child would adopt (`Snapshots`,
//! one list per context), and only then changes anything. A child whose record has no snapshot in
//! a context adopts that context's present state, which no change has touched since. What "at the
//! fork" means for the changes other threads made while fork copied the address space is the
//! fork mark's (`mark.rs`): the child keeps what its own copy of the address space holds.

use core::{
    ffi::c_void,
    ptr,
    sync::atomic::{
        AtomicUsize,
        Ordering, //
    },
};

use kernel::{
    bindings,
    new_spinlock,
    prelude::*,
    rbtree::{
        RBTree,
        RBTreeNodeReservation, //
    },
    sync::{
        aref::ARef,
        Arc,
        SpinLock, //
    },
    task::Task, //
};

use crate::fork::Inheritance;
use crate::pid::{
    self,
    PinnedPid, //
};
use crate::quota::Charge;
use crate::tracepoint::Probe;

/// Children awaiting adoption that one process's site keeps track of.
pub(crate) const MAX_PENDING: usize = 64;

kernel::sync::global_lock! {
    // SAFETY: `init` is called in the module initialiser, before the probe is registered and
    // before the device exists, so before any other use.
    unsafe(uninit) static SITES: SpinLock<Option<RBTree<usize, Arc<Site>>>> = None;
}

/// Sites in `SITES`: 0 lets the probe return at once, for every fork on the machine.
static NR_SITES: AtomicUsize = AtomicUsize::new(0);

/// Initialises the global index. Called once, from the module initialiser.
pub(crate) fn init() {
    // SAFETY: Called exactly once, before any other use of `SITES`.
    unsafe { SITES.init() };
}

/// The exec id of `t`: it moves on at every exec, and a new thread starts from its creator's.
fn exec_id(t: &Task) -> u64 {
    // SAFETY: `t` is a valid task; `self_exec_id` is a plain word, read racily and compared
    // only: it is written by the task itself at exec, after which no caller matches anyway.
    unsafe { ptr::read_volatile(&raw const (*t.as_ptr()).self_exec_id) }
}

/// One fork of the site's process.
struct Record {
    /// Never 0, never reused within the site.
    id: u64,
    /// The child's first thread, whose pid is also its process's.
    child: PinnedPid,
    /// The child's exec id at the fork: another one means it exec'd.
    exec_id: u64,
    /// The thread that forked (identity only).
    forker: usize,
}

impl Record {
    /// Whether the child can no longer adopt: it has been reaped, or it has exec'd.
    fn gone(&self) -> bool {
        self.child
            .with_task(bindings::pid_type_PIDTYPE_TGID, |leader| {
                exec_id(leader) != self.exec_id
            })
            .unwrap_or(true)
    }

    /// Whether the running task `caller` is a thread of the child, which has not exec'd.
    fn is_of(&self, caller: &Task) -> bool {
        self.child.is_process_of(caller) && exec_id(caller) == self.exec_id
    }
}

/// The slots of a site, behind its lock.
struct Slots {
    /// `MAX_PENDING` entries, made with the site: recording never allocates.
    list: KVec<Option<Record>>,
    next_id: u64,
}

/// The forks of one process, shared by its contexts.
#[pin_data]
pub(crate) struct Site {
    /// The process's address space (identity only).
    mm: usize,
    /// Contexts of the address space (their `ForkLog`s), counted under the lock of `SITES`.
    members: AtomicUsize,
    #[pin]
    slots: SpinLock<Slots>,
}

impl Site {
    /// A site for the address space `mm`, with its slots.
    fn new(mm: usize) -> Result<Arc<Self>> {
        let mut list = KVec::with_capacity(MAX_PENDING, GFP_KERNEL_ACCOUNT)?;
        for _ in 0..MAX_PENDING {
            list.push_within_capacity(None).map_err(|_| ENOMEM)?;
        }
        Ok(Arc::pin_init(
            pin_init!(Site {
                mm,
                members: AtomicUsize::new(0),
                slots <- new_spinlock!(Slots { list, next_id: 1 }),
            }),
            GFP_KERNEL_ACCOUNT,
        )?)
    }

    /// Records that `forker` (the running task) forked `child`. Called from the probe: takes a
    /// spinlock, allocates nothing, frees nothing but pid references.
    fn record(&self, child: &Task, forker: usize) {
        let Some(pid) = PinnedPid::of_thread(child) else {
            return;
        };
        let exec_id = exec_id(child);
        let mut s = self.slots.lock();
        let free = s.list.iter().position(Option::is_none).or_else(|| {
            s.list
                .iter()
                .position(|r| r.as_ref().is_some_and(Record::gone))
        });
        let old = match free {
            Some(i) => {
                let id = s.next_id;
                s.next_id += 1;
                s.list[i].replace(Record {
                    id,
                    child: pid,
                    exec_id,
                    forker,
                })
            }
            // Every slot holds a live child: this one is not recorded, and cannot adopt.
            None => None,
        };
        drop(s);
        drop(old);
    }
}

/// A child recorded since a context's previous change, whose state it keeps before this one
/// (`ForkLog::since`).
pub(crate) struct Wanted {
    pub(crate) slot: usize,
    pub(crate) id: u64,
    pub(crate) forker: usize,
}

/// The record of the fork that made the calling process (`ForkLog::find`).
pub(crate) struct Found {
    pub(crate) slot: usize,
    pub(crate) id: u64,
    pub(crate) forker: usize,
    /// The child's first thread, the copy of the forking thread, if it still runs: it gets
    /// the forking thread's table.
    pub(crate) first: Option<ARef<Task>>,
}

/// A context's membership of its process's site: joined when the context is made, left when
/// it goes (the site leaves `SITES` with its last context).
pub(crate) struct ForkLog {
    site: Arc<Site>,
    /// The id of the first fork recorded after the context was made: earlier children, forked
    /// before the context existed, may not adopt it.
    born: u64,
}

impl ForkLog {
    /// Joins the site of the address space `mm` (its address, compared only), made now if it
    /// has none. A site is allocated only when the lookup found none, outside the global lock,
    /// and the lookup is then made again.
    pub(crate) fn join(mm: usize) -> Result<Self> {
        let mut fresh = None;
        loop {
            let mut g = SITES.lock();
            let tree = g.get_or_insert_with(RBTree::new);
            let site = match (tree.get(&mm), fresh.take()) {
                (Some(s), _) => s.clone(),
                (None, Some((site, node))) => {
                    let node: RBTreeNodeReservation<usize, Arc<Site>> = node;
                    tree.insert(node.into_node(mm, Arc::clone(&site)));
                    NR_SITES.fetch_add(1, Ordering::Relaxed);
                    site
                }
                (None, None) => {
                    drop(g);
                    fresh = Some((Site::new(mm)?, RBTreeNodeReservation::new(GFP_KERNEL_ACCOUNT)?));
                    continue;
                }
            };
            // Counted under the lock, so the site cannot leave between the lookup and the count.
            site.members.fetch_add(1, Ordering::Relaxed);
            drop(g);
            // A site made meanwhile by another context of the mm goes unused with `fresh`.
            drop(fresh);
            let born = site.slots.lock().next_id;
            return Ok(Self { site, born });
        }
    }

    /// The id of the first fork that may adopt the context: what it has seen when it is made.
    pub(crate) fn born(&self) -> u64 {
        self.born
    }

    /// Bytes of kernel memory a context keeps for fork: its share of the site (every context
    /// is charged for a whole one, with a pinned pid in every slot) and its list of snapshots.
    pub(crate) fn kernel_bytes() -> usize {
        use crate::budget::alloc_size;
        use core::mem::size_of;
        alloc_size(MAX_PENDING * size_of::<Option<Record>>())
            + MAX_PENDING * pid::pinned_bytes()
            + alloc_size(size_of::<Site>())
            + alloc_size(size_of::<bindings::rb_node>() + 2 * size_of::<usize>())
            + alloc_size(MAX_PENDING * size_of::<Snap>())
            + alloc_size(MAX_PENDING * size_of::<Wanted>())
    }

    /// Fills `wanted` (which has room for `MAX_PENDING`) with the children recorded at or after
    /// `seen` (an id), whose state a context that last changed before them keeps now, and
    /// `ids` with the id of the record in each slot (0: none); returns the id the context has
    /// seen up to after this. Records of children that are gone are dropped on the way.
    pub(crate) fn since(
        &self,
        seen: u64,
        wanted: &mut KVec<Wanted>,
        ids: &mut [u64; MAX_PENDING],
    ) -> u64 {
        *ids = [0; MAX_PENDING];
        let mut dropped: [Option<Record>; 8] = Default::default();
        let mut nd = 0;
        let mut s = self.site.slots.lock();
        for (slot, r) in s.list.iter_mut().enumerate() {
            let Some(rec) = r.as_ref() else { continue };
            if rec.gone() {
                // At most a few at a time are freed here; the others when their slot is needed.
                if nd < dropped.len() {
                    dropped[nd] = r.take();
                    nd += 1;
                }
                continue;
            }
            ids[slot] = rec.id;
            if rec.id >= seen {
                // Cannot fail: `wanted` has room for every slot.
                let _ = wanted.push_within_capacity(Wanted {
                    slot,
                    id: rec.id,
                    forker: rec.forker,
                });
            }
        }
        let next = s.next_id;
        drop(s);
        drop(dropped);
        next
    }

    /// The record of the fork that made the calling task `caller`'s process (any thread of it
    /// may adopt), if there is one.
    pub(crate) fn find(&self, caller: &Task) -> Option<Found> {
        let s = self.site.slots.lock();
        let (slot, rec) = s.list.iter().enumerate().find_map(|(i, r)| {
            Some((
                i,
                r.as_ref()
                    .filter(|r| r.id >= self.born && r.is_of(caller))?,
            ))
        })?;
        let (id, forker) = (rec.id, rec.forker);
        let child = rec.child.clone();
        drop(s);
        Some(Found {
            slot,
            id,
            forker,
            first: child.task(bindings::pid_type_PIDTYPE_PID),
        })
    }
}

impl Drop for ForkLog {
    fn drop(&mut self) {
        let mut g = SITES.lock();
        let last = self.site.members.fetch_sub(1, Ordering::Relaxed) == 1;
        // Only a new context (under this lock) could join the site again.
        let removed = if last {
            g.as_mut().and_then(|t| t.remove(&self.site.mm))
        } else {
            None
        };
        if removed.is_some() {
            NR_SITES.fetch_sub(1, Ordering::Relaxed);
        }
        drop(g);
        // The index's reference goes after the lock.
        drop(removed);
    }
}

/// A snapshot a child adopts, with the charge of its kernel memory to the parent's user.
pub(crate) struct Snapshot {
    pub(crate) state: Inheritance,
    pub(crate) _charge: Charge,
}

/// What a context keeps for the record in one slot.
enum Held {
    Nothing,
    /// What the child adopts, built before the context's first change since the fork; `Err`
    /// when it could not be built.
    Ready(Result<KBox<Snapshot>>),
    /// The child has adopted this context.
    Adopted,
}

/// One slot's entry: for the record `id` (0: none).
struct Snap {
    id: u64,
    held: Held,
}

/// What a snapshot holds for a child, as `Snapshots::peek` tells.
pub(crate) enum Peek {
    /// Nothing yet: the context has not changed since the fork.
    Nothing,
    /// A snapshot, of this many bytes of kernel memory, or the error building it met.
    Ready(Result<u64>),
    /// The child has adopted the context already.
    Adopted,
}

/// One context's states kept for children, by the slot of their record.
#[pin_data]
pub(crate) struct Snapshots {
    #[pin]
    list: SpinLock<KVec<Snap>>,
}

impl Snapshots {
    /// An empty list, allocated now with an entry for every slot.
    pub(crate) fn new() -> Result<impl PinInit<Self>> {
        let mut list = KVec::with_capacity(MAX_PENDING, GFP_KERNEL_ACCOUNT)?;
        for _ in 0..MAX_PENDING {
            list.push_within_capacity(Snap {
                id: 0,
                held: Held::Nothing,
            })
            .map_err(|_| ENOMEM)?;
        }
        Ok(pin_init!(Self {
            list <- new_spinlock!(list),
        }))
    }

    /// Keeps `snapshot` for the record `id` in `slot`; what the slot held before is freed after
    /// the lock.
    pub(crate) fn put(&self, slot: usize, id: u64, snapshot: Result<KBox<Snapshot>>) {
        let mut l = self.list.lock();
        let old = l.get_mut(slot).map(|s| {
            s.id = id;
            core::mem::replace(&mut s.held, Held::Ready(snapshot))
        });
        drop(l);
        drop(old);
    }

    /// Frees what is kept for records that are gone: `ids` has the id of the record in each
    /// slot now (`ForkLog::since`).
    pub(crate) fn prune(&self, ids: &[u64; MAX_PENDING]) {
        let mut old: [Option<Held>; 8] = Default::default();
        let mut n = 0;
        let mut l = self.list.lock();
        for (slot, s) in l.iter_mut().enumerate() {
            if s.id != 0 && s.id != ids[slot] && n < old.len() {
                s.id = 0;
                old[n] = Some(core::mem::replace(&mut s.held, Held::Nothing));
                n += 1;
            }
        }
        drop(l);
        // Freed after the lock; at most a few at a time, the others at the next change.
        drop(old);
    }

    /// What is kept for the record `id` in `slot`.
    pub(crate) fn peek(&self, slot: usize, id: u64) -> Peek {
        let l = self.list.lock();
        match l.get(slot) {
            Some(s) if s.id == id => match &s.held {
                Held::Nothing => Peek::Nothing,
                Held::Ready(Ok(snap)) => Peek::Ready(Ok(snap.state.kernel_total())),
                Held::Ready(Err(e)) => Peek::Ready(Err(*e)),
                Held::Adopted => Peek::Adopted,
            },
            _ => Peek::Nothing,
        }
    }

    /// Takes the snapshot kept for the record `id` in `slot`, if one is ready, and notes that
    /// the child adopted.
    pub(crate) fn take(&self, slot: usize, id: u64) -> Option<KBox<Snapshot>> {
        let mut l = self.list.lock();
        let s = l.get_mut(slot).filter(|s| s.id == id)?;
        if !matches!(s.held, Held::Ready(Ok(_))) {
            return None;
        }
        match core::mem::replace(&mut s.held, Held::Adopted) {
            Held::Ready(Ok(snap)) => Some(snap),
            _ => None,
        }
    }

    /// Notes that the child of the record `id` in `slot` adopted the context's present state;
    /// false if it had adopted already. A snapshot made for it since it read that state (a
    /// change began after it let the lock go) is of the same state, and is dropped.
    pub(crate) fn adopted(&self, slot: usize, id: u64) -> bool {
        let mut l = self.list.lock();
        let Some(s) = l.get_mut(slot) else {
            return false;
        };
        if s.id == id && matches!(s.held, Held::Adopted) {
            return false;
        }
        s.id = id;
        // What the slot held (for an older record, whose child is gone, or this record's
        // snapshot) is freed after the lock.
        let old = core::mem::replace(&mut s.held, Held::Adopted);
        drop(l);
        drop(old);
        true
    }
}

/// The probe: `void (*)(void *data, struct task_struct *parent, struct task_struct *child)`.
unsafe extern "C" fn on_fork(
    _data: *mut c_void,
    parent: *mut bindings::task_struct,
    child: *mut bindings::task_struct,
) {
    if NR_SITES.load(Ordering::Relaxed) == 0 {
        return;
    }
    // SAFETY: The tracepoint passes the forking task (`current`) and the new one, both valid;
    // their `mm` pointers are compared, never dereferenced.
    let (pmm, cmm) = unsafe {
        (
            ptr::read_volatile(&raw const (*parent).mm) as usize,
            ptr::read_volatile(&raw const (*child).mm) as usize,
        )
    };
    // A thread or a vfork child shares the parent's memory: there is nothing to adopt.
    if pmm == 0 || cmm == 0 || pmm == cmm {
        return;
    }
    let site = {
        let g = SITES.lock();
        match g.as_ref().and_then(|t| t.get(&pmm)) {
            Some(s) => s.clone(),
            None => return,
        }
    };
    // SAFETY: `Task` is a transparent wrapper of `task_struct`, and the child is valid for the
    // duration of the probe; `record` takes its own reference to the child's pid.
    let child = unsafe { &*child.cast::<Task>() };
    site.record(child, parent as usize);
    // If the process's last context went meanwhile, the site is freed here: that only frees
    // memory and pid references, which may be done in any context.
    drop(site);
}

/// The registration of the fork probe, undone on drop.
pub(crate) struct ForkHook {
    _probe: Option<Probe>,
}

impl ForkHook {
    /// Attaches the probe. Without it no fork is recorded, and no child can adopt.
    pub(crate) fn new() -> Self {
        // SAFETY: `on_fork` has the probe signature of `sched_process_fork` and lives as long as
        // the module, which drops the `ForkHook` before it goes.
        let probe = unsafe { Probe::attach(c"sched_process_fork", on_fork as *mut c_void) };
        if let Err(e) = &probe {
            pr_warn!(
                "cannot attach to sched_process_fork ({:?}): ADOPT is off\n",
                e
            );
        }
        Self { _probe: probe.ok() }
    }
}

#[kunit_tests(rust_kstls_fork_log)]
mod tests {
    use super::*;

    /// An mm address no process has: the tests do not meet real sites.
    const MM: usize = 0x7e00_1000;

    #[test]
    fn contexts_of_one_process_share_its_site_until_the_last_goes() -> Result {
        let a = ForkLog::join(MM)?;
        let b = ForkLog::join(MM)?;
        assert!(Arc::ptr_eq(&a.site, &b.site));
        let other = ForkLog::join(MM + 0x1000)?;
        assert!(!Arc::ptr_eq(&a.site, &other.site));
        let first = a.site.clone();
        drop(a);
        drop(b);
        let c = ForkLog::join(MM)?;
        // The site went with its last context: a new one.
        assert!(!Arc::ptr_eq(&first, &c.site));
        Ok(())
    }

    #[test]
    fn a_fork_is_recorded_once_and_seen_by_every_context_since() -> Result {
        let log = ForkLog::join(MM + 0x2000)?;
        let cur = kernel::current!();
        let me: &Task = &cur;
        // The test thread plays the child: it is running, and its exec id does not move.
        log.site.record(me, 0x1234);
        let mut wanted = KVec::with_capacity(MAX_PENDING, GFP_KERNEL)?;
        let mut ids = [0; MAX_PENDING];
        let seen = log.since(log.born(), &mut wanted, &mut ids);
        assert_eq!(ids.iter().filter(|&&i| i != 0).count(), 1);
        assert_eq!(wanted.len(), 1);
        assert_eq!((wanted[0].id, wanted[0].forker), (1, 0x1234));
        assert_eq!(seen, 2);
        // A context that changed since sees nothing more.
        wanted.clear();
        assert_eq!(log.since(seen, &mut wanted, &mut ids), 2);
        assert!(wanted.is_empty());
        let found = log.find(me).ok_or(EINVAL)?;
        assert_eq!((found.id, found.forker), (1, 0x1234));
        assert!(found.first.is_some_and(|t| *t == *me));
        Ok(())
    }

    #[test]
    fn snapshots_are_adopted_once() -> Result {
        let s = KBox::pin_init(Snapshots::new()?, GFP_KERNEL)?;
        assert!(matches!(s.peek(3, 7), Peek::Nothing));
        s.put(3, 7, Err(ENOMEM));
        assert!(matches!(s.peek(3, 7), Peek::Ready(Err(ENOMEM))));
        // An older record's entry does not answer for a newer one in the same slot.
        assert!(matches!(s.peek(3, 8), Peek::Nothing));
        assert!(s.take(3, 7).is_none());
        assert!(s.adopted(3, 8));
        assert!(matches!(s.peek(3, 8), Peek::Adopted));
        assert!(!s.adopted(3, 8));
        // A snapshot made after the child read the present state is of that same state.
        s.put(4, 9, Err(ENOMEM));
        assert!(s.adopted(4, 9));
        assert!(!s.adopted(4, 9));
        // The record of slot 3 is gone: what was kept for it goes.
        s.prune(&[0; MAX_PENDING]);
        assert!(matches!(s.peek(3, 8), Peek::Nothing));
        assert!(s.adopted(3, 8));
        Ok(())
    }
}
