// SPDX-License-Identifier: GPL-2.0

//! The fork mark: one page of the process's own memory through which a forked child's copy of
//! the address space tells `ADOPT` what fork copied.
//!
//! One `Mark` per context (in its `Budget`), its page mapped by the first change that needs it.
//! fork copies the address space in `dup_mmap()` under the mmap write lock, at a moment no hook
//! of the kernel reports: the `sched_process_fork` probe runs after it, and other threads of the
//! parent may change the context in between. What the child's copy holds is the one exact
//! witness of that moment, so every change whose effect on the address space a child must know
//! leaves a word here, written in program order after (or before) the effect:
//! - *arenas*: the number of arenas the context has mapped, stored after each `vm_mmap`
//!   returns. The mapping and `dup_mmap()` both hold the mmap write lock, so they are ordered;
//!   if the child's copy holds the count `n`, the store was made before fork write-protected
//!   this page for copy-on-write, which is inside `dup_mmap()`'s locked section, so the `n`-th
//!   mapping, made before the store, was made before the copy: the child has arenas `1..=n`.
//!   A later arena may or may not be there (a mapping that returned just before the copy, its
//!   store just after): it is taken as absent, which at worst leaves the child a mapping its
//!   context does not use. No arena that held the forking thread's blocks can be absent: they
//!   were mapped, and counted, before the forking thread's own first touch ended.
//! - *unregs*: the number of unregistrations begun, stored before an unregistration changes
//!   anything; every thread that loses a block to it notes its number. A child whose copy holds
//!   fewer than the number its forking thread noted was copied before an unregistration that
//!   took one of that thread's blocks, and gets `ESTALE`: it had that block.
//!
//! Every other change (a registration, a first touch that maps nothing, a reclamation, the
//! unregistration of a module the forking thread had no block of) can be taken by a child as if
//! it had happened before the copy: it adds modules, puts blocks of the parent's other threads on
//! the child's free lists, or takes away what no copy of the forking thread used (`fork.rs`). The first word seals the
//! page with a random secret, so that a child that lacks the page (it was mapped after the copy)
//! and mapped memory of its own at that address is not misled. A store that fails (the process
//! unmapped the page) stops all later ones: children then see too little, which is safe.

use kernel::{
    bindings,
    page::PAGE_SIZE,
    prelude::*, //
};

use crate::usermem::OwnerMm;

/// Bytes of the page.
pub(crate) const MARK_LEN: usize = PAGE_SIZE;
/// Mixed into the seal: a page of zeroes is never taken as a mark.
const MAGIC: u64 = 0x6b73_746c_735f_6d6b;
/// Words stored: the seal, the arena count, the unregistration count.
const WORDS: usize = 3;

/// What a context last stored in its mark, and where.
#[derive(Clone, Copy)]
pub(crate) struct Mark {
    /// The page's address; 0 while there is none.
    addr: usize,
    secret: u64,
    arenas: u64,
    unregs: u64,
    /// A store failed: no more are made.
    broken: bool,
}

/// What a child's copy of a mark holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Seen {
    pub(crate) arenas: u64,
    pub(crate) unregs: u64,
}

impl Mark {
    /// No page yet.
    pub(crate) const fn none() -> Self {
        Self {
            addr: 0,
            secret: 0,
            arenas: 0,
            unregs: 0,
            broken: false,
        }
    }

    /// The page's address, 0 if there is none.
    pub(crate) fn addr(&self) -> usize {
        self.addr
    }

    /// Arenas mapped so far (the number of the last one).
    pub(crate) fn arenas(&self) -> u64 {
        self.arenas
    }

    /// Unregistrations begun so far.
    pub(crate) fn unregs(&self) -> u64 {
        self.unregs
    }

    fn seal(&self) -> u64 {
        self.secret ^ MAGIC ^ self.addr as u64
    }

    /// Takes the page just mapped at `addr` as the mark, with a new secret, and stores it.
    pub(crate) fn set_up(&mut self, addr: usize, mm: &OwnerMm<'_>) {
        self.addr = addr;
        // SAFETY: `get_random_u64` has no preconditions.
        self.secret = unsafe { bindings::get_random_u64() };
        self.broken = false;
        self.store(mm);
    }

    /// Counts an arena whose mapping has just returned; returns its number.
    pub(crate) fn arena_mapped(&mut self, mm: &OwnerMm<'_>) -> u64 {
        self.arenas += 1;
        self.store(mm);
        self.arenas
    }

    /// Counts an unregistration that is about to change the state.
    pub(crate) fn unregistering(&mut self, mm: &OwnerMm<'_>) {
        self.unregs += 1;
        self.store(mm);
    }

    fn store(&mut self, mm: &OwnerMm<'_>) {
        if self.addr == 0 || self.broken {
            return;
        }
        let words = [self.seal(), self.arenas, self.unregs];
        if mm.write_words(self.addr, &words).is_err() {
            self.broken = true;
        }
    }

    /// What the calling process's copy of this mark holds (`mm` is the proof that it is the
    /// process the copy is in); `None` if it has no copy: no page there, or memory of its own.
    pub(crate) fn seen(&self, mm: &OwnerMm<'_>) -> Option<Seen> {
        if self.addr == 0 {
            return None;
        }
        let mut words = [0u64; WORDS];
        mm.read_words(self.addr, &mut words).ok()?;
        (words[0] == self.seal()).then_some(Seen {
            arenas: words[1],
            unregs: words[2],
        })
    }

    /// The mark a child's context goes on with after adopting a state with this one: the same
    /// page, secret and counts if its copy holds the page (`seen` found it), else none.
    pub(crate) fn for_child(&self, present: bool) -> Self {
        if present {
            Self {
                broken: false,
                ..*self
            }
        } else {
            Self::none()
        }
    }
}

#[kunit_tests(rust_kstls_mark)]
mod tests {
    use super::*;

    #[test]
    fn the_counts_go_up_and_the_seal_names_the_page() {
        let mut m = Mark::none();
        assert_eq!((m.addr(), m.arenas(), m.unregs()), (0, 0, 0));
        m.addr = 0x7f00_0000_1000;
        m.secret = 0x1234;
        let s = m.seal();
        m.addr = 0x7f00_0000_2000;
        // Another page (a child's own memory there) is never sealed alike.
        assert_ne!(m.seal(), s);
        let c = m.for_child(false);
        assert_eq!(c.addr(), 0);
        let c = m.for_child(true);
        assert_eq!((c.addr(), c.secret), (m.addr, m.secret));
    }
}
