// SPDX-License-Identifier: GPL-2.0

//! The rows of a context: one page of user memory per thread that holds the blocks of every
//! small module, and which byte ranges of a row (columns) those modules own.
//!
//! One `PackedRows` per context. A small module gets a column of every row, fixed when it is
//! registered, so a thread's blocks of all small modules share one page (as glibc's static TLS
//! shares one area), however many modules there are. The rows themselves come from a
//! `BlockPool` of page-sized, page-aligned blocks, so any alignment up to a page is kept by
//! making the column congruent.

use kernel::prelude::*;

use crate::budget::Budget;
use crate::layout::Layout;
use crate::limits::Limits;
use crate::pool::BlockPool;
use crate::uapi::KSTLS_PACKED_MAX;
use crate::usermem::OwnerMm;

/// Bytes of a row: one page.
pub(crate) const ROW: usize = kernel::page::PAGE_SIZE;
/// Largest block that is packed into the rows; bigger ones come from their module's pool.
pub(crate) const ROW_MAX_BLOCK: usize = KSTLS_PACKED_MAX as usize;
const _: () = assert!(ROW_MAX_BLOCK <= ROW);
/// Columns are handed out in granules of this many bytes.
const GRANULE: usize = 8;
const GRANULES: usize = ROW / GRANULE;

/// The rows of a context and the columns of its small modules.
pub(crate) struct PackedRows {
    /// The granules of a row that some module's column covers.
    used: [u64; GRANULES / 64],
    /// Where rows come from: blocks of `ROW` bytes, aligned to `ROW`.
    pool: BlockPool,
    layout: Layout,
}

impl PackedRows {
    pub(crate) fn new(limits: &Limits) -> Result<Self> {
        Ok(Self {
            used: [0; GRANULES / 64],
            pool: BlockPool::new(),
            layout: Layout::new(0, ROW as u64, ROW as u64, 0, limits)?,
        })
    }

    fn granules(start: usize, len: usize) -> core::ops::Range<usize> {
        start / GRANULE..(start + len).div_ceil(GRANULE)
    }

    fn is_used(&self, g: usize) -> bool {
        self.used[g / 64] & (1 << (g % 64)) != 0
    }

    fn mark(&mut self, start: usize, len: usize, used: bool) {
        for g in Self::granules(start, len) {
            if used {
                self.used[g / 64] |= 1 << (g % 64);
            } else {
                self.used[g / 64] &= !(1 << (g % 64));
            }
        }
    }

    /// A column for blocks of layout `l`: the lowest offset in a row that is congruent to
    /// `align_offset` modulo `align` and whose bytes no other column covers. `None` when the
    /// block is too big to be packed or the rows are full; it then comes from its pool.
    pub(crate) fn place(&mut self, l: &Layout) -> Option<usize> {
        if l.memsz > ROW_MAX_BLOCK || l.align > ROW {
            return None;
        }
        // Below a granule, any granule start (plus the offset) is congruent; above, step by
        // the alignment.
        let step = l.align.max(GRANULE);
        // `Layout` keeps `align_offset < align`: the lowest congruent offset is itself.
        let mut c = l.align_offset;
        while c + l.memsz <= ROW {
            if !Self::granules(c, l.memsz).any(|g| self.is_used(g)) {
                self.mark(c, l.memsz, true);
                return Some(c);
            }
            c += step;
        }
        None
    }

    /// Gives back the column of a module that is gone. Its bytes in every row are left as
    /// they are: the next module placed there initialises its blocks in full.
    pub(crate) fn release(&mut self, column: usize, memsz: usize) {
        self.mark(column, memsz, false);
    }

    /// Rows in use (threads that have one).
    pub(crate) fn live(&self) -> u64 {
        self.pool.live()
    }

    /// Bytes of user memory the rows' pool has mapped.
    pub(crate) fn mapped_bytes(&self) -> u64 {
        self.pool.mapped_bytes()
    }

    /// Keeps, in a forked child, only the rows' arenas its copy holds (`BlockPool::keep_arenas`;
    /// `kept` is the forking thread's row).
    pub(crate) fn keep_arenas(&mut self, upto: u64, kept: Option<usize>) -> Result {
        self.pool.keep_arenas(upto, kept)
    }

    /// Bytes of kernel memory the rows keep: their pool's lists.
    pub(crate) fn kernel_bytes(&self) -> u64 {
        self.pool.kernel_bytes()
    }

    /// A row for a thread that has none, charged to `budget` as `BlockPool::alloc` does.
    pub(crate) fn alloc_row(&mut self, budget: &mut Budget, mm: &OwnerMm<'_>) -> Result<usize> {
        let layout = self.layout;
        Ok(self.pool.alloc(&layout, budget, mm)?.addr)
    }

    /// Takes back the row `alloc_row` just handed out (see `BlockPool::abort`).
    pub(crate) fn abort_row(&mut self, row: usize, budget: &mut Budget, mm: &OwnerMm<'_>) {
        self.pool.abort(row, budget, mm);
    }

    /// Takes back the row of a thread that is gone. Never allocates.
    pub(crate) fn free_row(&mut self, row: usize) {
        self.pool.free(row);
    }

    /// Unmaps every row (no thread has a packed block any more).
    pub(crate) fn unmap_all(&mut self, budget: &mut Budget, mm: &OwnerMm<'_>) {
        self.pool.unmap_all(budget, mm);
    }

    /// The rows of a forked child: the same columns, `kept` (the forking thread's row) live and
    /// `others` free again.
    pub(crate) fn fork_copy(
        &self,
        kept: Option<usize>,
        others: impl Iterator<Item = usize>,
    ) -> Result<Self> {
        Ok(Self {
            used: self.used,
            pool: self.pool.fork_copy(kept, others)?,
            layout: self.layout,
        })
    }
}

#[kunit_tests(rust_kstls_rows)]
mod tests {
    use super::*;
    use crate::limits::LIMITS;

    #[test]
    fn columns_are_congruent_and_disjoint() -> Result {
        let mut r = PackedRows::new(&LIMITS)?;
        let mut taken = KVec::new();
        // (memsz, align, align_offset): odd sizes, every alignment, offsets not multiples of
        // the granule.
        for (memsz, align, off) in [
            (8, 8, 0),
            (13, 1, 0),
            (40, 64, 24),
            (3, 4, 1),
            (100, 512, 7),
        ] {
            let l = Layout::new(0, memsz, align, off, &LIMITS)?;
            let c = r.place(&l).ok_or(ENOSPC)?;
            assert_eq!(c % l.align, l.align_offset);
            assert!(c + l.memsz <= ROW);
            for &(s, len) in taken.iter() {
                assert!(c + l.memsz <= s || s + len <= c);
            }
            taken.push((c, l.memsz), GFP_KERNEL)?;
        }
        Ok(())
    }

    #[test]
    fn full_rows_refuse_and_released_columns_are_reused() -> Result {
        let mut r = PackedRows::new(&LIMITS)?;
        let l = Layout::new(0, 8, 8, 0, &LIMITS)?;
        for i in 0..GRANULES {
            assert_eq!(r.place(&l), Some(i * 8));
        }
        assert_eq!(r.place(&l), None);
        r.release(64, 8);
        assert_eq!(r.place(&l), Some(64));
        // Too big to be packed: its pool serves it. Page alignment is kept by a column at 0.
        let mut r = PackedRows::new(&LIMITS)?;
        assert_eq!(
            r.place(&Layout::new(0, (ROW_MAX_BLOCK + 1) as u64, 8, 0, &LIMITS)?),
            None
        );
        assert_eq!(r.place(&Layout::new(0, 8, 4096, 0, &LIMITS)?), Some(0));
        Ok(())
    }
}
