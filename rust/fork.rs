// SPDX-License-Identifier: GPL-2.0

//! Fork: what a forked child takes over from its parent's context (`KSTLS_IOC_ADOPT`).
//!
//! fork copies the parent's address space, blocks and rows included, to the same addresses, but
//! not its context: the child opens its own and adopts the parent's, once, before anything else.
//! Who may adopt is decided here (`may_adopt`: a child of the owner, not the owner itself), and
//! what the child gets (`inherit`): every module with the same id, layout and image, the
//! forking thread's table with the same blocks (so every TLS variable keeps its value), and the
//! blocks and rows of the parent's other threads free for reuse, since no thread of the child
//! will ever use them. One `Inheritance` is built per adoption, under the parent's lock alone.

use kernel::{
    mm::Mm,
    prelude::*,
    task::Task, //
};

use crate::budget::Budget;
use crate::registry::Registry;
use crate::rows::PackedRows;
use crate::thread::Thread;
use crate::threads::Threads;
use crate::usermem;

/// What a forked child's context starts from.
pub(crate) struct Inheritance {
    pub(crate) registry: Registry,
    pub(crate) rows: PackedRows,
    /// The table of the child's only thread.
    pub(crate) thread: Thread,
    /// Bytes of user memory the parent had mapped for blocks (fork copied them).
    pub(crate) mapped: u64,
    /// Bytes of `.tdata` snapshots in `registry`.
    pub(crate) images: u64,
    /// Bytes of kernel memory `registry` and `rows` keep (`thread` is charged on its own).
    pub(crate) kernel: u64,
}

/// Whether the calling process (whose context serves `own`) may adopt the context of the process
/// whose mm is `parent`: `EINVAL` if it is the same process (there is nothing to adopt), `EPERM`
/// if the caller was not forked by it.
pub(crate) fn may_adopt(own: &Mm, parent: &Mm) -> Result {
    if core::ptr::eq(own.as_raw(), parent.as_raw()) {
        return Err(EINVAL);
    }
    if !usermem::parent_runs_in(parent) {
        return Err(EPERM);
    }
    Ok(())
}

/// The state a child gets from the parent's (`registry`, `threads`, `rows`, `budget`, read under
/// the parent's lock) for its thread `task`, whose thread pointer is `fsbase`.
pub(crate) fn inherit(
    registry: &Registry,
    threads: &Threads,
    rows: &PackedRows,
    budget: &Budget,
    task: &Task,
    fsbase: u64,
) -> Result<Inheritance> {
    // The child's only thread is the copy of the parent thread that forked: the one with the
    // same thread pointer (a dead thread may have had it too, so skip those).
    let forker = threads.iter().find(|t| t.fsbase == fsbase && !t.exited());
    let registry = registry.fork_copy(|m| {
        let index = m.id.index;
        let kept = forker.and_then(|t| t.block_addr(index));
        let others = threads
            .iter()
            .filter_map(move |t| t.block_addr(index))
            .filter(move |a| Some(*a) != kept);
        m.storage.fork_copy(kept, others)
    })?;
    let kept_row = forker.and_then(|t| t.row);
    let other_rows = threads
        .iter()
        .filter_map(|t| t.row)
        .filter(|r| Some(*r) != kept_row);
    let rows = rows.fork_copy(kept_row, other_rows)?;
    let mut thread = Thread::new(task, fsbase);
    thread.row = kept_row;
    if let Some(f) = forker {
        for (index, b) in f.blocks() {
            let memsz = registry
                .iter()
                .find(|m| m.id.index == index)
                .map(|m| m.layout.memsz);
            thread.inherit(index, b.addr, memsz.unwrap_or(0))?;
        }
    }
    let kernel = registry.kernel_bytes() + rows.kernel_bytes();
    Ok(Inheritance {
        registry,
        rows,
        thread,
        mapped: budget.mapped(),
        images: budget.images(),
        kernel,
    })
}

#[kunit_tests(rust_kstls_fork)]
mod tests {
    use super::*;
    use crate::block::Storage;
    use crate::layout::Layout;
    use crate::limits::LIMITS;
    use crate::quota::ContextSlot;
    use crate::registry::TlsModule;

    #[test]
    fn the_child_gets_the_forking_threads_blocks_only() -> Result {
        let user = ContextSlot::open_for(0x7ffb_0001, u64::MAX)?;
        let mut budget = Budget::new(&LIMITS, user.quota());
        let mut registry = Registry::new();
        let id = registry.insert(4, &mut budget, |id| {
            let layout = Layout::new(0, 8, 8, 0, &LIMITS)?;
            let storage = Storage::Packed { column: 0, live: 2 };
            Ok(TlsModule::new(id, layout, KVVec::new(), storage))
        })?;
        let cur = kernel::current!();
        let (forker_tp, other_tp) = (0x7f00_0000_1000u64, 0x7f00_0080_1000u64);
        let (forker_row, other_row) = (0x7f00_0010_0000usize, 0x7f00_0010_1000usize);
        let mut threads = Threads::new();
        for (pid, tp, row) in [(10, forker_tp, forker_row), (11, other_tp, other_row)] {
            let mut t = Thread::new(&cur, tp);
            t.row = Some(row);
            t.reserve(id.index, &mut budget)?;
            t.set(id.index, row, 8);
            threads.insert(pid, t, &mut budget)?;
        }
        let rows = PackedRows::new(&LIMITS)?;
        budget.charge_mapping(2 << 12)?;

        let child = inherit(&registry, &threads, &rows, &budget, &cur, forker_tp)?;
        assert_eq!(child.thread.block_addr(id.index), Some(forker_row));
        assert_eq!(child.thread.row, Some(forker_row));
        assert_eq!(child.thread.nr_blocks, 1);
        // Inherited, not allocated on first touch.
        assert_eq!(child.thread.allocs, 0);
        assert_eq!(child.registry.get(id.encode())?.live(), 1);
        assert_eq!(child.rows.live(), 1);
        assert_eq!(child.mapped, 2 << 12);
        // The parent is unchanged.
        assert_eq!(registry.get(id.encode())?.live(), 2);
        Ok(())
    }
}
