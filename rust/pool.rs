// SPDX-License-Identifier: GPL-2.0

//! A block pool: blocks of one layout carved from arenas of the process's anonymous memory.
//!
//! One `BlockPool` per module whose blocks are not packed, and one in `PackedRows` for the rows.
//! Blocks are carved from arenas at a fixed stride, so every block has the layout's congruence
//! and recycling a freed block needs no search. The kernel keeps only the arena list and a free
//! list: no kernel memory grows with block sizes. A freed block goes back to the free list (whose
//! capacity is reserved when the block is carved, so freeing never allocates); arenas are unmapped
//! when their module is unregistered or the context released by its own process. Every arena is
//! charged to the context's `Budget` before it is mapped, and so is every byte the two lists
//! grow by.

use core::mem::size_of;

use kernel::prelude::*;

use crate::budget::{
    self,
    Budget, //
};
use crate::layout::Layout;
use crate::usermem::OwnerMm;

/// Smallest arena mapped at a time: many small blocks share one mapping.
pub(crate) const ARENA_MIN: usize = 64 << 10;

/// A range of user memory mapped by the pool.
#[derive(Clone, Copy)]
struct Arena {
    base: usize,
    len: usize,
    /// Its number in the context's fork mark (`mark.rs`): a forked child holds the arenas up to
    /// the number its copy of the mark holds.
    seq: u64,
}

impl Arena {
    fn holds(&self, addr: usize) -> bool {
        addr >= self.base && addr - self.base < self.len
    }
}

/// The blocks of one layout.
pub(crate) struct BlockPool {
    arenas: KVec<Arena>,
    /// Blocks returned by exited threads, ready for reuse.
    free: KVec<usize>,
    /// The next uncarved block of the newest arena, and its end.
    next: usize,
    end: usize,
    /// Blocks in use.
    live: u64,
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

    /// Blocks in use.
    pub(crate) fn live(&self) -> u64 {
        self.live
    }

    /// Bytes of user memory the pool has mapped.
    pub(crate) fn mapped_bytes(&self) -> u64 {
        self.arenas.iter().map(|a| a.len as u64).sum()
    }

    /// Bytes of kernel memory the pool keeps: its two lists.
    pub(crate) fn kernel_bytes(&self) -> u64 {
        let arenas = budget::alloc_size(self.arenas.capacity() * size_of::<Arena>());
        let free = budget::alloc_size(self.free.capacity() * size_of::<usize>());
        (arenas + free) as u64
    }

    /// Hands out a block: a recycled one, the next one of the current arena, or the first of a
    /// new arena, which is charged to `budget` before it is mapped.
    pub(crate) fn alloc(
        &mut self,
        l: &Layout,
        budget: &mut Budget,
        mm: &OwnerMm<'_>,
    ) -> Result<NewBlock> {
        self.new_arena = false;
        if let Some(addr) = self.free.pop() {
            self.live += 1;
            return Ok(NewBlock { addr, fresh: false });
        }
        // Room on the free list for every block carved, so `free()` never allocates.
        budget.reserve(&mut self.free, self.carved + 1)?;
        budget.reserve(&mut self.arenas, 1)?;
        let addr = match self.carve(l) {
            Some(a) => a,
            None => {
                let len = l.arena_len(ARENA_MIN).ok_or(ENOMEM)?;
                budget.prepare_arena(mm)?;
                budget.charge_mapping(len)?;
                let base = match mm.map_anon(len) {
                    Ok(base) => base,
                    Err(e) => {
                        budget.uncharge_mapping(len);
                        return Err(e);
                    }
                };
                let seq = budget.arena_mapped(mm);
                // Cannot fail: capacity was reserved above.
                let _ = self.arenas.push_within_capacity(Arena { base, len, seq });
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
    /// mapped for it alone is unmapped again and its charge given back to `budget`, so a failed
    /// first touch leaves no trace.
    pub(crate) fn abort(&mut self, addr: usize, budget: &mut Budget, mm: &OwnerMm<'_>) {
        if !self.new_arena {
            self.free(addr);
            return;
        }
        self.new_arena = false;
        self.live -= 1;
        self.carved -= 1;
        // The previous arena was full (that is why this one was mapped): carve from a new one.
        self.next = 0;
        self.end = 0;
        if let Some(a) = self.arenas.pop() {
            mm.unmap(a.base, a.len);
            budget.uncharge_mapping(a.len);
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
    /// other threads) free again. Its lists are charged as a whole, by whoever keeps them
    /// (`kernel_bytes`).
    pub(crate) fn fork_copy(
        &self,
        kept: Option<usize>,
        others: impl Iterator<Item = usize>,
    ) -> Result<Self> {
        let mut arenas = KVec::with_capacity(self.arenas.len(), GFP_KERNEL_ACCOUNT)?;
        arenas.extend_from_slice(&self.arenas, GFP_KERNEL_ACCOUNT)?;
        // As in `alloc`: room for every carved block, so `free()` never allocates.
        let mut free = KVec::with_capacity(self.carved + 1, GFP_KERNEL_ACCOUNT)?;
        free.extend_from_slice(&self.free, GFP_KERNEL_ACCOUNT)?;
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

    /// Keeps, in a forked child's pool, only the arenas numbered up to `upto`, those its copy of
    /// the address space holds (`mark.rs`): the blocks of the others leave the free list, and
    /// carving goes on from a new arena if the current one is gone. `kept` (the forking thread's
    /// block) always lies in a kept arena, having been counted before the fork; `ESTALE` if not.
    pub(crate) fn keep_arenas(&mut self, upto: u64, kept: Option<usize>) -> Result {
        let gone = |a: &Arena| a.seq > upto;
        if !self.arenas.iter().any(gone) {
            return Ok(());
        }
        if let Some(k) = kept {
            if self.arenas.iter().any(|a| gone(a) && a.holds(k)) {
                return Err(ESTALE);
            }
        }
        let arenas = &self.arenas;
        self.free
            .retain(|b| !arenas.iter().any(|a| gone(a) && a.holds(*b)));
        if self.arenas.iter().any(|a| gone(a) && a.holds(self.next)) {
            self.next = 0;
            self.end = 0;
        }
        self.arenas.retain(|a| !gone(a));
        // Every block carved from a kept arena is the forking thread's or on the free list.
        self.carved = self.free.len() + self.live as usize;
        Ok(())
    }

    /// Unmaps every arena (their blocks are gone), frees the lists and gives their charges back
    /// to `budget`.
    pub(crate) fn unmap_all(&mut self, budget: &mut Budget, mm: &OwnerMm<'_>) {
        for a in self.arenas.iter() {
            mm.unmap(a.base, a.len);
            budget.uncharge_mapping(a.len);
        }
        budget.free_vec(&mut self.arenas);
        budget.free_vec(&mut self.free);
        self.next = 0;
        self.end = 0;
        self.live = 0;
        self.carved = 0;
        self.new_arena = false;
    }
}

#[kunit_tests(rust_kstls_pool)]
mod tests {
    use super::*;
    use crate::limits::LIMITS;

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

    #[test]
    fn a_forked_pool_frees_the_other_threads_blocks() -> Result {
        let l = Layout::new(0, 64, 64, 0, &LIMITS)?;
        let base = 0x7f00_0020_0000;
        let mut p = pool_with_arena(base, 4096, &l);
        p.free.reserve(4, GFP_KERNEL)?;
        let mut blocks = [0; 3];
        for b in blocks.iter_mut() {
            *b = p.carve(&l).ok_or(EINVAL)?;
            p.carved += 1;
            p.live += 1;
        }
        let c = p.fork_copy(Some(blocks[1]), [blocks[0], blocks[2]].into_iter())?;
        assert_eq!((c.live(), c.carved, c.free.len()), (1, 3, 2));
        // The child carves on where the parent stopped: no block is handed out twice.
        assert_eq!(c.next, blocks[2] + l.stride);
        Ok(())
    }

    #[test]
    fn a_forked_pool_keeps_only_the_arenas_its_copy_holds() -> Result {
        let l = Layout::new(0, 64, 64, 0, &LIMITS)?;
        let (a, b) = (0x7f00_0030_0000usize, 0x7f00_0040_0000usize);
        let mut p = pool_with_arena(b, 4096, &l);
        p.arenas.reserve(2, GFP_KERNEL)?;
        p.arenas.push_within_capacity(Arena { base: a, len: 4096, seq: 1 }).map_err(|_| ENOMEM)?;
        p.arenas.push_within_capacity(Arena { base: b, len: 4096, seq: 2 }).map_err(|_| ENOMEM)?;
        p.free.reserve(4, GFP_KERNEL)?;
        // The forking thread's block in the first arena, another thread's in each.
        let (kept, other_a, other_b) = (a, a + 64, b);
        p.free.push_within_capacity(other_a).map_err(|_| ENOMEM)?;
        p.free.push_within_capacity(other_b).map_err(|_| ENOMEM)?;
        p.next = b + 64;
        p.live = 1;
        p.carved = 3;
        let mut both = p.fork_copy(Some(kept), core::iter::empty())?;
        both.keep_arenas(2, Some(kept))?;
        assert_eq!((both.arenas.len(), both.free.len(), both.next), (2, 2, b + 64));
        // The copy was made before the second arena was mapped: it and its blocks are gone,
        // and the next block comes from a new arena.
        let mut first = p.fork_copy(Some(kept), core::iter::empty())?;
        first.keep_arenas(1, Some(kept))?;
        assert_eq!((first.arenas.len(), first.free.len()), (1, 1));
        assert_eq!((first.free[0], first.next, first.end), (other_a, 0, 0));
        assert_eq!((first.carved, first.live()), (2, 1));
        assert_eq!(first.mapped_bytes(), 4096);
        // A forking thread's block outside what the copy holds cannot be: refused.
        let mut none = p.fork_copy(Some(kept), core::iter::empty())?;
        assert_eq!(none.keep_arenas(0, Some(kept)), Err(ESTALE));
        Ok(())
    }
}
