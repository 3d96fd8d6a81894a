// SPDX-License-Identifier: GPL-2.0

//! Registration of a loaded module: its own `PT_TLS` registered with kstls, and the slots
//! through which its compiled code reaches its TLS pointed at kstls, without asking the dynamic
//! linker that loaded it. `register_module` does it for any relocated module; `register_self`
//! for the one containing an address, `register_linked` for the one a copy of `libkstls.a` is
//! linked into (from that copy's constructor, `ctor.rs`).
//!
//! The compiler's general- and local-dynamic sequences pass `__tls_get_addr` a GOT pair
//! `{module, offset}`. The offset (`R_X86_64_DTPOFF64`, or a link-time constant) is relative to
//! the module's TLS image, the same in any scheme. The module word is an
//! `R_X86_64_DTPMOD64` relocation, which the host dynamic linker (glibc, musl) filled with its
//! own small module id. Registration finds those relocations from the module's `_DYNAMIC`
//! (`DT_RELA`/`DT_RELASZ`, and `DT_JMPREL` when it is RELA), works out which id the host gave
//! this module (the slots of relocations against symbol 0 or against symbols the module
//! defines), and overwrites every slot holding that id with the kstls id, making the RELRO
//! pages writable with `mprotect` for the moment of the write. Slots that name another module
//! (a TLS symbol interposed by the executable, say) keep their host id and are forwarded to the
//! host's `__tls_get_addr` by ours. TLS descriptors (`-mtls-dialect=gnu2`) are rewritten the
//! same way, to kstls's resolver (`tlsdesc.rs`).
//!
//! Earlier writes carry over: the registering thread's new block starts as a copy of its host
//! block of the module (found before the rewrite: from the descriptors, or from the host's
//! `__tls_get_addr` with the host's id), not of the pristine image. Other threads that touched
//! the module's TLS before its registration (normally there are none: registration runs before
//! the module's own constructors) keep what they wrote in their host blocks, which the module's
//! code no longer reaches; their first access afterwards gets a fresh kstls block initialised
//! from the image.
//!
//! The rewrite is only right when the module's `__tls_get_addr` calls and descriptors reach
//! this copy's entries, which exist with the `capi` feature (the C library, `entry.rs`): its
//! callers pass them in (`Entries`). Built as a Rust dependency, the crate has no entry, the
//! module's calls go to the host's `__tls_get_addr`, and a kstls id in its GOT would be handed to
//! the host: there registration (`Entries` `None`) registers the `PT_TLS` image and leaves the
//! GOT and the descriptors alone.

use core::sync::atomic::AtomicU64;
use core::sync::atomic::AtomicUsize;
use core::sync::atomic::Ordering::Relaxed;

use rustix::io::Errno;

use crate::context;
use crate::elf::Module;
use crate::elf::Phdr;
#[cfg(feature = "archive")]
use crate::elf::DF_STATIC_TLS;
#[cfg(feature = "archive")]
use crate::elf::DT_FLAGS;
use crate::elf::PT_TLS;
use crate::elf::R_X86_64_DTPMOD64;
#[cfg(feature = "capi")]
use crate::host;
use crate::lock;
use crate::lock::Guard;
#[cfg(feature = "capi")]
use crate::tlsdesc;
#[cfg(feature = "capi")]
use crate::tlsdesc::Indexes;

/// The entry points of this copy that a registered module's TLS slots are pointed at (the C
/// library's `entry.rs`): the module's `__tls_get_addr` calls bind to this copy's already, and
/// its TLS descriptors are pointed at `tlsdesc`, the resolver.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Entries {
    // Only the C library has entries to pass, and only it rewrites descriptors.
    #[cfg_attr(not(feature = "capi"), expect(dead_code))]
    pub(crate) tlsdesc: usize,
}

/// One module registered by `register_module` in this copy: its ELF header address (0: a free
/// entry), its kstls id, and the mapping of its rewritten descriptors' `tls_index`es. Written
/// under the lock: `base` last when an entry is filled, first when it is freed, so a child forked
/// while another thread was in the middle (`context.rs` on forks) sees the entry free, for a
/// module whose `dlopen` or `dlclose` never returns in the child. Its descriptors' half-made
/// index mapping and a RELRO page left writable by `with_slots_writable` stay so in that child,
/// in that module only.
struct Registered {
    base: AtomicUsize,
    id: AtomicU64,
    idx_addr: AtomicUsize,
    idx_len: AtomicUsize,
}

const MAX_SELF: usize = 64;
static TABLE: [Registered; MAX_SELF] = [const {
    Registered {
        base: AtomicUsize::new(0),
        id: AtomicU64::new(0),
        idx_addr: AtomicUsize::new(0),
        idx_len: AtomicUsize::new(0),
    }
}; MAX_SELF];

fn find(base: usize) -> Option<&'static Registered> {
    TABLE.iter().find(|e| e.base.load(Relaxed) == base)
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
pub(crate) unsafe fn register_self(addr: usize, entries: Entries) -> Result<u64, Errno> {
    let (m, tls) = locate(addr)?;
    // SAFETY: Forwarded from the caller.
    unsafe { register_module(&m, tls, Some(entries)) }
}

/// Registers the module `m` that a copy of `libkstls.a` is linked into, from that copy's
/// constructor (see `ctor.rs`): only when the module reaches its TLS through the host's dynamic
/// linker, i.e. has DTPMOD64 or TLSDESC slots, which the registration then redirects to
/// `entries`. A module without TLS, or whose own TLS is all initial- or local-exec (an
/// executable), stays as it is: `None`; so does one the linker marked `DF_STATIC_TLS` (it has
/// initial-exec accesses too, which would keep reaching the host's block: its TLS would split).
///
/// # Safety
///
/// As for `register_self`.
#[cfg(feature = "archive")]
pub(crate) unsafe fn register_linked(m: &Module, entries: Entries) -> Option<Result<u64, Errno>> {
    let tls = m.phdr(PT_TLS)?;
    if m.dynamic(DT_FLAGS).is_some_and(|f| f & DF_STATIC_TLS != 0) {
        return None;
    }
    let dynamic = m.relocs(R_X86_64_DTPMOD64).next().is_some() || tlsdesc::any(m);
    // SAFETY: Forwarded from the caller.
    dynamic.then(|| unsafe { register_module(m, tls, Some(entries)) })
}

/// Registers the module `m`, whose `PT_TLS` is `tls` (as `locate` found them), and, given this
/// copy's `entries`, redirects its TLS to kstls: its DTPMOD64 slots hold the kstls id and its TLS
/// descriptors call kstls's resolver (`rewrite`), and the calling thread's new block starts as a
/// copy of what its host block of the module holds now (`carry_over`), so that writes made
/// before (by the module's own code run earlier, or another module's constructor) survive.
/// Returns the kstls id, the same one again for a module registered already. Errors past
/// `locate`'s come from `/dev/kstls` (opening it, `KSTLS_IOC_REGISTER`), `ENOSPC` when this copy
/// already has `MAX_SELF` modules, `mmap` or `mprotect`.
///
/// Not tied to the calling module: any module mapped and relocated by the host's dynamic linker
/// qualifies (a loader's audit hook, say, after relocation).
///
/// # Safety
///
/// As for `register_self`; and no other thread runs the module's TLS code meanwhile.
pub(crate) unsafe fn register_module(
    m: &Module,
    tls: &Phdr,
    entries: Option<Entries>,
) -> Result<u64, Errno> {
    // Found before anything changes and without the lock: the host's resolver may allocate.
    // SAFETY: Forwarded from the caller.
    let host = entries.and_then(|e| unsafe { host_block(m, e) });
    let g = lock::lock();
    if let Some(e) = find(m.base) {
        return Ok(e.id.load(Relaxed));
    }
    let entry = find(0).ok_or(Errno::NOSPC)?;
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
    if let Some(e) = entries {
        // SAFETY: The caller guarantees the module is relocated, mapped and idle.
        match unsafe { rewrite(&g, m, id, e, host) } {
            Ok((addr, len)) => {
                entry.idx_addr.store(addr, Relaxed);
                entry.idx_len.store(len, Relaxed);
            }
            Err(e) => {
                let _ = context::unregister_locked(&g, id);
                return Err(e);
            }
        }
    }
    entry.id.store(id, Relaxed);
    entry.base.store(m.base, Relaxed);
    drop(g);
    if let Some(h) = host {
        carry_over(h, id, tls.p_memsz);
    }
    Ok(id)
}

/// Points the module's DTPMOD64 slots and own TLS descriptors at kstls (`id`); returns the
/// mapping of the descriptors' indexes (address, length; 0, 0 for none).
///
/// # Safety
///
/// As for `register_module`.
unsafe fn rewrite(
    g: &Guard,
    m: &Module,
    id: u64,
    entries: Entries,
    host: Option<usize>,
) -> Result<(usize, usize), Errno> {
    // SAFETY: Forwarded from the caller.
    unsafe { rewrite_dtpmod(g, m, id) }?;
    #[cfg(feature = "capi")]
    {
        // SAFETY: Forwarded from the caller.
        let idx = unsafe { tlsdesc::rewrite(m, id, entries.tlsdesc, host) }?;
        Ok(idx.to_raw())
    }
    #[cfg(not(feature = "capi"))]
    {
        let _ = (entries, host);
        Ok((0, 0))
    }
}

/// The calling thread's host block of `m` (the address of offset 0 of its TLS in the host's
/// scheme): from its TLS descriptors (`tlsdesc::host_block`), else from the host's id of it in
/// its DTPMOD64 slots, asked of the host's own `__tls_get_addr`. `None` when neither tells (no
/// slot of its own, no host, or a module registered before whose slots are kstls's already).
///
/// # Safety
///
/// `m` is relocated and stays mapped.
#[cfg(feature = "capi")]
unsafe fn host_block(m: &Module, entries: Entries) -> Option<usize> {
    // SAFETY: Forwarded from the caller.
    if let Some(b) = unsafe { tlsdesc::host_block(m, entries.tlsdesc) } {
        return Some(b);
    }
    let id = host_id(m).filter(|&id| id != 0 && id < crate::uapi::KSTLS_MODULE_ID_MIN)?;
    type TlsGetAddr = unsafe extern "C" fn(*const crate::uapi::kstls_tls_index) -> usize;
    // SAFETY: The interpreter's exported `__tls_get_addr`, a function of this signature.
    let tga = unsafe { core::mem::transmute::<usize, TlsGetAddr>(host::find_tls_get_addr()?) };
    let ti = crate::uapi::kstls_tls_index {
        module: id,
        offset: 0,
    };
    // SAFETY: The host's `__tls_get_addr`, with the host's id of a module it loaded.
    Some(unsafe { tga(&ti) })
}

#[cfg(not(feature = "capi"))]
unsafe fn host_block(_m: &Module, _entries: Entries) -> Option<usize> {
    None
}

/// Starts the calling thread's kstls block of `id` as a copy of the `memsz` bytes of its host
/// block at `host`. Best effort: without memory for the block now, its first access later
/// reports that.
fn carry_over(host: usize, id: u64, memsz: u64) {
    let Ok(block) = context::tls_addr(id, 0) else {
        return;
    };
    for i in 0..memsz as usize {
        // SAFETY: Both blocks are `memsz` bytes of this thread's, mapped; volatile accesses so
        // that the loop does not become a call to `memcpy`, a libc symbol.
        unsafe {
            let b = ((host + i) as *const u8).read_volatile();
            ((block as usize + i) as *mut u8).write_volatile(b);
        }
    }
}

/// Unregisters the module of `entry` and frees the entry: its descriptors are pointed away from
/// their indexes first, which are freed.
fn unregister_entry(g: &Guard, entry: &Registered) -> Result<(), Errno> {
    let base = entry.base.swap(0, Relaxed);
    let id = entry.id.swap(0, Relaxed);
    let addr = entry.idx_addr.swap(0, Relaxed);
    let len = entry.idx_len.swap(0, Relaxed);
    #[cfg(feature = "capi")]
    if len != 0 {
        // SAFETY: A registered module is mapped until its destructors have run, which is when
        // this runs at the latest.
        if let Some(m) = unsafe { Module::at(base) } {
            // SAFETY: `idx` is what `rewrite` made of this module.
            let _ = unsafe { tlsdesc::retire(&m, Indexes::from_raw(addr, len)) };
        }
    }
    let _ = (base, addr, len);
    context::unregister_locked(g, id)
}

/// Unregisters the module `register_module` registered as `id`; `EINVAL` when there is none
/// (never registered, or unregistered already).
pub(crate) fn unregister_id(id: u64) -> Result<(), Errno> {
    let g = lock::lock();
    let e = TABLE
        .iter()
        .find(|e| e.base.load(Relaxed) != 0 && e.id.load(Relaxed) == id)
        .ok_or(Errno::INVAL)?;
    unregister_entry(&g, e)
}

/// Unregisters the module whose ELF header is at `base`; `ENOENT` when it is not registered.
#[cfg(feature = "capi")]
pub(crate) fn unregister_module(base: usize) -> Result<(), Errno> {
    let g = lock::lock();
    let e = find(base).filter(|_| base != 0).ok_or(Errno::NOENT)?;
    unregister_entry(&g, e)
}

/// Unregisters the module containing `addr` (before `dlclose` unmaps it).
///
/// # Safety
///
/// As for `register_self`.
#[cfg(feature = "capi")]
pub(crate) unsafe fn unregister_self(addr: usize) -> Result<(), Errno> {
    let m = Module::containing(addr).ok_or(Errno::NOEXEC)?;
    unregister_module(m.base)
}

/// The host's id for this module: the slot of a DTPMOD64 relocation against symbol 0 (always
/// this module), else the most frequent one among relocations against symbols the module
/// defines. `None`: the module has no DTPMOD64 relocation of its own.
fn host_id(m: &Module) -> Option<u64> {
    let mut seen: [(u64, u32); 8] = [(0, 0); 8];
    for rel in m.relocs(R_X86_64_DTPMOD64) {
        // SAFETY: The dynamic linker wrote this slot; it lies in the module's data.
        let v = unsafe { *(m.slot(rel) as *const u64) };
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
    let slots = m.relocs(R_X86_64_DTPMOD64).map(|r| m.slot(r) as *mut u64);
    let write = || {
        for p in slots.clone() {
            // SAFETY: A GOT slot of the module, writable now.
            unsafe {
                if p.read() == host {
                    p.write_volatile(id);
                }
            }
        }
    };
    // SAFETY: The caller guarantees the module is relocated, mapped and idle.
    unsafe { m.with_slots_writable(slots.clone().map(|p| p as usize), write) }
}

#[cfg(test)]
mod tests {
    use rustix::mm::MprotectFlags;

    use super::*;
    use crate::arch::PAGE;
    use crate::elf::synth::def;
    use crate::elf::synth::undef;
    use crate::elf::synth::Builder;
    use crate::elf::synth::Dt;
    use crate::elf::synth::Hash;
    use crate::elf::DT_RELA;
    use crate::elf::DT_RELASZ;
    use crate::elf::PT_GNU_RELRO;

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
