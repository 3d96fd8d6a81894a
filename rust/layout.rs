// SPDX-License-Identifier: GPL-2.0

//! The geometry of a module's blocks, validated from the `PT_TLS` header user space passed.
//!
//! One `Layout` per registered module (and one for the rows of packed blocks, which are page-sized
//! blocks of their own). It is plain data, fixed at registration: every block of the module is
//! `memsz` bytes at an address congruent to `align_offset` modulo `align`, and consecutive blocks
//! of an arena are `stride` apart.

use kernel::prelude::*;

use crate::limits::Limits;

/// Where a module's blocks go and how big they are, validated from a `PT_TLS` header.
///
/// # Invariants
///
/// `align` is a power of two, `align_offset < align` and `filesz <= memsz <= stride`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Layout {
    /// Bytes copied from the image (`p_filesz`).
    pub(crate) filesz: usize,
    /// Size of a block (`p_memsz`); `filesz..memsz` is zero.
    pub(crate) memsz: usize,
    /// Every block address is congruent to `align_offset` modulo `align` (a power of two).
    pub(crate) align: usize,
    /// `p_vaddr % p_align`.
    pub(crate) align_offset: usize,
    /// Distance between consecutive blocks of an arena: `memsz` rounded up to `align`.
    pub(crate) stride: usize,
}

impl Layout {
    /// Validates a descriptor from user space; every step on its values is checked.
    pub(crate) fn new(
        filesz: u64,
        memsz: u64,
        align: u64,
        align_offset: u64,
        limits: &Limits,
    ) -> Result<Self> {
        // `p_align` of 0 and 1 both mean "no alignment constraint" in ELF.
        let align = align.max(1);
        if !align.is_power_of_two() || align > u64::from(limits.max_align) {
            return Err(EINVAL);
        }
        if memsz == 0 || filesz > memsz || align_offset >= align {
            return Err(EINVAL);
        }
        if memsz > limits.max_image_size {
            return Err(E2BIG);
        }
        let memsz = usize::try_from(memsz).map_err(|_| E2BIG)?;
        let align = usize::try_from(align).map_err(|_| EINVAL)?;
        let stride = memsz.checked_add(align - 1).ok_or(E2BIG)? & !(align - 1);
        // INVARIANT: `align` is a power of two, `align_offset < align`, `filesz <= memsz` and
        // `memsz <= stride`, all checked above.
        Ok(Self {
            filesz: usize::try_from(filesz).map_err(|_| EINVAL)?,
            memsz,
            align,
            align_offset: usize::try_from(align_offset).map_err(|_| EINVAL)?,
            stride,
        })
    }

    /// The first block address at or after `base` that has the required congruence.
    pub(crate) fn first_block(&self, base: usize) -> Option<usize> {
        let mask = self.align - 1;
        let pad = self.align_offset.wrapping_sub(base & mask) & mask;
        base.checked_add(pad)
    }

    /// The size of an arena that holds at least `min` bytes of blocks and one block whatever
    /// the alignment padding, rounded up to pages.
    pub(crate) fn arena_len(&self, min: usize) -> Option<usize> {
        let need = self.stride.checked_add(self.align)?.max(min);
        kernel::page::page_align(need)
    }
}

#[kunit_tests(rust_kstls_layout)]
mod tests {
    use super::*;
    use crate::limits::LIMITS;

    fn layout(filesz: u64, memsz: u64, align: u64, off: u64) -> Result<Layout> {
        Layout::new(filesz, memsz, align, off, &LIMITS)
    }

    #[test]
    fn layout_rejects_bad_descriptors() {
        assert_eq!(layout(0, 0, 8, 0), Err(EINVAL));
        assert_eq!(layout(9, 8, 8, 0), Err(EINVAL));
        assert_eq!(layout(0, 8, 3, 0), Err(EINVAL));
        assert_eq!(layout(0, 8, 8192, 0), Err(EINVAL));
        assert_eq!(layout(0, 8, 8, 8), Err(EINVAL));
        assert_eq!(layout(0, (1 << 20) + 1, 8, 0), Err(E2BIG));
        assert_eq!(layout(0, u64::MAX, 8, 0), Err(E2BIG));
    }

    #[test]
    fn layout_strides_and_zero_alignment() -> Result {
        let l = layout(3, 13, 0, 0)?;
        assert_eq!((l.align, l.stride), (1, 13));
        let l = layout(3, 13, 16, 5)?;
        assert_eq!((l.align, l.stride, l.align_offset), (16, 16, 5));
        let l = layout(0, 4097, 4096, 0)?;
        assert_eq!(l.stride, 8192);
        Ok(())
    }

    #[test]
    fn first_block_is_congruent_for_every_alignment() -> Result {
        let mut align = 1u64;
        while align <= 4096 {
            for off in [0, align / 2, align - 1] {
                let l = layout(0, 24, align, off)?;
                for base in [0x7f00_0000_0000usize, 0x7f00_0000_1000, 0x7f00_0000_0010] {
                    let b = l.first_block(base).ok_or(EINVAL)?;
                    assert!(b >= base && b - base < l.align);
                    assert_eq!(b % l.align, l.align_offset);
                    // The arena always holds at least one whole block after the padding.
                    let len = l.arena_len(0).ok_or(EINVAL)?;
                    assert!(b - base + l.memsz <= len);
                }
            }
            align *= 2;
        }
        Ok(())
    }
}
