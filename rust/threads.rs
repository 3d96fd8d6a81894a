// SPDX-License-Identifier: GPL-2.0

//! The threads of a context: every thread's table, by tid, and the reclamation of exited ones.
//!
//! One `Threads` per context, behind the context lock. Thread exit is detected by the driver
//! itself: each `Thread` holds a reference to its task, a table whose task has `PF_EXITING` is
//! reclaimed (its blocks go back to their storage) whenever a new thread makes its first call and
//! whenever the counters are read (`INFO`, `STATS`, fdinfo), and a new task that reuses a tid
//! never sees the table of the task that had it before.

use core::mem::size_of;

use kernel::{
    bindings,
    prelude::*,
    rbtree::RBTree,
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

/// Kernel memory of one table in the tree, besides its blocks: the `Thread` in its tree node.
fn node_bytes() -> usize {
    budget::alloc_size(size_of::<Thread>() + size_of::<bindings::rb_node>() + size_of::<Pid>())
}

/// The tables of one context's threads.
pub(crate) struct Threads {
    tree: RBTree<Pid, Thread>,
}

impl Threads {
    pub(crate) fn new() -> Self {
        Self {
            tree: RBTree::new(),
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

    /// Adds the table `t` of a thread that has none (a new one, or a forked child's, adopted),
    /// charging it and its node to `budget`.
    pub(crate) fn insert(&mut self, tid: Pid, t: Thread, budget: &mut Budget) -> Result {
        let bytes = node_bytes() + t.kernel_bytes() as usize;
        budget.charge_kernel(bytes)?;
        if let Err(e) = self.tree.try_create_and_insert(tid, t, GFP_KERNEL_ACCOUNT) {
            budget.uncharge_kernel(bytes);
            return Err(e.into());
        }
        Ok(())
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
        let mut cursor = self.tree.cursor_front_mut();
        while let Some(c) = cursor {
            if c.current().1.exited() {
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
    pub(crate) fn forget_module(&mut self, index: u32, memsz: usize) {
        for t in self.tree.values_mut() {
            t.take(index, memsz);
        }
    }

    /// Forgets every thread's row (the rows are unmapped).
    pub(crate) fn forget_rows(&mut self) {
        for t in self.tree.values_mut() {
            t.row = None;
        }
    }
}
