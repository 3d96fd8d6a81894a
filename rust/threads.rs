// SPDX-License-Identifier: GPL-2.0

//! The threads of a context: every thread's table, by tid, and the reclamation of exited ones.
//!
//! One `Threads` per context, behind the context lock. Thread exit is detected by the driver
//! itself: each `Thread` holds a reference to its task, a table whose task has `PF_EXITING` is
//! reclaimed (its blocks go back to their storage) whenever a new thread makes its first call and
//! whenever the counters are read (`INFO`, `STATS`; fdinfo only shows them), and a new task that
//! reuses a tid never sees the table of the task that had it before. Tables are kept by global
//! tid; a tid from user space is the caller's pid namespace's, and `global_tid` translates it.

use core::mem::size_of;

use kernel::{
    bindings,
    prelude::*,
    rbtree::{
        RBTree,
        RBTreeNodeReservation, //
    },
    sync::rcu,
    task::{
        Pid,
        Task, //
    },
};

use crate::arch;
use crate::budget::{
    self,
    Budget, //
};
use crate::registry::Registry;
use crate::rows::PackedRows;
use crate::thread::Thread;

/// A tid that no thread has (pids stay below `PID_MAX_LIMIT`, 2^22): what `global_tid` gives
/// way to for a thread the caller's namespace does not know.
pub(crate) const NO_THREAD: Pid = Pid::MAX;

/// The global tid (the one the tables are kept by) of the thread that the calling task's pid
/// namespace numbers `vtid`, if there is one.
pub(crate) fn global_tid(vtid: Pid) -> Option<Pid> {
    let _rcu = rcu::read_lock();
    // SAFETY: `find_vpid` looks `vtid` up in the calling task's active pid namespace and must run
    // under the RCU read lock, which is held; so must `pid_task`, whose result, if not null, is a
    // task that stays valid until the lock is dropped, and of which only the `pid` word (the
    // global tid, fixed for its life) is read.
    unsafe {
        let pid = bindings::find_vpid(vtid);
        if pid.is_null() {
            return None;
        }
        let task = bindings::pid_task(pid, bindings::pid_type_PIDTYPE_PID);
        (!task.is_null()).then(|| (*task).pid)
    }
}

/// Kernel memory of one table in the tree, besides its blocks: the `Thread` in its tree node,
/// and the task it holds, which outlives the thread until the table is reclaimed.
fn node_bytes() -> usize {
    budget::alloc_size(size_of::<Thread>() + size_of::<bindings::rb_node>() + size_of::<Pid>())
        + crate::thread::pinned_bytes()
}

/// Room for one table, made ahead (`Threads::reserve`).
pub(crate) struct Room(RBTreeNodeReservation<Pid, Thread>);

/// The tables of one context's threads.
pub(crate) struct Threads {
    tree: RBTree<Pid, Thread>,
    /// The context's address space (identity only): a task that left it is gone.
    mm: usize,
}

impl Threads {
    /// The tables of a context of the address space `mm` (its address, compared only).
    pub(crate) fn new(mm: usize) -> Self {
        Self {
            tree: RBTree::new(),
            mm,
        }
    }

    /// Whether no thread has a table.
    pub(crate) fn is_empty(&self) -> bool {
        self.tree.is_empty()
    }

    /// The table under `tid`, if any.
    pub(crate) fn get(&self, tid: Pid) -> Option<&Thread> {
        self.tree.get(&tid)
    }

    /// The same, mutably.
    pub(crate) fn get_mut(&mut self, tid: Pid) -> Option<&mut Thread> {
        self.tree.get_mut(&tid)
    }

    /// Every table.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Thread> {
        self.tree.values()
    }

    /// Whether some table is of a thread that is gone (a sweep would reclaim it).
    pub(crate) fn any_exited(&self) -> bool {
        self.tree.values().any(|t| t.gone(self.mm))
    }

    /// Adds the table `t` of a new thread, charging it and its node to `budget`.
    pub(crate) fn insert(&mut self, tid: Pid, t: Thread, budget: &mut Budget) -> Result {
        let bytes = node_bytes() + t.kernel_bytes() as usize;
        budget.charge_kernel(bytes)?;
        if let Err(e) = self.tree.try_create_and_insert(tid, t, GFP_KERNEL_ACCOUNT) {
            budget.uncharge_kernel(bytes);
            return Err(e.into());
        }
        Ok(())
    }

    /// Room for a table, made before anything is taken that a failure could not give back.
    pub(crate) fn reserve() -> Result<Room> {
        Ok(Room(RBTreeNodeReservation::new(GFP_KERNEL_ACCOUNT)?))
    }

    /// Bytes of kernel memory a table in the tree takes besides its blocks: what a caller that
    /// inserts with `insert_into` charges for the node.
    pub(crate) fn node_bytes() -> usize {
        node_bytes()
    }

    /// Adds the table `t` (a forked child's, adopted) in `room`; its charge, and the node's, are
    /// the caller's. Cannot fail.
    pub(crate) fn insert_into(&mut self, room: Room, tid: Pid, t: Thread) {
        self.tree.insert(room.0.into_node(tid, t));
    }

    /// Gives back the blocks of the table `t` of a thread that is gone, and its charge.
    fn reclaim(t: &Thread, registry: &mut Registry, rows: &mut PackedRows, budget: &mut Budget) {
        registry.reclaim(rows, t);
        budget.uncharge_kernel(node_bytes() + t.kernel_bytes() as usize);
    }

    /// Reclaims the tables of every thread that has exited; returns how many there were.
    pub(crate) fn sweep(
        &mut self,
        registry: &mut Registry,
        rows: &mut PackedRows,
        budget: &mut Budget,
    ) -> u64 {
        let mut exits = 0;
        let mm = self.mm;
        let mut cursor = self.tree.cursor_front_mut();
        while let Some(c) = cursor {
            if c.current().1.gone(mm) {
                let (next, node) = c.remove_current();
                Self::reclaim(&node.to_key_value().1, registry, rows, budget);
                exits += 1;
                cursor = next;
            } else {
                cursor = c.move_next();
            }
        }
        exits
    }

    /// Makes sure the calling thread `task`, whose tid is `tid`, has its own table. `exits`
    /// counts the tables of exited threads reclaimed on the way.
    pub(crate) fn enter(
        &mut self,
        task: &Task,
        tid: Pid,
        registry: &mut Registry,
        rows: &mut PackedRows,
        budget: &mut Budget,
        exits: &mut u64,
    ) -> Result {
        if matches!(self.tree.get(&tid), Some(t) if t.is(task)) {
            return Ok(());
        }
        // A table under this tid belongs to an earlier task, which has exited.
        if let Some(old) = self.tree.remove(&tid) {
            Self::reclaim(&old, registry, rows, budget);
            *exits += 1;
        }
        // A new thread: a good time to reclaim those that are gone.
        *exits += self.sweep(registry, rows, budget);
        self.insert(tid, Thread::new(task, arch::current_fsbase()), budget)
    }

    /// Forgets every thread's block of the module at `index`, of `memsz` bytes (it is gone).
    /// Every thread that had a block notes `unreg`, the unregistration's number in the fork
    /// mark: a child forked by that thread, copied before it, would have lost a block.
    pub(crate) fn forget_module(&mut self, index: u32, memsz: usize, unreg: u64) {
        for t in self.tree.values_mut() {
            if t.take(index, memsz).is_some() {
                t.lost = unreg;
            }
        }
    }

    /// Forgets every thread's row (the rows are unmapped).
    pub(crate) fn forget_rows(&mut self) {
        for t in self.tree.values_mut() {
            t.row = None;
        }
    }
}
