// SPDX-License-Identifier: GPL-2.0

//! The table of one thread: module index -> that thread's block.
//!
//! One `Thread` per task of the owning process that has called `GET_ADDR` (or inherited a table
//! over fork), kept in the context's `Threads` by tid. It holds a reference to its task, so a
//! later task with the same tid is told apart (task identity, not tid, decides whose blocks these
//! are) and the exit of the task, or its exec, can be seen from the task itself without any hook
//! into the exit path.

use core::{
    mem::size_of,
    ptr,
    sync::atomic::{
        AtomicUsize,
        Ordering, //
    }, //
};

use kernel::{
    bindings,
    prelude::*,
    sync::aref::ARef,
    task::{
        Pid,
        Task, //
    },
};

use crate::budget::{
    self,
    Budget, //
};

/// Bytes of kernel memory a reference to a reaped task keeps (`measure_pins`).
static PINNED_TASK: AtomicUsize = AtomicUsize::new(0);

/// Measures, once, from the running task (the module's loader), the kernel memory a task
/// reference keeps alive after the task is reaped: its `task_struct` (with the extended
/// register state this CPU needs), its `signal_struct` and its credentials, as the allocator
/// sized them. A table holds its thread's task, so every table is charged this much.
pub(crate) fn measure_pins() {
    let cur = kernel::current!();
    let t = cur.as_ptr();
    // SAFETY: `current` is valid, and so are its signal struct and credentials, slab objects
    // that `ksize` only looks up.
    let bytes = unsafe {
        bindings::ksize(t.cast())
            + bindings::ksize((*t).signal.cast())
            + bindings::ksize((*t).real_cred.cast())
    };
    PINNED_TASK.store(bytes, Ordering::Relaxed);
}

/// Bytes of kernel memory one task reference keeps, measured at load (`measure_pins`).
pub(crate) fn pinned_bytes() -> usize {
    PINNED_TASK.load(Ordering::Relaxed)
}

/// Whether a task whose `exit_state` and `mm` are these has left the address space `mm` for good:
/// it has exited and the exit probe has run (`exit_state` is set by `exit_notify()`, after the
/// `sched_process_exit` tracepoint), or it has exec'd (its mm was replaced after the
/// `sched_prepare_exec` tracepoint). `PF_EXITING` is not enough: it is set before the exit probe
/// forgets the task's cache slot, and a block must not be freed while a slot may still answer it
/// (the cache's rule: a block is freed only after its entries are zeroed).
fn left(exit_state: c_int, task_mm: usize, mm: usize) -> bool {
    exit_state != 0 || task_mm != mm
}

/// One thread's block of one module.
#[derive(Clone, Copy)]
pub(crate) struct Block {
    pub(crate) addr: usize,
    /// `GET_ADDR` calls of this thread for this module.
    pub(crate) lookups: u64,
}

/// The blocks of one thread, indexed by module index (the low half of the module id).
pub(crate) struct Thread {
    task: ARef<Task>,
    /// The task's FS base (thread pointer) when the table was made; `ADOPT` finds a forked
    /// child's thread by it.
    pub(crate) fsbase: u64,
    /// The thread pointer the cache last published this thread under, 0: never (`Cache::fill`).
    pub(crate) cached_tp: u64,
    /// The slot the cache last published this thread in, recorded for the exit probe.
    pub(crate) cached_slot: Option<usize>,
    /// Bytes charged for the thread's entry in the exit probe's index (0: it has none).
    pub(crate) index_bytes: usize,
    blocks: KVec<Option<Block>>,
    /// The thread's row of packed blocks (`PackedRows`), once it has one.
    pub(crate) row: Option<usize>,
    /// Live blocks in `blocks`.
    pub(crate) nr_blocks: u64,
    /// Bytes of those blocks.
    pub(crate) block_bytes: u64,
    /// `GET_ADDR` calls of this thread.
    pub(crate) lookups: u64,
    /// Blocks allocated for this thread on first touch.
    pub(crate) allocs: u64,
    /// The number, in the context's fork mark, of the last unregistration that took one of the
    /// thread's blocks (0: none).
    pub(crate) lost: u64,
}

impl Thread {
    pub(crate) fn new(task: &Task, fsbase: u64) -> Self {
        Self {
            task: task.into(),
            fsbase,
            cached_tp: 0,
            cached_slot: None,
            index_bytes: 0,
            blocks: KVec::new(),
            row: None,
            nr_blocks: 0,
            block_bytes: 0,
            lookups: 0,
            allocs: 0,
            lost: 0,
        }
    }

    /// The table's task.
    pub(crate) fn task(&self) -> &Task {
        &self.task
    }

    /// Gives the table to `task`: a forked child's first thread takes over the copy of its
    /// forking thread's table.
    pub(crate) fn give_to(&mut self, task: &Task) {
        self.task = task.into();
    }

    /// The tid of the table's task (global, as the tables are kept).
    pub(crate) fn tid(&self) -> Pid {
        self.task.pid()
    }

    /// The address of the table's task, for comparing with a task recorded elsewhere.
    pub(crate) fn task_addr(&self) -> usize {
        self.task.as_ptr() as usize
    }

    /// Whether this table belongs to `task` (and not to an earlier task with the same tid).
    pub(crate) fn is(&self, task: &Task) -> bool {
        *self.task == *task
    }

    /// Whether the task has left the context's address space `mm` for good, so that its blocks
    /// can be reclaimed (`left`).
    pub(crate) fn gone(&self, mm: usize) -> bool {
        let t = self.task.as_ptr();
        // SAFETY: `self.task` holds a reference, so the task struct is valid. `exit_state` and
        // `mm` are words the task updates about itself; racy reads can only see a change late,
        // which delays reclamation, never makes it early: neither goes back.
        let (exit_state, task_mm) = unsafe {
            (
                ptr::read_volatile(&raw const (*t).exit_state),
                ptr::read_volatile(&raw const (*t).mm) as usize,
            )
        };
        left(exit_state, task_mm, mm)
    }

    /// The thread's block of the module at `index`, if it has one.
    pub(crate) fn block(&self, index: u32) -> Option<&Block> {
        self.blocks.get(index as usize)?.as_ref()
    }

    /// The same, mutably (for its counter).
    pub(crate) fn block_mut(&mut self, index: u32) -> Option<&mut Block> {
        self.blocks.get_mut(index as usize)?.as_mut()
    }

    /// The address of the block of the module at `index`, if the thread has one.
    pub(crate) fn block_addr(&self, index: u32) -> Option<usize> {
        Some(self.block(index)?.addr)
    }

    /// Makes room for a block at `index`, the only allocation of this table, charged to
    /// `budget`, so that `set` cannot fail after the block has been allocated. The table is as
    /// long as the highest index the thread has touched: `EDQUOT` when the user's quota has no
    /// room for it.
    pub(crate) fn reserve(&mut self, index: u32, budget: &mut Budget) -> Result {
        let want = index as usize + 1;
        let len = self.blocks.len();
        if len < want {
            budget.reserve(&mut self.blocks, want - len)?;
            // No allocation: the room was made above.
            self.blocks.resize(want, None, GFP_KERNEL_ACCOUNT)?;
        }
        Ok(())
    }

    /// Bytes of kernel memory the table keeps, besides the `Thread` itself: its blocks' buffer
    /// and its entry in the exit probe's index.
    pub(crate) fn kernel_bytes(&self) -> u64 {
        (budget::alloc_size(self.blocks.capacity() * size_of::<Option<Block>>()) + self.index_bytes)
            as u64
    }

    /// Records a new block; `reserve(index)` must have succeeded.
    pub(crate) fn set(&mut self, index: u32, addr: usize, bytes: usize) {
        if let Some(b) = self.blocks.get_mut(index as usize) {
            *b = Some(Block { addr, lookups: 0 });
            self.nr_blocks += 1;
            self.block_bytes += bytes as u64;
            self.allocs += 1;
        }
    }

    /// Records a block inherited over fork (not a first-touch allocation). The table of a
    /// forked child is charged as a whole, by whoever keeps it (`kernel_bytes`).
    pub(crate) fn inherit(&mut self, index: u32, addr: usize, bytes: usize) -> Result {
        let want = index as usize + 1;
        if self.blocks.len() < want {
            self.blocks.resize(want, None, GFP_KERNEL_ACCOUNT)?;
        }
        self.set(index, addr, bytes);
        self.allocs -= 1;
        Ok(())
    }

    /// Forgets the block of the module at `index` (the module is gone); returns it.
    pub(crate) fn take(&mut self, index: u32, bytes: usize) -> Option<Block> {
        let b = self.blocks.get_mut(index as usize)?.take()?;
        self.nr_blocks -= 1;
        self.block_bytes -= bytes as u64;
        Some(b)
    }

    /// Every block with its module index, for reclamation when the thread is gone.
    pub(crate) fn blocks(&self) -> impl Iterator<Item = (u32, &Block)> {
        self.blocks
            .iter()
            .enumerate()
            .filter_map(|(i, b)| Some((i as u32, b.as_ref()?)))
    }
}

#[kunit_tests(rust_kstls_thread)]
mod tests {
    use super::*;

    #[test]
    fn an_exiting_task_is_gone_only_once_its_slot_is_forgotten() {
        let mm = 0xffff_8880_0000_1000usize;
        // PF_EXITING is set and the exit probe has not run yet: no exit state, the same mm.
        assert!(!left(0, mm, mm));
        // exit_notify() has run (after the probe): EXIT_ZOMBIE, then EXIT_DEAD.
        assert!(left(bindings::EXIT_ZOMBIE as c_int, mm, mm));
        assert!(left(bindings::EXIT_DEAD as c_int, 0, mm));
    }

    #[test]
    fn a_task_that_execd_is_gone() {
        let mm = 0xffff_8880_0000_1000usize;
        assert!(left(0, mm + 0x1000, mm));
        // A live task of the address space is not.
        let cur = kernel::current!();
        let t = Thread::new(&cur, 0);
        // SAFETY: `current` is valid; its `mm` is only read.
        let own = unsafe { (*cur.as_ptr()).mm } as usize;
        assert!(!t.gone(own));
        assert!(t.gone(own ^ 0x1000));
    }
}
