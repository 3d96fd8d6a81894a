// SPDX-License-Identifier: GPL-2.0

//! The forks of a context's process, recorded as they happen: what `ADOPT` holds a child to.
//!
//! One `ForkLog` per context, shared with the global index `LOGS` (by mm), where a probe on the
//! `sched_process_fork` tracepoint finds it: the probe runs in the forking thread right after the
//! child's address space was copied, and records the child (a task reference), the forking thread
//! and the context's epoch then. Only a child with a record may adopt the context, once, from any
//! of its threads (the forking thread's table becomes that of the child's first thread, the
//! copy of it): one forked before the context existed, one that has exec'd since (its mm is not
//! the copy), or any other process that was passed the fd has none (`EPERM`).
//!
//! The epoch counts the context's changes, and is odd while one is under way. A child must get
//! exactly what its forking thread had at the fork, never a later state of the parent, so the
//! state is copied on write: a change first builds, for every child recorded at the current
//! epoch that has not adopted yet, the snapshot it would adopt (`snapshots`, under the context
//! lock), and only then changes anything. A child whose record has a snapshot adopts it without
//! the parent's lock; one whose parent has not changed since the fork adopts the parent's
//! present state. A child forked while another thread was changing the context (an odd epoch)
//! is taken as forked just after that change if the change mapped or unmapped nothing (its
//! effects do not depend on when the address space was copied); else, and when its snapshot
//! could not be built, it gets `ESTALE`. A change by another thread of the parent that both
//! begins and ends inside the fork, after the address space was copied and before the probe
//! runs, is not seen: fork offers no earlier hook.
//!
//! Records are kept in a list of `MAX_PENDING` entries made when the context is, so the probe
//! never allocates; one whose child has exited or exec'd is dropped when room is needed, and
//! its snapshot (if any) when the context next changes. A fork that finds no room is not recorded.

use core::{
    ffi::c_void,
    ptr,
    sync::atomic::{
        AtomicU64,
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
use crate::quota::Charge;
use crate::tracepoint::Probe;

/// Children awaiting adoption that one context keeps track of.
pub(crate) const MAX_PENDING: usize = 64;

kernel::sync::global_lock! {
    // SAFETY: `init` is called in the module initialiser, before the probe is registered and
    // before the device exists, so before any other use.
    unsafe(uninit) static LOGS: SpinLock<Option<RBTree<(usize, usize), Arc<ForkLog>>>> = None;
}

/// Fork logs in `LOGS`: 0 lets the probe return at once, for every fork on the machine.
static NR_LOGS: AtomicUsize = AtomicUsize::new(0);

/// Initialises the global index. Called once, from the module initialiser.
pub(crate) fn init() {
    // SAFETY: Called exactly once, before any other use of `LOGS`.
    unsafe { LOGS.init() };
}

/// A snapshot a child adopts, with the charge of its kernel memory to the parent's user.
pub(crate) struct Snapshot {
    pub(crate) state: Inheritance,
    pub(crate) _charge: Charge,
}

/// One fork of the context's process.
pub(crate) struct Record {
    id: u64,
    child: ARef<Task>,
    /// The child's address space as fork made it (identity only): another one means it exec'd.
    child_mm: usize,
    /// The thread that forked (identity only).
    pub(crate) forker: usize,
    /// The context's epoch at the fork; odd: a change was under way.
    pub(crate) epoch: u64,
    /// What the child adopts, built before the parent's first change since the fork; `Err`
    /// when it could not be built.
    pub(crate) snapshot: Option<Result<KBox<Snapshot>>>,
}

impl Record {
    /// Whether the child can no longer adopt: it has exited, or exec'd.
    fn gone(&self) -> bool {
        let t = self.child.as_ptr();
        // SAFETY: `child` holds a reference, so the task struct is valid; `exit_state` and `mm`
        // are plain words read racily and only compared: a stale value only delays a purge.
        let (exit_state, mm) = unsafe {
            (
                ptr::read_volatile(&raw const (*t).exit_state),
                ptr::read_volatile(&raw const (*t).mm) as usize,
            )
        };
        exit_state != 0 || mm != self.child_mm
    }
}

/// The records of one log, behind its lock.
struct Records {
    /// Capacity `MAX_PENDING`, reserved when the log is made: pushing never allocates.
    list: KVec<Record>,
    next_id: u64,
}

/// The forks of one context's process.
#[pin_data]
pub(crate) struct ForkLog {
    /// The address space of the context's process (identity only).
    mm: usize,
    /// Changes of the context: odd while one is under way.
    epoch: AtomicU64,
    #[pin]
    records: SpinLock<Records>,
}

/// Children to build snapshots for, handed from `begin_change` to `attach`: (record, forking
/// thread, child).
pub(crate) struct Pending {
    pub(crate) wanted: KVec<(u64, usize, ARef<Task>)>,
    /// Records of children that are gone, taken out under the lock and freed with this.
    dropped: KVec<Record>,
}

impl ForkLog {
    /// The log of a context of the process whose mm is `mm`, in `LOGS` until `remove` is
    /// called. Its list is allocated now.
    pub(crate) fn new(mm: usize) -> Result<Arc<Self>> {
        let list = KVec::with_capacity(MAX_PENDING, GFP_KERNEL_ACCOUNT)?;
        let log = Arc::pin_init(
            pin_init!(Self {
                mm,
                epoch: AtomicU64::new(0),
                records <- new_spinlock!(Records { list, next_id: 0 }),
            }),
            GFP_KERNEL_ACCOUNT,
        )?;
        let node = RBTreeNodeReservation::new(GFP_KERNEL_ACCOUNT)?;
        let key = (mm, Arc::as_ptr(&log) as usize);
        let mut g = LOGS.lock();
        g.get_or_insert_with(RBTree::new)
            .insert(node.into_node(key, log.clone()));
        NR_LOGS.fetch_add(1, Ordering::Relaxed);
        drop(g);
        Ok(log)
    }

    /// Bytes of kernel memory a log keeps, besides its node in `LOGS`.
    pub(crate) fn kernel_bytes() -> usize {
        crate::budget::alloc_size(MAX_PENDING * core::mem::size_of::<Record>())
            + crate::budget::alloc_size(core::mem::size_of::<Self>())
    }

    /// Takes the log out of `LOGS` (its context is going away).
    pub(crate) fn remove(self: &Arc<Self>) {
        let key = (self.mm, Arc::as_ptr(self) as usize);
        let mut g = LOGS.lock();
        let removed = g.as_mut().and_then(|t| t.remove(&key));
        if removed.is_some() {
            NR_LOGS.fetch_sub(1, Ordering::Relaxed);
        }
        drop(g);
        drop(removed);
    }

    /// The epoch now.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Records that `forker` (the running task) forked `child`. Called from the probe: takes a
    /// spinlock, allocates nothing, frees nothing but task references.
    fn record(&self, child: &Task, forker: usize) {
        // SAFETY: `child` is a valid task (the probe's argument); `mm` is read once.
        let child_mm = unsafe { ptr::read_volatile(&raw const (*child.as_ptr()).mm) } as usize;
        let mut r = self.records.lock();
        if r.list.len() == MAX_PENDING {
            // Room from a child that is gone; one with a snapshot is freed by the next change.
            if let Some(i) = r
                .list
                .iter()
                .position(|rec| rec.snapshot.is_none() && rec.gone())
            {
                let _ = r.list.remove(i);
            }
        }
        let id = r.next_id;
        r.next_id += 1;
        let rec = Record {
            id,
            child: child.into(),
            child_mm,
            forker,
            epoch: self.epoch.load(Ordering::Acquire),
            snapshot: None,
        };
        // Full: the child is not recorded, and will not be able to adopt.
        let _ = r.list.push_within_capacity(rec);
    }

    /// Starts a change of the context (the caller holds its lock): the epoch becomes odd, and
    /// the children recorded at the epoch before it, which have no snapshot yet, are returned,
    /// for the caller to build theirs before it changes anything (`attach`). Records of
    /// children that are gone are taken out too, to be freed by the caller outside the lock. The
    /// lists are allocated, outside the lock, only when there is something to put in them.
    pub(crate) fn begin_change(&self) -> Result<Pending> {
        let mut p = Pending {
            wanted: KVec::new(),
            dropped: KVec::new(),
        };
        let r = self.records.lock();
        let e = self.epoch.load(Ordering::Relaxed);
        let wanted = |rec: &Record| rec.epoch == e && rec.snapshot.is_none();
        if !r.list.iter().any(|rec| rec.gone() || wanted(rec)) {
            self.epoch.store(e | 1, Ordering::Release);
            return Ok(p);
        }
        drop(r);
        p.wanted.reserve(MAX_PENDING, GFP_KERNEL_ACCOUNT)?;
        p.dropped.reserve(MAX_PENDING, GFP_KERNEL_ACCOUNT)?;
        let mut r = self.records.lock();
        // Only the holder of the context lock changes the epoch: it is still `e`.
        self.epoch.store(e | 1, Ordering::Release);
        let mut i = 0;
        while i < r.list.len() {
            if r.list[i].gone() {
                if let Ok(rec) = r.list.remove(i) {
                    // Cannot fail: there is room for every record.
                    let _ = p.dropped.push_within_capacity(rec);
                }
                continue;
            }
            let rec = &r.list[i];
            if wanted(rec) {
                let _ = p
                    .wanted
                    .push_within_capacity((rec.id, rec.forker, rec.child.clone()));
            }
            i += 1;
        }
        drop(r);
        Ok(p)
    }

    /// Gives the record `id` (if it is still there) the snapshot built for it.
    pub(crate) fn attach(&self, id: u64, snapshot: Result<KBox<Snapshot>>) {
        let mut r = self.records.lock();
        let unused = match r.list.iter_mut().find(|rec| rec.id == id) {
            Some(rec) => {
                rec.snapshot = Some(snapshot);
                None
            }
            None => Some(snapshot),
        };
        drop(r);
        drop(unused);
    }

    /// Ends the change `begin_change` started: the epoch is even again, and new. The children
    /// forked while it was under way are taken as forked after it, unless it `touched` the
    /// address space (mapped or unmapped memory): then it is unknown which of its mappings
    /// fork copied, and they cannot adopt.
    pub(crate) fn end_change(&self, touched: bool) {
        let mut r = self.records.lock();
        let during = self.epoch.load(Ordering::Relaxed) | 1;
        let after = during + 1;
        if !touched {
            for rec in r.list.iter_mut().filter(|rec| rec.epoch == during) {
                rec.epoch = after;
            }
        }
        self.epoch.store(after, Ordering::Release);
        drop(r);
    }

    /// Whether the calling task `caller`'s process has a record with a snapshot ready: the bytes
    /// of kernel memory adopting it takes, or the error its making met.
    pub(crate) fn ready(&self, caller: &Task) -> Option<Result<u64>> {
        let r = self.records.lock();
        let i = Self::find(&r, caller, true)?;
        match r.list[i].snapshot.as_ref()? {
            Ok(s) => Some(Ok(s.state.kernel_total())),
            Err(e) => Some(Err(*e)),
        }
    }

    /// The epoch, the forking thread and the child task of the record of the calling task
    /// `caller`'s process, if it has one without a snapshot.
    pub(crate) fn peek(&self, caller: &Task) -> Option<(u64, usize, ARef<Task>)> {
        let r = self.records.lock();
        let i = Self::find(&r, caller, false)?;
        let rec = &r.list[i];
        rec.snapshot
            .is_none()
            .then(|| (rec.epoch, rec.forker, rec.child.clone()))
    }

    /// The index in `r` of the record of the fork that made the calling task `caller`'s process
    /// (any thread of it may adopt), if there is one; with `with_snapshot`, only if a snapshot is
    /// ready for it. The process is told by its address space, which the record's child, still
    /// in it (not gone), keeps from being reused.
    fn find(r: &Records, caller: &Task, with_snapshot: bool) -> Option<usize> {
        // SAFETY: `caller` is the running task; its `mm` is read once, compared only.
        let mm = unsafe { ptr::read_volatile(&raw const (*caller.as_ptr()).mm) } as usize;
        r.list.iter().position(|rec| {
            rec.child_mm == mm && !rec.gone() && (!with_snapshot || rec.snapshot.is_some())
        })
    }

    /// Whether the calling task `caller`'s process has a record.
    pub(crate) fn has(&self, caller: &Task) -> bool {
        Self::find(&self.records.lock(), caller, false).is_some()
    }

    /// The record of the calling task `caller`'s process, taken out of the log, if it has one;
    /// with `with_snapshot`, only if a snapshot is ready for it.
    pub(crate) fn take(&self, caller: &Task, with_snapshot: bool) -> Option<Record> {
        let mut r = self.records.lock();
        let i = Self::find(&r, caller, with_snapshot)?;
        r.list.remove(i).ok()
    }
}

/// The probe: `void (*)(void *data, struct task_struct *parent, struct task_struct *child)`.
unsafe extern "C" fn on_fork(
    _data: *mut c_void,
    parent: *mut bindings::task_struct,
    child: *mut bindings::task_struct,
) {
    if NR_LOGS.load(Ordering::Relaxed) == 0 {
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
    // SAFETY: `Task` is a transparent wrapper of `task_struct`, and the child is valid for the
    // duration of the probe; `record` takes its own reference.
    let child = unsafe { &*child.cast::<Task>() };
    let mut g = LOGS.lock();
    let Some(tree) = g.as_mut() else { return };
    let mut cursor = tree.cursor_lower_bound_mut(&(pmm, 0));
    while let Some(c) = cursor {
        let ((mm, _), log) = c.current();
        if *mm != pmm {
            break;
        }
        log.record(child, parent as usize);
        cursor = c.move_next();
    }
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
