// SPDX-License-Identifier: GPL-2.0

//! The memory budget of a context: what it holds, and may still take, against its limits.
//!
//! One `Budget` per context, behind the context lock. It counts two things: the user memory
//! mapped for blocks (arenas of the pools and the rows, capped by `max_block_bytes`, `ENOMEM`
//! past it) and the kernel memory held for `.tdata` snapshots (capped by `max_image_total`,
//! `E2BIG` past it). Whatever maps or snapshots charges the budget first and gives back what it
//! unmaps or frees, so a request that fails leaves the counts as they were. This is where a
//! context's memory is accounted; `KSTLS_IOC_INFO` and fdinfo report it.

use kernel::prelude::*;

use crate::limits::Limits;

/// What one context holds, against its caps.
///
/// # Invariants
///
/// `mapped <= max_mapped` and `images <= max_images`.
pub(crate) struct Budget {
    max_mapped: u64,
    max_images: u64,
    /// Bytes of user memory mapped for blocks, by all pools and the rows.
    mapped: u64,
    /// Bytes of `.tdata` snapshots held for all modules.
    images: u64,
}

/// Adds `len` to `count` if the sum stays at or below `max`; else fails with `err` and leaves
/// `count` as it was.
fn charge(count: &mut u64, max: u64, len: usize, err: Error) -> Result {
    let total = count.checked_add(len as u64).ok_or(err)?;
    if total > max {
        return Err(err);
    }
    *count = total;
    Ok(())
}

impl Budget {
    /// An empty budget with the caps of `limits`.
    pub(crate) const fn new(limits: &Limits) -> Self {
        // INVARIANT: Nothing is charged yet.
        Self {
            max_mapped: limits.max_block_bytes,
            max_images: limits.max_image_total,
            mapped: 0,
            images: 0,
        }
    }

    /// Bytes of user memory mapped for blocks now.
    pub(crate) fn mapped(&self) -> u64 {
        self.mapped
    }

    /// Bytes of `.tdata` snapshots held now.
    pub(crate) fn images(&self) -> u64 {
        self.images
    }

    /// Charges a mapping of `len` bytes that is about to be made; `ENOMEM` when it does not fit.
    pub(crate) fn charge_mapping(&mut self, len: usize) -> Result {
        // INVARIANT: `charge` keeps `mapped <= max_mapped`.
        charge(&mut self.mapped, self.max_mapped, len, ENOMEM)
    }

    /// Gives back the charge of a mapping of `len` bytes that is gone (or was never made).
    pub(crate) fn uncharge_mapping(&mut self, len: usize) {
        self.mapped -= len as u64;
    }

    /// Charges a snapshot of `len` bytes that is about to be kept; `E2BIG` when it does not fit.
    pub(crate) fn charge_image(&mut self, len: usize) -> Result {
        // INVARIANT: `charge` keeps `images <= max_images`.
        charge(&mut self.images, self.max_images, len, E2BIG)
    }

    /// Gives back the charge of a snapshot of `len` bytes that is freed.
    pub(crate) fn uncharge_image(&mut self, len: usize) {
        self.images -= len as u64;
    }

    /// The budget of a forked child: the same mappings (fork copied them) and snapshots (copied
    /// with the registry).
    pub(crate) fn fork_copy(&self) -> Self {
        Self {
            max_mapped: self.max_mapped,
            max_images: self.max_images,
            mapped: self.mapped,
            images: self.images,
        }
    }
}

#[kunit_tests(rust_kstls_budget)]
mod tests {
    use super::*;
    use crate::limits::LIMITS;

    const SMALL: Limits = Limits {
        max_block_bytes: 3 << 12,
        max_image_total: 100,
        ..LIMITS
    };

    #[test]
    fn mappings_are_charged_up_to_the_cap() -> Result {
        let mut b = Budget::new(&SMALL);
        b.charge_mapping(2 << 12)?;
        assert_eq!(b.charge_mapping(2 << 12), Err(ENOMEM));
        // A refused charge leaves the count as it was.
        assert_eq!(b.mapped(), 2 << 12);
        b.charge_mapping(1 << 12)?;
        assert_eq!(b.mapped(), SMALL.max_block_bytes);
        b.uncharge_mapping(2 << 12);
        assert_eq!(b.mapped(), 1 << 12);
        assert_eq!(b.charge_mapping(usize::MAX), Err(ENOMEM));
        Ok(())
    }

    #[test]
    fn images_are_charged_up_to_the_cap_and_forks_keep_the_counts() -> Result {
        let mut b = Budget::new(&SMALL);
        b.charge_image(60)?;
        assert_eq!(b.charge_image(41), Err(E2BIG));
        b.charge_image(40)?;
        b.charge_mapping(4096)?;
        let c = b.fork_copy();
        assert_eq!((c.images(), c.mapped()), (100, 4096));
        b.uncharge_image(60);
        assert_eq!(b.images(), 40);
        assert_eq!(c.images(), 100);
        Ok(())
    }
}
