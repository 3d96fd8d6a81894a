// SPDX-License-Identifier: GPL-2.0

//! Self-registration: a module registers its own `PT_TLS` with kstls and maps its `ti_module`
//! values to the new kstls id, without asking the dynamic linker that loaded it.
//!
//! The compiler's general- and local-dynamic sequences pass `__tls_get_addr` a GOT pair
//! `{module, offset}`. The offset (`R_X86_64_DTPOFF64`, or a link-time constant) is relative to
//! the module's TLS image, the same in any scheme. The module word is an
//! `R_X86_64_DTPMOD64` relocation, which the host dynamic linker (glibc, musl) filled with its
//! own small module id. `register_self` finds those relocations from the module's `_DYNAMIC`
//! (`DT_RELA`/`DT_RELASZ`, and `DT_JMPREL` when it is RELA), works out which id the host gave
//! this module (the slots of relocations against symbol 0 or against symbols the module
//! defines), and overwrites every slot holding that id with the kstls id, making the RELRO
//! pages writable with `mprotect` for the moment of the write. Slots that name another module
//! (a TLS symbol interposed by the executable, say) keep their host id and are forwarded to the
//! host's `__tls_get_addr` by ours.
//!
//! The rewrite is only right when the module's `__tls_get_addr` calls reach this copy's entry,
//! which exists with the `capi` feature (the C library). Built as a Rust dependency, the crate
//! has no entry, the module's calls go to the host's `__tls_get_addr`, and a kstls id in its GOT
//! would be handed to the host: there `register_self` registers the `PT_TLS` image and leaves
//! the GOT alone (`REWRITE`).

use core::sync::atomic::AtomicU64;
use core::sync::atomic::AtomicUsize;
use core::sync::atomic::Ordering::Relaxed;

use rustix::io::Errno;
use rustix::mm::MprotectFlags;

use crate::arch::PAGE;
use crate::context;
use crate::elf::Module;
use crate::elf::Phdr;
use crate::elf::PT_GNU_RELRO;
use crate::elf::PT_TLS;
use crate::elf::R_X86_64_DTPMOD64;
use crate::lock;
use crate::lock::Guard;

/// Whether `register_self` points the module's `ti_module` slots at the kstls id: only when
/// this copy exports the `__tls_get_addr` those slots are passed to (see the module doc).
const REWRITE: bool = cfg!(feature = "capi");

/// Modules registered by `register_self` in this copy: the ELF header address and the id.
const MAX_SELF: usize = 64;
static SELF_BASE: [AtomicUsize; MAX_SELF] = [const { AtomicUsize::new(0) }; MAX_SELF];
static SELF_ID: [AtomicU64; MAX_SELF] = [const { AtomicU64::new(0) }; MAX_SELF];

fn find(base: usize) -> Option<usize> {
    (0..MAX_SELF).find(|&i| SELF_BASE[i].load(Relaxed) == base)
}

/// The module containing `addr` and its `PT_TLS` program header: `ENOEXEC` when `addr` lies
/// in no ELF module, `ENOENT` when the module has no `PT_TLS` (no thread-local data). Touches
/// neither the module nor `/dev/kstls`.
pub(crate) fn locate(addr: usize) -> Result<(Module, &'static Phdr), Errno> {
    let m = Module::containing(addr).ok_or(Errno::NOEXEC)?;
    let tls = m.phdr(PT_TLS).ok_or(Errno::NOENT)?;
    Ok((m, tls))
}

/// Registers the module containing `addr`; returns its kstls id. Registering the same module
/// again returns the same id.
///
/// # Safety
///
/// `addr` lies in a mapped module, which is not unloaded meanwhile and whose relocation has
/// finished (a constructor of that module qualifies).
#[cfg(feature = "capi")]
pub(crate) unsafe fn register_self(addr: usize) -> Result<u64, Errno> {
    let (m, tls) = locate(addr)?;
    // SAFETY: Forwarded from the caller.
    unsafe { register_located(&m, tls) }
}

/// Registers the module `m`, whose `PT_TLS` is `tls` (as `locate` found them); returns its
/// kstls id, the same one again for a module registered already. Errors past `locate`'s come
/// from `/dev/kstls` (opening it, `KSTLS_IOC_REGISTER`), `ENOSPC` when this copy already has
/// `MAX_SELF` modules, or `mprotect`.
///
/// # Safety
///
/// As for `register_self`.
pub(crate) unsafe fn register_located(m: &Module, tls: &Phdr) -> Result<u64, Errno> {
    let g = lock::lock();
    if let Some(i) = find(m.base) {
        return Ok(SELF_ID[i].load(Relaxed));
    }
    let slot = find(0).ok_or(Errno::NOSPC)?;
    let align = tls.p_align.max(1);
    let id = context::register_locked(
        &g,
        m.bias.wrapping_add(tls.p_vaddr as usize) as u64,
        tls.p_filesz,
        tls.p_memsz,
        align,
        if align.is_power_of_two() {
            tls.p_vaddr % align
        } else {
            0
        },
    )?;
    if REWRITE {
        // SAFETY: The caller guarantees the module is relocated and stays mapped.
        if let Err(e) = unsafe { rewrite_dtpmod(&g, m, id) } {
            let _ = context::unregister_locked(&g, id);
            return Err(e);
        }
    }
    SELF_BASE[slot].store(m.base, Relaxed);
    SELF_ID[slot].store(id, Relaxed);
    Ok(id)
}

/// Unregisters the module `register_located` registered as `id`; `EINVAL` when there is none
/// (never registered, or unregistered already).
pub(crate) fn unregister_id(id: u64) -> Result<(), Errno> {
    let g = lock::lock();
    let i = (0..MAX_SELF)
        .find(|&i| SELF_BASE[i].load(Relaxed) != 0 && SELF_ID[i].load(Relaxed) == id)
        .ok_or(Errno::INVAL)?;
    SELF_BASE[i].store(0, Relaxed);
    SELF_ID[i].store(0, Relaxed);
    context::unregister_locked(&g, id)
}

/// Unregisters the module containing `addr` (before `dlclose` unmaps it).
///
/// # Safety
///
/// As for `register_self`.
#[cfg(feature = "capi")]
pub(crate) unsafe fn unregister_self(addr: usize) -> Result<(), Errno> {
    let m = Module::containing(addr).ok_or(Errno::NOEXEC)?;
    let g = lock::lock();
    let i = find(m.base).ok_or(Errno::NOENT)?;
    let id = SELF_ID[i].load(Relaxed);
    SELF_BASE[i].store(0, Relaxed);
    SELF_ID[i].store(0, Relaxed);
    context::unregister_locked(&g, id)
}

/// The host's id for this module: the slot of a DTPMOD64 relocation against symbol 0 (always
/// this module), else the most frequent one among relocations against symbols the module
/// defines. `None`: the module has no DTPMOD64 relocation of its own.
fn host_id(m: &Module) -> Option<u64> {
    let mut seen: [(u64, u32); 8] = [(0, 0); 8];
    for rel in m.relas().iter().flat_map(|t| t.iter()) {
        if rel.r_info as u32 != R_X86_64_DTPMOD64 {
            continue;
        }
        // SAFETY: The dynamic linker wrote this slot; it lies in the module's data.
        let v = unsafe { *(m.bias.wrapping_add(rel.r_offset as usize) as *const u64) };
        let sym = (rel.r_info >> 32) as usize;
        if sym == 0 {
            return Some(v);
        }
        if m.sym(sym).is_some_and(|s| s.st_shndx != 0) {
            if let Some(e) = seen.iter_mut().find(|e| e.1 != 0 && e.0 == v) {
                e.1 += 1;
            } else if let Some(e) = seen.iter_mut().find(|e| e.1 == 0) {
                *e = (v, 1);
            }
        }
    }
    seen.iter()
        .filter(|e| e.1 != 0)
        .max_by_key(|e| e.1)
        .map(|e| e.0)
}

/// Overwrites the module's DTPMOD64 slots that hold the host's id for it with `id`.
///
/// # Safety
///
/// The module is relocated and stays mapped; nothing of it runs TLS code meanwhile.
unsafe fn rewrite_dtpmod(_g: &Guard, m: &Module, id: u64) -> Result<(), Errno> {
    let Some(host) = host_id(m) else {
        return Ok(());
    };
    // A host id at or above KSTLS_MODULE_ID_MIN is a kstls id left from an earlier
    // registration of this module (unregistered since, the module not unloaded): replaced too.
    // The RELRO range the dynamic linker made read-only: whole pages only (glibc and musl
    // round both ends down).
    let relro = m.phdr(PT_GNU_RELRO).map(|r| {
        let start = m.bias.wrapping_add(r.p_vaddr as usize) & !(PAGE - 1);
        let end = m.bias.wrapping_add((r.p_vaddr + r.p_memsz) as usize) & !(PAGE - 1);
        (start, end)
    });
    let slots = || {
        m.relas()
            .into_iter()
            .flat_map(|t| t.iter())
            .filter_map(|rel| {
                (rel.r_info as u32 == R_X86_64_DTPMOD64)
                    .then(|| m.bias.wrapping_add(rel.r_offset as usize) as *mut u64)
            })
    };
    let in_relro = |p: *mut u64| relro.is_some_and(|(s, e)| s <= p as usize && (p as usize) < e);
    let protect = |flags| -> Result<(), Errno> {
        match relro {
            // SAFETY: The module's own RELRO pages; only their protection changes.
            Some((s, e)) if e > s => unsafe { rustix::mm::mprotect(s as *mut _, e - s, flags) },
            _ => Ok(()),
        }
    };
    let need = slots().any(in_relro);
    if need {
        protect(MprotectFlags::READ | MprotectFlags::WRITE)?;
    }
    for p in slots() {
        // SAFETY: A GOT slot of the module, writable now.
        unsafe {
            if *p == host {
                p.write_volatile(id);
            }
        }
    }
    if need {
        protect(MprotectFlags::READ)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::elf::synth::def;
    use crate::elf::synth::undef;
    use crate::elf::synth::Builder;
    use crate::elf::synth::Dt;
    use crate::elf::synth::Hash;
    use crate::elf::DT_RELA;
    use crate::elf::DT_RELASZ;

    const DTPOFF64: u64 = 17;

    /// A module whose GOT holds `slots`, each `(value the host's linker wrote, relocation
    /// type, symbol name or "" for symbol 0)`, the symbols "own", "own2" (defined) and
    /// "theirs" (not); with `relro`, the page of the GOT is read-only (`PT_GNU_RELRO`), as the
    /// dynamic linker leaves it. Returns the module and the GOT's address.
    fn module_with(slots: &[(u64, u64, &str)], relro: bool) -> (Module, u64) {
        let mut b = Builder::new();
        let syms = [def("own", 0), def("own2", 8), undef("theirs")];
        b.symbols(&syms, Hash::Sysv, 2);
        let got = b.words(&slots.iter().map(|s| s.0).collect::<std::vec::Vec<_>>());
        let mut rela = std::vec::Vec::new();
        for (i, &(_, ty, name)) in slots.iter().enumerate() {
            let sym = if name.is_empty() { 0 } else { b.index(name) };
            rela.extend([got + 8 * i as u64, (sym << 32) | ty, 0]);
        }
        let rela_at = b.words(&rela);
        b.dt(Dt::Addr(DT_RELA, rela_at));
        b.dt(Dt::Val(DT_RELASZ, 8 * rela.len() as u64));
        if relro {
            // The first data page, where the GOT is (the tables above are small).
            b.phdr(PT_GNU_RELRO, PAGE as u64, PAGE as u64, PAGE as u64, 1);
        }
        let base = b.load(true);
        if relro {
            // SAFETY: A whole page of the leaked module, which nothing else uses.
            unsafe { rustix::mm::mprotect((base + PAGE) as *mut _, PAGE, MprotectFlags::READ) }
                .unwrap();
        }
        // SAFETY: A module `Builder::load` laid out in leaked memory.
        (unsafe { Module::at(base) }.unwrap(), base as u64 + got)
    }

    fn module(slots: &[(u64, u64, &str)]) -> (Module, u64) {
        module_with(slots, false)
    }

    const DTPMOD: u64 = R_X86_64_DTPMOD64 as u64;

    #[test]
    fn host_id_from_a_slot_against_symbol_zero() {
        let (m, _) = module(&[(2, DTPMOD, "own"), (2, DTPMOD, "own2"), (5, DTPMOD, "")]);
        assert_eq!(host_id(&m), Some(5));
    }

    #[test]
    fn host_id_is_the_most_common_among_defined_symbols() {
        let (m, _) = module(&[
            (1, DTPMOD, "theirs"),
            (1, DTPMOD, "theirs"),
            (1, DTPMOD, "theirs"),
            (3, DTPMOD, "own"),
            (4, DTPMOD, "own2"),
            (4, DTPMOD, "own2"),
            (9, DTPOFF64, "own"),
            (9, DTPOFF64, "own"),
            (9, DTPOFF64, "own"),
        ]);
        assert_eq!(host_id(&m), Some(4));
    }

    #[test]
    fn no_host_id_without_an_own_dtpmod64_slot() {
        let (m, _) = module(&[(1, DTPMOD, "theirs"), (7, DTPOFF64, "own"), (7, 1, "")]);
        assert_eq!(host_id(&m), None);
        let (m, _) = module(&[]);
        assert_eq!(host_id(&m), None);
    }

    #[test]
    fn rewrite_replaces_only_the_host_id() {
        let id = 7 << 32 | 2;
        let (m, got) = module(&[
            (2, DTPMOD, ""),
            (1, DTPMOD, "theirs"),
            (2, DTPMOD, "own"),
            (2, DTPOFF64, "own"),
        ]);
        // SAFETY: The module is leaked memory that nothing else uses.
        unsafe { rewrite_dtpmod(&lock::lock(), &m, id) }.unwrap();
        // SAFETY: The GOT the module's relocations point at.
        let got = unsafe { core::slice::from_raw_parts(got as *const u64, 4) };
        assert_eq!(got, [id, 1, id, 2]);
    }

    #[test]
    fn rewrite_lifts_relro_for_the_write_only() {
        let id = 9 << 32 | 3;
        let (m, got) = module_with(&[(4, DTPMOD, ""), (4, DTPMOD, "own")], true);
        assert_eq!(protection(got as usize), "r--p");
        // SAFETY: The module is leaked memory that nothing else uses.
        unsafe { rewrite_dtpmod(&lock::lock(), &m, id) }.unwrap();
        // SAFETY: The GOT the module's relocations point at, readable still.
        let got = unsafe { core::slice::from_raw_parts(got as *const u64, 2) };
        assert_eq!(got, [id, id]);
        assert_eq!(protection(got.as_ptr() as usize), "r--p", "read-only again");
    }

    /// The permissions `/proc/self/maps` shows for the mapping that holds `addr`.
    fn protection(addr: usize) -> String {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        maps.lines()
            .find_map(|l| {
                let (range, rest) = l.split_once(' ')?;
                let (lo, hi) = range.split_once('-')?;
                let lo = usize::from_str_radix(lo, 16).ok()?;
                let hi = usize::from_str_radix(hi, 16).ok()?;
                (lo <= addr && addr < hi).then(|| rest[..4].to_string())
            })
            .unwrap()
    }
}
