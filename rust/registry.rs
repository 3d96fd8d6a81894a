// SPDX-License-Identifier: GPL-2.0

//! The module registry of a context: the TLS modules a process registered, by module id.
//!
//! There is one `Registry` per context. A module (`TlsModule`) is what one `PT_TLS` program
//! header describes: the layout of its blocks (`Layout`), a snapshot of its `.tdata` image taken
//! at registration, and the pool its blocks are carved from. Ids are `generation << 32 | index`:
//! the index of a place in the registry is reused after `UNREGISTER`, its generation is not, so a
//! stale id never reaches a new module's blocks.

use kernel::prelude::*;

use crate::block::BlockPool;

/// Per-process caps; every one is reported by `KSTLS_IOC_INFO`.
pub(crate) struct Limits {
    /// Modules registered at once (`ENOSPC` past it).
    pub(crate) max_modules: u32,
    /// Largest `p_align` (`EINVAL` past it): arenas are page aligned, so up to a page is exact.
    pub(crate) max_align: u32,
    /// Largest `p_memsz` of one module (`E2BIG` past it).
    pub(crate) max_image_size: u64,
    /// Sum of the `.tdata` snapshots kept in kernel memory (`E2BIG` past it).
    pub(crate) max_image_total: u64,
    /// Bytes of user memory mapped for blocks (`ENOMEM` past it).
    pub(crate) max_block_bytes: u64,
}

/// The limits every context gets.
pub(crate) const LIMITS: Limits = Limits {
    max_modules: 1024,
    max_align: kernel::page::PAGE_SIZE as u32,
    max_image_size: 1 << 20,
    max_image_total: 16 << 20,
    max_block_bytes: 256 << 20,
};

/// Where a module's blocks go and how big they are, validated from a `PT_TLS` header.
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

/// A module id as user space sees it: `generation << 32 | index`, generation never 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ModuleId {
    /// The module's place in the registry, and in every thread's table.
    pub(crate) index: u32,
    pub(crate) generation: u32,
}

impl ModuleId {
    /// Splits a user-supplied id; `None` for values kstls never hands out.
    pub(crate) fn decode(id: u64) -> Option<Self> {
        let generation = (id >> 32) as u32;
        if generation == 0 {
            return None;
        }
        Some(Self {
            index: id as u32,
            generation,
        })
    }

    /// The value handed to user space.
    pub(crate) fn encode(self) -> u64 {
        (u64::from(self.generation) << 32) | u64::from(self.index)
    }
}

/// One registered TLS module.
pub(crate) struct TlsModule {
    pub(crate) id: ModuleId,
    pub(crate) layout: Layout,
    /// The `.tdata` snapshot, `layout.filesz` bytes.
    pub(crate) image: KVVec<u8>,
    /// Where this module's blocks come from when they are not packed.
    pub(crate) pool: BlockPool,
    /// The module's column in every thread's row (`PackedRows`), when its blocks are packed.
    pub(crate) column: Option<usize>,
    /// Live packed blocks.
    pub(crate) packed: u64,
    /// `GET_ADDR` calls answered for this module.
    pub(crate) lookups: u64,
    /// Blocks initialised on first touch.
    pub(crate) allocs: u64,
}

impl TlsModule {
    /// Live blocks, packed or from the pool.
    pub(crate) fn live(&self) -> u64 {
        self.pool.live + self.packed
    }
}

/// A place in the registry: the generation of its latest id and the module, if any, there now.
struct Place {
    generation: u32,
    module: Option<TlsModule>,
}

/// The modules of one context.
pub(crate) struct Registry {
    places: KVec<Place>,
    len: usize,
}

impl Registry {
    pub(crate) const fn new() -> Self {
        Self {
            places: KVec::new(),
            len: 0,
        }
    }

    /// Modules registered now.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Picks the place and id for a new module, growing the table if needed (the only
    /// allocation here), then stores what `make` builds for that id. `ENOSPC` at `max_modules`.
    pub(crate) fn insert(
        &mut self,
        max_modules: u32,
        make: impl FnOnce(ModuleId) -> Result<TlsModule>,
    ) -> Result<ModuleId> {
        if self.len >= max_modules as usize {
            return Err(ENOSPC);
        }
        let index = match self.places.iter().position(|p| p.module.is_none()) {
            Some(i) => i,
            None => {
                self.places.push(
                    Place {
                        generation: 0,
                        module: None,
                    },
                    GFP_KERNEL,
                )?;
                self.places.len() - 1
            }
        };
        let p = &mut self.places[index];
        // Generation 0 is never handed out, so wrapping skips it.
        let generation = p.generation.wrapping_add(1).max(1);
        let id = ModuleId {
            index: u32::try_from(index).map_err(|_| ENOSPC)?,
            generation,
        };
        p.module = Some(make(id)?);
        p.generation = generation;
        self.len += 1;
        Ok(id)
    }

    /// The module that `id` names now; `EINVAL` for an unknown or stale id.
    pub(crate) fn get_mut(&mut self, id: u64) -> Result<&mut TlsModule> {
        let id = ModuleId::decode(id).ok_or(EINVAL)?;
        match self.places.get_mut(id.index as usize) {
            Some(Place {
                generation,
                module: Some(m),
            }) if *generation == id.generation => Ok(m),
            _ => Err(EINVAL),
        }
    }

    /// The module registered at `index`, whatever its generation.
    pub(crate) fn by_index_mut(&mut self, index: u32) -> Option<&mut TlsModule> {
        self.places.get_mut(index as usize)?.module.as_mut()
    }

    /// Takes the module `id` names out of the registry; the place keeps its generation.
    pub(crate) fn remove(&mut self, id: u64) -> Result<TlsModule> {
        let index = self.get_mut(id)?.id.index as usize;
        self.len -= 1;
        self.places[index].module.take().ok_or(EINVAL)
    }

    /// The registry of a forked child: every module with the same id, layout, image and column,
    /// and the pool and packed count that `pool` makes from the parent's.
    pub(crate) fn fork_copy(
        &self,
        mut pool: impl FnMut(&TlsModule) -> Result<(BlockPool, u64)>,
    ) -> Result<Self> {
        let mut places = KVec::with_capacity(self.places.len(), GFP_KERNEL)?;
        for p in self.places.iter() {
            let module = match &p.module {
                None => None,
                Some(m) => {
                    let mut image = KVVec::with_capacity(m.image.len(), GFP_KERNEL)?;
                    image.extend_from_slice(&m.image, GFP_KERNEL)?;
                    let (pool, packed) = pool(m)?;
                    Some(TlsModule {
                        id: m.id,
                        layout: m.layout,
                        image,
                        pool,
                        column: m.column,
                        packed,
                        lookups: 0,
                        allocs: 0,
                    })
                }
            };
            places.push(
                Place {
                    generation: p.generation,
                    module,
                },
                GFP_KERNEL,
            )?;
        }
        Ok(Self {
            places,
            len: self.len,
        })
    }

    /// Every registered module.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &TlsModule> {
        self.places.iter().filter_map(|p| p.module.as_ref())
    }

    /// Every registered module, mutably.
    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = &mut TlsModule> {
        self.places.iter_mut().filter_map(|p| p.module.as_mut())
    }
}

#[kunit_tests(rust_kstls_registry)]
mod tests {
    use super::*;

    fn layout(filesz: u64, memsz: u64, align: u64, off: u64) -> Result<Layout> {
        Layout::new(filesz, memsz, align, off, &LIMITS)
    }

    fn module(id: ModuleId) -> Result<TlsModule> {
        Ok(TlsModule {
            id,
            layout: layout(0, 8, 8, 0)?,
            image: KVVec::new(),
            pool: BlockPool::new(),
            column: None,
            packed: 0,
            lookups: 0,
            allocs: 0,
        })
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

    #[test]
    fn ids_round_trip_and_zero_generation_is_invalid() {
        let id = ModuleId {
            index: 7,
            generation: 3,
        };
        assert_eq!(ModuleId::decode(id.encode()), Some(id));
        assert!(id.encode() >= 1u64 << 32);
        assert_eq!(ModuleId::decode(7), None);
        assert_eq!(ModuleId::decode(0), None);
    }

    #[test]
    fn reused_slot_gets_a_new_generation() -> Result {
        let mut r = Registry::new();
        let a = r.insert(4, module)?;
        let b = r.insert(4, module)?;
        assert_ne!(a.index, b.index);
        r.remove(a.encode())?;
        assert!(r.get_mut(a.encode()).is_err());
        let c = r.insert(4, module)?;
        assert_eq!(c.index, a.index);
        assert_ne!(c.generation, a.generation);
        assert!(r.get_mut(a.encode()).is_err());
        assert!(r.get_mut(c.encode()).is_ok());
        assert_eq!(r.len(), 2);
        Ok(())
    }

    #[test]
    fn registry_is_capped() -> Result {
        let mut r = Registry::new();
        r.insert(2, module)?;
        r.insert(2, module)?;
        assert_eq!(r.insert(2, module).err(), Some(ENOSPC));
        Ok(())
    }

    #[test]
    fn failed_construction_leaves_no_module() -> Result {
        let mut r = Registry::new();
        assert_eq!(r.insert(2, |_| Err(EFAULT)).err(), Some(EFAULT));
        assert_eq!(r.len(), 0);
        assert_eq!(r.iter().count(), 0);
        Ok(())
    }
}
