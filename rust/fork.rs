// SPDX-License-Identifier: GPL-2.0

//! Fork: what a forked child takes over from its parent's context (`KSTLS_IOC_ADOPT`).
//!
//! fork copies the parent's address space, blocks and rows included, to the same addresses, but
//! not its context: the child opens its own and adopts the parent's, once, before anything else.
//! Who may adopt, and as of when, is the fork log's (`fork_log.rs`: a child recorded when it was
//! forked, adopting what its forking thread had then); what the child gets is decided here
//! (`inherit`): every module with the same id, layout and image, the forking thread's table with
//! the same blocks (so every TLS variable keeps its value), and the blocks and rows of the
//! parent's other threads free for reuse, since no thread of the child will ever use them. One
//! `Inheritance` is built per child, under the parent's lock alone: before the parent's first
//! change since the fork, or when the child adopts, whichever comes first.
//!
//! Other threads of the parent may have changed the context while fork copied the address
//! space, before the fork was recorded. The child, in `ADOPT`, fits what it inherits to its own
//! copy (`fit_to_copy`), as the fork mark there tells (`mark.rs`): the arenas mapped after the
//! copy leave its pools, with the blocks carved from them; a copy made before an unregistration
//! that took one of the forking thread's blocks gets `ESTALE`, since the forking thread had that
//! block. Every other change made around the copy (a registration, a first touch or a
//! reclamation by another thread, an unregistration of a module the forking thread had no block
//! of) only adds modules, or blocks on the child's free lists, or takes away a module no copy of
//! the forking thread had used, and is taken as made before it.

use kernel::{
    mm::Mm,
    prelude::*,
    task::Task, //
};

use crate::block::Storage;
use crate::budget::Budget;
use crate::mark::Mark;
use crate::registry::Registry;
use crate::rows::PackedRows;
use crate::thread::Thread;
use crate::threads::Threads;
use crate::usermem::OwnerMm;

/// What a forked child's context starts from.
pub(crate) struct Inheritance {
    pub(crate) registry: Registry,
    pub(crate) rows: PackedRows,
    /// The forking thread's table, for the child's only thread (still the forking thread's
    /// task until `ADOPT` gives it to the child's); `None` if it had none.
    pub(crate) thread: Option<Thread>,
    /// Bytes of user memory mapped for blocks (what fork copied, once `fit_to_copy` ran).
    pub(crate) mapped: u64,
    /// Bytes of `.tdata` snapshots in `registry`.
    pub(crate) images: u64,
    /// Bytes of kernel memory `registry` and `rows` keep (`thread` is charged on its own).
    pub(crate) kernel: u64,
    /// The parent's fork mark as the state reflects it.
    pub(crate) mark: Mark,
}

impl Inheritance {
    /// Bytes of kernel memory the whole inheritance keeps, its thread's table included.
    pub(crate) fn kernel_total(&self) -> u64 {
        self.kernel + self.thread.as_ref().map_or(0, |t| t.kernel_bytes())
    }

    /// Fits the state to the calling child's own copy of the address space (`mm` proves the
    /// caller runs in it), as its copy of the fork mark tells: the arenas it does not hold are
    /// dropped, and `ESTALE` if it was copied before an unregistration this state reflects.
    pub(crate) fn fit_to_copy(&mut self, mm: &OwnerMm<'_>) -> Result {
        let seen = self.mark.seen(mm);
        let (arenas, unregs) = seen.map_or((0, 0), |s| (s.arenas, s.unregs));
        let forker = self.thread.as_ref();
        // An unregistration that took one of the forking thread's blocks, begun after the copy:
        // the child had that block, and this state does not.
        if forker.map_or(0, |t| t.lost) > unregs {
            return Err(ESTALE);
        }
        let mut mapped = 0;
        for m in self.registry.iter_mut() {
            if let Storage::Pool(p) = &mut m.storage {
                p.keep_arenas(arenas, forker.and_then(|t| t.block_addr(m.id.index)))?;
                mapped += p.mapped_bytes();
            }
        }
        self.rows
            .keep_arenas(arenas, forker.and_then(|t| t.row))?;
        self.mapped = mapped + self.rows.mapped_bytes();
        self.mark = self.mark.for_child(seen.is_some());
        Ok(())
    }
}

/// Whether the calling process (whose context serves `own`) may adopt a context of the process
/// whose mm is `parent` at all: `EINVAL` if it is the same process (there is nothing to adopt).
/// Whether it was forked from it is the fork log's to say.
pub(crate) fn may_adopt(own: &Mm, parent: &Mm) -> Result {
    if core::ptr::eq(own.as_raw(), parent.as_raw()) {
        return Err(EINVAL);
    }
    Ok(())
}

/// The state a child gets from the parent's (`registry`, `threads`, `rows`, `budget`, read under
/// the parent's lock), whose thread `forker` (a task's address, compared only) forked it.
pub(crate) fn inherit(
    registry: &Registry,
    threads: &Threads,
    rows: &PackedRows,
    budget: &Budget,
    forker: usize,
) -> Result<Inheritance> {
    // The child's only thread is the copy of the thread that forked; it may never have had a
    // table, and then inherits no block.
    let forker = threads.iter().find(|t| t.task_addr() == forker);
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
    let thread = match forker {
        None => None,
        Some(f) => {
            let mut thread = Thread::new(f.task(), f.fsbase);
            thread.row = kept_row;
            thread.lost = f.lost;
            for (index, b) in f.blocks() {
                let memsz = registry
                    .iter()
                    .find(|m| m.id.index == index)
                    .map(|m| m.layout.memsz);
                thread.inherit(index, b.addr, memsz.unwrap_or(0))?;
            }
            Some(thread)
        }
    };
    let kernel = registry.kernel_bytes() + rows.kernel_bytes();
    Ok(Inheritance {
        registry,
        rows,
        thread,
        mapped: budget.mapped(),
        images: budget.images(),
        kernel,
        mark: *budget.mark(),
    })
}

#[kunit_tests(rust_kstls_fork)]
mod tests {
    use super::*;
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
        // The other thread: the test's parent (kthreadd), a task that outlives the test.
        // SAFETY: `real_parent` of a running kernel thread is a valid task, kept alive by the
        // child (us) for as long as we run; `Task` wraps `task_struct` transparently.
        let other: &Task = unsafe { &*(*cur.as_ptr()).real_parent.cast::<Task>() };
        let (forker_tp, other_tp) = (0x7f00_0000_1000u64, 0x7f00_0080_1000u64);
        let (forker_row, other_row) = (0x7f00_0010_0000usize, 0x7f00_0010_1000usize);
        let mut threads = Threads::new(0);
        for (pid, task, tp, row) in [
            (10, &*cur as &Task, forker_tp, forker_row),
            (11, other, other_tp, other_row),
        ] {
            let mut t = Thread::new(task, tp);
            t.row = Some(row);
            t.reserve(id.index, &mut budget)?;
            t.set(id.index, row, 8);
            threads.insert(pid, t, &mut budget)?;
        }
        let rows = PackedRows::new(&LIMITS)?;
        budget.charge_mapping(2 << 12)?;

        let forker = cur.as_ptr() as usize;
        let child = inherit(&registry, &threads, &rows, &budget, forker)?;
        let t = child.thread.as_ref().ok_or(EINVAL)?;
        assert_eq!(t.block_addr(id.index), Some(forker_row));
        assert_eq!(t.fsbase, forker_tp);
        assert_eq!(t.row, Some(forker_row));
        assert_eq!(t.nr_blocks, 1);
        // Inherited, not allocated on first touch.
        assert_eq!(t.allocs, 0);
        assert_eq!(child.registry.get(id.encode())?.live(), 1);
        assert_eq!(child.rows.live(), 1);
        assert_eq!(child.mapped, 2 << 12);
        // The parent is unchanged.
        assert_eq!(registry.get(id.encode())?.live(), 2);
        // A forking thread without a table (nobody has one here): the child inherits the
        // modules, no block.
        let child = inherit(&registry, &Threads::new(0), &rows, &budget, forker)?;
        assert!(child.thread.is_none());
        assert_eq!(child.registry.get(id.encode())?.live(), 0);
        Ok(())
    }
}
