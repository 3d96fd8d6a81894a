// SPDX-License-Identifier: GPL-2.0

//! Registration by linking alone, for `libkstls.a`: a constructor that registers the module the
//! archive is linked into before any constructor of the module's own runs, and a destructor that
//! unregisters it after the module's own destructors. One pair per copy of the archive, so per
//! module; `libkstls.so` has none (it has no TLS of its own to register).
//!
//! Both are entries of priority 0 in `.init_array` and `.fini_array`
//! (`.init_array.00000`, `.fini_array.00000`). The linkers (GNU ld, gold, lld, mold) sort
//! `.init_array.*` by priority, before every entry without one, and priorities below 101 are
//! the toolchain's own: no constructor of the module (C `constructor(N)`, C++ `init_priority`,
//! Rust's `.init_array` statics) comes first. The dynamic linkers (glibc, musl) run `DT_INIT`,
//! then `DT_INIT_ARRAY` in order, and at unload `DT_FINI_ARRAY` in reverse, then `DT_FINI`: the
//! destructor, first in the array, runs after every other entry, including the one of
//! `crtbegin.o` that runs the module's `atexit` and C++ static destructors. `DT_INIT` was the
//! alternative and is not used: it is one function per module, already the toolchain's
//! (`crti.o`'s `_init`), so taking it (`-Wl,-init=`) would drop whatever the toolchain keeps
//! there, and it would need a link flag where a section needs none. What runs before the
//! constructor is only `_init`, which touches no TLS.
//!
//! The module is found from the linker-defined `__ehdr_start`, weak in the archive (a final link
//! always defines it; read through the GOT so that an undefined one reads as 0), else from the
//! constructor's own address. A module without `PT_TLS`, whose TLS no DTPMOD64 or TLSDESC slot
//! reaches, or that uses initial-exec too, is left alone (see `selfreg::register_linked`); a
//! failure to register (no `/dev/kstls`) leaves the module with the host's TLS, as if kstls were
//! not linked in. An explicit `KSTLS_REGISTER_SELF` afterwards returns the same id and does
//! nothing more.

use core::arch::asm;

use crate::elf::Module;
use crate::entry;
use crate::selfreg;

/// The module this copy of the archive is linked into.
fn this_module() -> Option<Module> {
    let ehdr: usize;
    // SAFETY: Loads a GOT entry (0 for an undefined weak symbol); the symbol is hidden, so the
    // linker may relax the load to an address computation.
    unsafe {
        asm!(
            ".weak __ehdr_start",
            ".hidden __ehdr_start",
            "mov {}, qword ptr [rip + __ehdr_start@GOTPCREL]",
            out(reg) ehdr,
            options(nostack, readonly, preserves_flags),
        )
    };
    // SAFETY: `__ehdr_start` is this module's ELF header, mapped while its code runs.
    (ehdr != 0)
        .then(|| unsafe { Module::at(ehdr) })
        .flatten()
        .or_else(|| Module::containing(this_module as fn() -> Option<Module> as usize))
}

extern "C" fn module_init() {
    let Some(m) = this_module() else {
        return;
    };
    // SAFETY: A constructor of the module: it is mapped, relocated, and none of its own code
    // has run.
    let _ = unsafe { selfreg::register_linked(&m, entry::entries()) };
}

extern "C" fn module_fini() {
    if let Some(m) = this_module() {
        // ENOENT: it was not registered, or its own destructor unregistered it explicitly.
        let _ = selfreg::unregister_module(m.base);
    }
}

#[used]
#[link_section = ".init_array.00000"]
static INIT: extern "C" fn() = module_init;

#[used]
#[link_section = ".fini_array.00000"]
static FINI: extern "C" fn() = module_fini;
