// SPDX-License-Identifier: GPL-2.0

//! The block pool of a module: where its threads' TLS blocks live in the process's memory.
//!
//! One `BlockPool` per registered module. Blocks are carved from arenas of anonymous user memory
//! at a fixed stride, so every block of a module has the module's congruence and recycling a
//! freed block needs no search. The kernel keeps only the arena list and a free list: no kernel
//! memory grows with block sizes. A freed block goes back to the free list (whose capacity is
//! reserved when the block is carved, so freeing never allocates); arenas are unmapped when the
//! module is unregistered or the context released by its own process.
//!
//! Small blocks do not go to their module's pool but to `PackedRows`: each thread gets one row,
//! a page of user memory, and a small module gets a column of every row, fixed when it is
//! registered, so a thread's blocks of all small modules share one page (as glibc's static TLS
//! shares one area), however many modules there are. The rows themselves come from a
//! `BlockPool` of page-sized, page-aligned blocks, so any alignment up to a page is kept by
//! making the column congruent.

use kernel::prelude::*;

use crate::registry::{
    Layout,
    Limits, //
};
use crate::uapi::KSTLS_PACKED_MAX;
use crate::usermem::OwnerMm;

/// Smallest arena mapped at a time: many small blocks share one mapping.
const ARENA_MIN: usize = 64 << 10;

/// A range of user memory mapped by the pool.
#[derive(Clone, Copy)]
struct Arena {
    base: usize,
    len: usize,
}

/// The blocks of one module.
pub(crate) struct BlockPool {
    arenas: KVec<Arena>,
    /// Blocks returned by exited threads, ready for reuse.
    free: KVec<usize>,
    /// The next uncarved block of the newest arena, and its end.
    next: usize,
    end: usize,
    /// Blocks in use.
    pub(crate) live: u64,
    /// Blocks carved in all (live + free).
    carved: usize,
    /// The last block handed out was the first of an arena mapped for it.
    new_arena: bool,
}

/// A block handed out by `BlockPool::alloc`.
pub(crate) struct NewBlock {
    pub(crate) addr: usize,
    /// The memory has never been used, so it is still zero.
    pub(crate) fresh: bool,
}

impl BlockPool {
    pub(crate) const fn new() -> Self {
        Self {
            arenas: KVec::new(),
            free: KVec::new(),
            next: 0,
            end: 0,
            live: 0,
            carved: 0,
            new_arena: false,
        }
    }

    /// Bytes of user memory the pool has mapped.
    pub(crate) fn mapped_bytes(&self) -> u64 {
        self.arenas.iter().map(|a| a.len as u64).sum()
    }

    /// Hands out a block: a recycled one, the next one of the current arena, or the first of a
    /// new arena. `budget` is what the context may still map; it shrinks by what is mapped.
    pub(crate) fn alloc(
        &mut self,
        l: &Layout,
        budget: &mut u64,
        mm: &OwnerMm<'_>,
    ) -> Result<NewBlock> {
        self.new_arena = false;
        if let Some(addr) = self.free.pop() {
            self.live += 1;
            return Ok(NewBlock { addr, fresh: false });
        }
        // Room on the free list for every block carved, so `free()` never allocates.
        self.free.reserve(self.carved + 1, GFP_KERNEL)?;
        self.arenas.reserve(1, GFP_KERNEL)?;
        let addr = match self.carve(l) {
            Some(a) => a,
            None => {
                let len = l.arena_len(ARENA_MIN).ok_or(ENOMEM)?;
                let len64 = len as u64;
                if len64 > *budget {
                    return Err(ENOMEM);
                }
                let base = mm.map_anon(len)?;
                *budget -= len64;
                // Cannot fail: capacity was reserved above.
                let _ = self.arenas.push_within_capacity(Arena { base, len });
                self.next = l.first_block(base).ok_or(ENOMEM)?;
                self.end = base + len;
                self.new_arena = true;
                self.carve(l).ok_or(ENOMEM)?
            }
        };
        self.carved += 1;
        self.live += 1;
        Ok(NewBlock { addr, fresh: true })
    }

    /// The next block of the current arena, if a whole one fits.
    fn carve(&mut self, l: &Layout) -> Option<usize> {
        let a = self.next;
        let block_end = a.checked_add(l.memsz)?;
        if self.end == 0 || block_end > self.end {
            return None;
        }
        self.next = a.checked_add(l.stride)?;
        Some(a)
    }

    /// Takes back the block `alloc` just handed out, which could not be initialised: an arena
    /// mapped for it alone is unmapped again, so a failed first touch leaves no trace. Returns
    /// the bytes given back to the budget.
    pub(crate) fn abort(&mut self, addr: usize, mm: &OwnerMm<'_>) -> u64 {
        if !self.new_arena {
            self.free(addr);
            return 0;
        }
        self.new_arena = false;
        self.live -= 1;
        self.carved -= 1;
        // The previous arena was full (that is why this one was mapped): carve from a new one.
        self.next = 0;
        self.end = 0;
        match self.arenas.pop() {
            Some(a) => {
                mm.unmap(a.base, a.len);
                a.len as u64
            }
            None => 0,
        }
    }

    /// Returns a block to the pool. Never allocates.
    pub(crate) fn free(&mut self, addr: usize) {
        self.live -= 1;
        // Cannot fail: `alloc` reserved room for every carved block.
        let _ = self.free.push_within_capacity(addr);
    }

    /// The pool of a forked child: the same arenas (fork copied them to the same addresses),
    /// with `kept` (the forking thread's block) live and `others` (the blocks of the parent's
    /// other threads) free again.
    pub(crate) fn fork_copy(
        &self,
        kept: Option<usize>,
        others: impl Iterator<Item = usize>,
    ) -> Result<Self> {
        let mut arenas = KVec::with_capacity(self.arenas.len(), GFP_KERNEL)?;
        arenas.extend_from_slice(&self.arenas, GFP_KERNEL)?;
        // As in `alloc`: room for every carved block, so `free()` never allocates.
        let mut free = KVec::with_capacity(self.carved + 1, GFP_KERNEL)?;
        free.extend_from_slice(&self.free, GFP_KERNEL)?;
        for addr in others {
            free.push_within_capacity(addr).map_err(|_| EINVAL)?;
        }
        Ok(Self {
            arenas,
            free,
            next: self.next,
            end: self.end,
            live: u64::from(kept.is_some()),
            carved: self.carved,
            new_arena: false,
        })
    }

    /// Unmaps every arena (the module is gone); returns the bytes given back to the budget.
    pub(crate) fn unmap_all(&mut self, mm: &OwnerMm<'_>) -> u64 {
        let bytes = self.mapped_bytes();
        for a in self.arenas.iter() {
            mm.unmap(a.base, a.len);
        }
        self.arenas.clear();
        self.free.clear();
        self.next = 0;
        self.end = 0;
        self.live = 0;
        self.carved = 0;
        self.new_arena = false;
        bytes
    }
}

/// Bytes of a row: one page.
pub(crate) const ROW: usize = kernel::page::PAGE_SIZE;
/// Largest block that is packed into the rows; bigger ones come from their module's pool.
pub(crate) const ROW_MAX_BLOCK: usize = KSTLS_PACKED_MAX as usize;
const _: () = assert!(ROW_MAX_BLOCK <= ROW);
/// Columns are handed out in granules of this many bytes.
const GRANULE: usize = 8;
const GRANULES: usize = ROW / GRANULE;

/// The rows of a context: one page per thread that has a block of a small module, and which
/// byte ranges of a row (columns) the small modules own.
pub(crate) struct PackedRows {
    /// The granules of a row that some module's column covers.
    used: [u64; GRANULES / 64],
    /// Where rows come from: blocks of `ROW` bytes, aligned to `ROW`.
    pub(crate) pool: BlockPool,
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

    /// A row for a thread that has none; `budget` as for `BlockPool::alloc`.
    pub(crate) fn alloc_row(&mut self, budget: &mut u64, mm: &OwnerMm<'_>) -> Result<usize> {
        let layout = self.layout;
        Ok(self.pool.alloc(&layout, budget, mm)?.addr)
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

#[kunit_tests(rust_kstls_block)]
mod tests {
    use super::*;
    use crate::registry::LIMITS;

    fn pool_with_arena(base: usize, len: usize, l: &Layout) -> BlockPool {
        let mut p = BlockPool::new();
        p.next = l.first_block(base).unwrap_or(base);
        p.end = base + len;
        p
    }

    #[test]
    fn carving_keeps_congruence_and_stays_inside_the_arena() -> Result {
        let l = Layout::new(0, 40, 64, 24, &LIMITS)?;
        let base = 0x7f00_0001_0000;
        let len = 4096;
        let mut p = pool_with_arena(base, len, &l);
        let mut n = 0;
        while let Some(a) = p.carve(&l) {
            assert_eq!(a % 64, 24);
            assert!(a >= base && a + l.memsz <= base + len);
            n += 1;
        }
        // Blocks at 24 + 64 * i with 24 + 64 * i + 40 <= 4096: i = 0..=63.
        assert_eq!(n, 64);
        Ok(())
    }

    #[test]
    fn empty_pool_carves_nothing() -> Result {
        let l = Layout::new(0, 8, 8, 0, &LIMITS)?;
        let mut p = BlockPool::new();
        assert!(p.carve(&l).is_none());
        assert_eq!(p.mapped_bytes(), 0);
        Ok(())
    }

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

    #[test]
    fn big_block_fits_its_own_arena() -> Result {
        let l = Layout::new(0, 100_000, 4096, 4095, &LIMITS)?;
        let len = l.arena_len(ARENA_MIN).ok_or(EINVAL)?;
        let base = 0x7f00_0010_0000;
        let mut p = pool_with_arena(base, len, &l);
        let a = p.carve(&l).ok_or(EINVAL)?;
        assert_eq!(a % 4096, 4095);
        assert!(a + l.memsz <= base + len);
        Ok(())
    }
}
