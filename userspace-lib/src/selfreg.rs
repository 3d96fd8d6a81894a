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
