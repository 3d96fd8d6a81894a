// SPDX-License-Identifier: GPL-2.0

//! The module registry of a context: the TLS modules a process registered, by module id.
//!
//! There is one `Registry` per context. A module (`TlsModule`) is what one `PT_TLS` program
//! header describes: the layout of its blocks (`Layout`), a snapshot of its `.tdata` image taken
//! at registration, and the storage its blocks come from (`Storage`). Ids are
//! `generation << 32 | index`: the index of a place in the registry is reused after
//! `UNREGISTER`, its generation is not, so a stale id never reaches a new module's blocks. A
//! place whose generation reaches `u32::MAX` is retired once its module goes (never reused), so
//! generations never wrap and an id, once unregistered, is never valid again, however many
//! times a place is reused. The registry's own memory (its places) is charged to the context's
//! `Budget` as it grows.

use core::mem::size_of;

use kernel::prelude::*;

use crate::block::Storage;
use crate::budget::{
    self,
    Budget, //
};
use crate::layout::Layout;
use crate::rows::PackedRows;
use crate::thread::Thread;
use crate::usermem::OwnerMm;

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
    /// Where the module's blocks come from.
    pub(crate) storage: Storage,
    /// `GET_ADDR` calls answered for this module.
    pub(crate) lookups: u64,
    /// Blocks initialised on first touch.
    pub(crate) allocs: u64,
}

impl TlsModule {
    /// A module just registered under `id`, with no block yet.
    pub(crate) fn new(id: ModuleId, layout: Layout, image: KVVec<u8>, storage: Storage) -> Self {
        Self {
            id,
            layout,
            image,
            storage,
            lookups: 0,
            allocs: 0,
        }
    }

    /// Live blocks.
    pub(crate) fn live(&self) -> u64 {
        self.storage.live()
    }
}

/// A place in the registry: the generation of its latest id and the module, if any, there now.
/// A place whose generation is `u32::MAX` is never given another module.
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
    /// allocation here, charged to `budget`), then stores what `make` builds for that id.
    /// `ENOSPC` at `max_modules`.
    pub(crate) fn insert(
        &mut self,
        max_modules: u32,
        budget: &mut Budget,
        make: impl FnOnce(ModuleId) -> Result<TlsModule>,
    ) -> Result<ModuleId> {
        if self.len >= max_modules as usize {
            return Err(ENOSPC);
        }
        let free = self
            .places
            .iter()
            .position(|p| p.module.is_none() && p.generation != u32::MAX);
        let index = match free {
            Some(i) => i,
            None => {
                budget.reserve(&mut self.places, 1)?;
                // Cannot fail: room was made above.
                self.places
                    .push_within_capacity(Place {
                        generation: 0,
                        module: None,
                    })
                    .map_err(|_| ENOMEM)?;
                self.places.len() - 1
            }
        };
        let p = &mut self.places[index];
        // Never wraps: a place at `u32::MAX` is not picked.
        let generation = p.generation + 1;
        let id = ModuleId {
            index: u32::try_from(index).map_err(|_| ENOSPC)?,
            generation,
        };
        p.module = Some(make(id)?);
        p.generation = generation;
        self.len += 1;
        Ok(id)
    }

    /// Registers a module of layout `l` with the snapshot `image`: the snapshot is charged to
    /// `budget` (`E2BIG` past its cap), the module gets a column of `rows` if it is small enough
    /// to be packed (else a pool), and an id (`ENOSPC` at `max_modules`). A failure keeps
    /// nothing.
    pub(crate) fn add(
        &mut self,
        max_modules: u32,
        l: Layout,
        image: KVVec<u8>,
        rows: &mut PackedRows,
        budget: &mut Budget,
    ) -> Result<ModuleId> {
        budget.charge_image(l.filesz)?;
        let column = rows.place(&l);
        let id = self.insert(max_modules, budget, |id| {
            Ok(TlsModule::new(id, l, image, Storage::new(column)))
        });
        if id.is_err() {
            if let Some(c) = column {
                rows.release(c, l.memsz);
            }
            budget.uncharge_image(l.filesz);
        }
        id
    }

    /// The place that `id` names, if the module registered under it is still there.
    fn place(&self, id: u64) -> Result<usize> {
        let id = ModuleId::decode(id).ok_or(EINVAL)?;
        match self.places.get(id.index as usize) {
            Some(Place {
                generation,
                module: Some(_),
            }) if *generation == id.generation => Ok(id.index as usize),
            _ => Err(EINVAL),
        }
    }

    /// The module that `id` names now; `EINVAL` for an unknown or stale id.
    pub(crate) fn get(&self, id: u64) -> Result<&TlsModule> {
        let i = self.place(id)?;
        self.places[i].module.as_ref().ok_or(EINVAL)
    }

    /// The same, mutably.
    pub(crate) fn get_mut(&mut self, id: u64) -> Result<&mut TlsModule> {
        let i = self.place(id)?;
        self.places[i].module.as_mut().ok_or(EINVAL)
    }

    /// The module registered at `index`, whatever its generation.
    pub(crate) fn by_index_mut(&mut self, index: u32) -> Option<&mut TlsModule> {
        self.places.get_mut(index as usize)?.module.as_mut()
    }

    /// Takes the module `id` names out of the registry; the place keeps its generation.
    pub(crate) fn remove(&mut self, id: u64) -> Result<TlsModule> {
        let i = self.place(id)?;
        let m = self.places[i].module.take().ok_or(EINVAL)?;
        self.len -= 1;
        Ok(m)
    }

    /// Whether some thread still has a packed block (of any module).
    pub(crate) fn packed_live(&self) -> bool {
        self.iter().any(|m| m.storage.is_packed() && m.live() != 0)
    }

    /// Gives back the blocks of a thread that is gone (its table `t`), and its row.
    pub(crate) fn reclaim(&mut self, rows: &mut PackedRows, t: &Thread) {
        for (index, b) in t.blocks() {
            // A block at an index always belongs to the module registered there now:
            // `UNREGISTER` takes a module's blocks out of every table before the place can be
            // reused.
            if let Some(m) = self.by_index_mut(index) {
                m.storage.free(b.addr);
            }
        }
        if let Some(row) = t.row {
            rows.free_row(row);
        }
    }

    /// Gives back the storage of every module (the context is closed by its own process).
    pub(crate) fn release_all(
        &mut self,
        rows: &mut PackedRows,
        budget: &mut Budget,
        mm: &OwnerMm<'_>,
    ) {
        for m in self.iter_mut() {
            m.storage.release(&m.layout, rows, budget, mm);
        }
    }

    /// The registry of a forked child: every module with the same id, layout and image, and the
    /// storage that `storage` makes from the parent's. Its memory is charged as a whole, by
    /// whoever keeps it (`kernel_bytes`).
    pub(crate) fn fork_copy(
        &self,
        mut storage: impl FnMut(&TlsModule) -> Result<Storage>,
    ) -> Result<Self> {
        let mut places = KVec::with_capacity(self.places.len(), GFP_KERNEL_ACCOUNT)?;
        for p in self.places.iter() {
            let module = match &p.module {
                None => None,
                Some(m) => {
                    let mut image = KVVec::with_capacity(m.image.len(), GFP_KERNEL_ACCOUNT)?;
                    image.extend_from_slice(&m.image, GFP_KERNEL_ACCOUNT)?;
                    Some(TlsModule::new(m.id, m.layout, image, storage(m)?))
                }
            };
            places
                .push_within_capacity(Place {
                    generation: p.generation,
                    module,
                })
                .map_err(|_| ENOMEM)?;
        }
        Ok(Self {
            places,
            len: self.len,
        })
    }

    /// Bytes of kernel memory the registry keeps: its places, the modules' snapshots and their
    /// pools' lists.
    pub(crate) fn kernel_bytes(&self) -> u64 {
        let places = budget::alloc_size(self.places.capacity() * size_of::<Place>()) as u64;
        self.iter().fold(places, |n, m| {
            n + budget::alloc_size(m.image.len()) as u64 + m.storage.kernel_bytes()
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
    use crate::limits::LIMITS;
    use crate::quota::ContextSlot;

    /// A budget for the tests, of a user no process is (`n` tells the tests apart).
    fn budget(n: u32) -> Result<(ContextSlot, Budget)> {
        let user = ContextSlot::open_for(0x7ffc_0000 + n, u64::MAX)?;
        let b = Budget::new(&LIMITS, user.quota());
        Ok((user, b))
    }

    fn module(id: ModuleId) -> Result<TlsModule> {
        let layout = Layout::new(0, 8, 8, 0, &LIMITS)?;
        Ok(TlsModule::new(id, layout, KVVec::new(), Storage::new(None)))
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
    fn reused_index_gets_a_new_generation() -> Result {
        let (_user, mut bu) = budget(1)?;
        let mut r = Registry::new();
        let a = r.insert(4, &mut bu, module)?;
        let b = r.insert(4, &mut bu, module)?;
        assert_ne!(a.index, b.index);
        r.remove(a.encode())?;
        assert!(r.get_mut(a.encode()).is_err());
        let c = r.insert(4, &mut bu, module)?;
        assert_eq!(c.index, a.index);
        assert_ne!(c.generation, a.generation);
        assert!(r.get(a.encode()).is_err());
        assert!(r.get(c.encode()).is_ok());
        assert_eq!(r.len(), 2);
        Ok(())
    }

    #[test]
    fn registry_is_capped() -> Result {
        let (_user, mut bu) = budget(2)?;
        let mut r = Registry::new();
        r.insert(2, &mut bu, module)?;
        r.insert(2, &mut bu, module)?;
        assert_eq!(r.insert(2, &mut bu, module).err(), Some(ENOSPC));
        Ok(())
    }

    #[test]
    fn the_places_are_charged_as_they_grow() -> Result {
        let (_user, mut bu) = budget(3)?;
        let mut r = Registry::new();
        r.insert(8, &mut bu, module)?;
        assert_eq!(bu.kernel(), budget::alloc_size(size_of::<Place>()) as u64);
        r.insert(8, &mut bu, module)?;
        r.insert(8, &mut bu, module)?;
        // Capacity 1, then 2, then 4.
        let four = budget::alloc_size(4 * size_of::<Place>()) as u64;
        assert_eq!(bu.kernel(), four);
        assert_eq!(r.kernel_bytes(), four);
        Ok(())
    }

    #[test]
    fn a_place_is_retired_before_its_generation_wraps() -> Result {
        let (_user, mut bu) = budget(4)?;
        let mut r = Registry::new();
        let a = r.insert(4, &mut bu, module)?;
        r.remove(a.encode())?;
        // As after 2^32 - 2 registrations and unregistrations of this place.
        r.places[a.index as usize].generation = u32::MAX - 1;
        let b = r.insert(4, &mut bu, module)?;
        assert_eq!((b.index, b.generation), (a.index, u32::MAX));
        r.remove(b.encode())?;
        // The place is never used again: no id of it can come back.
        let c = r.insert(4, &mut bu, module)?;
        assert_ne!(c.index, a.index);
        assert_eq!(c.generation, 1);
        for stale in [a, b] {
            assert!(r.get(stale.encode()).is_err());
            let wrapped = ModuleId {
                generation: stale.generation.wrapping_add(1).max(1),
                ..stale
            };
            assert!(r.get(wrapped.encode()).is_err());
        }
        Ok(())
    }

    #[test]
    fn failed_construction_leaves_no_module() -> Result {
        let (_user, mut bu) = budget(5)?;
        let mut r = Registry::new();
        assert_eq!(r.insert(2, &mut bu, |_| Err(EFAULT)).err(), Some(EFAULT));
        assert_eq!(r.len(), 0);
        assert_eq!(r.iter().count(), 0);
        Ok(())
    }

    #[test]
    fn a_refused_registration_keeps_no_column_and_no_charge() -> Result {
        let mut r = Registry::new();
        let mut rows = PackedRows::new(&LIMITS)?;
        let (_user, mut budget) = budget(6)?;
        let l = Layout::new(8, 16, 16, 0, &LIMITS)?;
        let a = r.add(1, l, KVVec::new(), &mut rows, &mut budget)?;
        assert!(r.get(a.encode())?.storage.is_packed());
        assert_eq!(budget.images(), 8);
        // Full: the column it was given is free again, and the snapshot uncharged.
        assert_eq!(
            r.add(1, l, KVVec::new(), &mut rows, &mut budget).err(),
            Some(ENOSPC)
        );
        assert_eq!(budget.images(), 8);
        assert_eq!(rows.place(&l), Some(16));
        // Too big to be packed: a pool.
        let big = Layout::new(0, 4096, 8, 0, &LIMITS)?;
        let b = r.add(2, big, KVVec::new(), &mut rows, &mut budget)?;
        assert!(!r.get(b.encode())?.storage.is_packed());
        Ok(())
    }

    #[test]
    fn a_gone_threads_packed_blocks_are_given_back() -> Result {
        let mut r = Registry::new();
        let packed = |id| {
            let layout = Layout::new(0, 8, 8, 0, &LIMITS)?;
            let storage = Storage::Packed { column: 0, live: 2 };
            Ok(TlsModule::new(id, layout, KVVec::new(), storage))
        };
        let (_user, mut bu) = budget(7)?;
        let id = r.insert(4, &mut bu, packed)?;
        let mut rows = PackedRows::new(&LIMITS)?;
        let cur = kernel::current!();
        let mut t = Thread::new(&cur, 0x7f00_0000_1000);
        t.reserve(id.index, &mut bu)?;
        t.set(id.index, 0x7f00_0001_0000, 8);
        assert!(r.packed_live());
        r.reclaim(&mut rows, &t);
        assert_eq!(r.get(id.encode())?.live(), 1);
        Ok(())
    }
}
