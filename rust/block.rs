// SPDX-License-Identifier: GPL-2.0

//! Where a module's blocks come from (`Storage`), and the first touch that makes a thread's block.
//!
//! One `Storage` per registered module, chosen when it is registered: a module small enough to be
//! packed gets a column of every thread's row (`PackedRows`, `rows.rs`), any other a pool of its
//! own (`BlockPool`, `pool.rs`). This file is the allocation policy of a context: the first touch
//! takes the block from the storage (mapping the thread's row or an arena if need be, charged to
//! the context's `Budget`), initialises it, and undoes everything if that fails; a block is given
//! back when its thread is gone, and the storage when its module is.

use kernel::prelude::*;

use crate::budget::Budget;
use crate::layout::Layout;
use crate::pool::BlockPool;
use crate::rows::PackedRows;
use crate::usermem::OwnerMm;

/// The storage of one module's blocks.
pub(crate) enum Storage {
    /// Blocks carved from the module's own arenas.
    Pool(BlockPool),
    /// Blocks at byte `column` of every thread's row; `live` threads have one now.
    Packed { column: usize, live: u64 },
}

impl Storage {
    /// The storage of a new module: packed at `column` (from `PackedRows::place`), else a pool.
    pub(crate) fn new(column: Option<usize>) -> Self {
        match column {
            Some(column) => Self::Packed { column, live: 0 },
            None => Self::Pool(BlockPool::new()),
        }
    }

    /// Whether the blocks sit in the rows.
    pub(crate) fn is_packed(&self) -> bool {
        matches!(self, Self::Packed { .. })
    }

    /// Live blocks.
    pub(crate) fn live(&self) -> u64 {
        match self {
            Self::Pool(p) => p.live(),
            Self::Packed { live, .. } => *live,
        }
    }

    /// Bytes of kernel memory the storage keeps (a pool's lists; a column keeps none).
    pub(crate) fn kernel_bytes(&self) -> u64 {
        match self {
            Self::Pool(p) => p.kernel_bytes(),
            Self::Packed { .. } => 0,
        }
    }

    /// First touch: the block of layout `l` of a thread whose row is `row`, initialised with
    /// `image` (then zeroes). A packed block is the module's column of the thread's row, the row
    /// made now if the thread has none (and recorded in `row`); its bytes may have been another
    /// module's or another thread's, so it is never taken as zero. On failure nothing is left
    /// behind: what was mapped for this block is unmapped and `budget` is as it was.
    pub(crate) fn first_touch(
        &mut self,
        l: &Layout,
        image: &[u8],
        row: &mut Option<usize>,
        rows: &mut PackedRows,
        budget: &mut Budget,
        mm: &OwnerMm<'_>,
    ) -> Result<usize> {
        let (addr, fresh, new_row) = match (&mut *self, *row) {
            (Self::Packed { column, .. }, Some(r)) => (r + *column, false, None),
            (Self::Packed { column, .. }, None) => {
                let r = rows.alloc_row(budget, mm)?;
                (r + *column, false, Some(r))
            }
            (Self::Pool(p), _) => {
                let nb = p.alloc(l, budget, mm)?;
                (nb.addr, nb.fresh, None)
            }
        };
        if let Err(e) = mm.init_block(addr, image, l.memsz, fresh) {
            // The block is ours: if it is still mapped, faulting it in ran out of memory.
            let e = if e == EFAULT && mm.is_mapped(addr) {
                ENOMEM
            } else {
                e
            };
            match (&mut *self, new_row) {
                (Self::Pool(p), _) => p.abort(addr, budget, mm),
                (Self::Packed { .. }, Some(r)) => rows.abort_row(r, budget, mm),
                (Self::Packed { .. }, None) => {}
            }
            return Err(e);
        }
        if new_row.is_some() {
            *row = new_row;
        }
        if let Self::Packed { live, .. } = self {
            *live += 1;
        }
        Ok(addr)
    }

    /// Takes back the block at `addr` of a thread that is gone. Never allocates.
    pub(crate) fn free(&mut self, addr: usize) {
        match self {
            Self::Pool(p) => p.free(addr),
            Self::Packed { live, .. } => *live -= 1,
        }
    }

    /// The module (of layout `l`) is gone and no table holds its blocks any more: its arenas are
    /// unmapped, or its column given back. Returns whether it was packed.
    pub(crate) fn release(
        &mut self,
        l: &Layout,
        rows: &mut PackedRows,
        budget: &mut Budget,
        mm: &OwnerMm<'_>,
    ) -> bool {
        match self {
            Self::Pool(p) => {
                p.unmap_all(budget, mm);
                false
            }
            Self::Packed { column, live } => {
                rows.release(*column, l.memsz);
                *live = 0;
                true
            }
        }
    }

    /// The storage of the module in a forked child: the same column or arenas, with `kept` (the
    /// forking thread's block, if it has one) live and `others` (the blocks of the parent's
    /// other threads) free again. Packed blocks need no list: the rows are copied on their own.
    pub(crate) fn fork_copy(
        &self,
        kept: Option<usize>,
        others: impl Iterator<Item = usize>,
    ) -> Result<Self> {
        Ok(match self {
            Self::Pool(p) => Self::Pool(p.fork_copy(kept, others)?),
            Self::Packed { column, .. } => Self::Packed {
                column: *column,
                live: u64::from(kept.is_some()),
            },
        })
    }
}

#[kunit_tests(rust_kstls_block)]
mod tests {
    use super::*;

    #[test]
    fn small_modules_are_packed_and_others_pooled() {
        let s = Storage::new(Some(64));
        assert!(s.is_packed());
        assert_eq!(s.live(), 0);
        let s = Storage::new(None);
        assert!(!s.is_packed());
        assert_eq!(s.live(), 0);
    }

    #[test]
    fn packed_storage_counts_blocks_across_free_and_fork() -> Result {
        let mut s = Storage::Packed {
            column: 16,
            live: 3,
        };
        s.free(0x7f00_0000_1010);
        assert_eq!(s.live(), 2);
        // Only the forking thread's block is live in the child.
        let c = s.fork_copy(Some(0x7f00_0000_2010), [0x7f00_0000_1010usize].into_iter())?;
        assert!(matches!(
            c,
            Storage::Packed {
                column: 16,
                live: 1
            }
        ));
        let c = s.fork_copy(None, core::iter::empty())?;
        assert_eq!(c.live(), 0);
        Ok(())
    }
}
