// SPDX-License-Identifier: GPL-2.0

//! A loaded ELF module (executable or shared object) seen through its own headers in memory:
//! the ELF header, the program headers (`PT_TLS`, `PT_DYNAMIC`, `PT_GNU_RELRO`), the dynamic
//! section, its relocations and its dynamic symbols. Only what libkstls needs, for x86-64.
//!
//! Dynamic linkers differ in what they leave in `_DYNAMIC`: glibc adds the load bias to the
//! address-valued entries in place, musl does not. `Module::ptr` accepts both.

use crate::arch;
use crate::arch::PAGE;

#[repr(C)]
pub(crate) struct Ehdr {
    pub(crate) e_ident: [u8; 16],
    pub(crate) e_type: u16,
    pub(crate) e_machine: u16,
    pub(crate) e_version: u32,
    pub(crate) e_entry: u64,
    pub(crate) e_phoff: u64,
    pub(crate) e_shoff: u64,
    pub(crate) e_flags: u32,
    pub(crate) e_ehsize: u16,
    pub(crate) e_phentsize: u16,
    pub(crate) e_phnum: u16,
    pub(crate) e_shentsize: u16,
    pub(crate) e_shnum: u16,
    pub(crate) e_shstrndx: u16,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct Phdr {
    pub(crate) p_type: u32,
    pub(crate) p_flags: u32,
    pub(crate) p_offset: u64,
    pub(crate) p_vaddr: u64,
    pub(crate) p_paddr: u64,
    pub(crate) p_filesz: u64,
    pub(crate) p_memsz: u64,
    pub(crate) p_align: u64,
}

#[repr(C)]
pub(crate) struct Dyn {
    pub(crate) d_tag: i64,
    pub(crate) d_val: u64,
}

#[repr(C)]
pub(crate) struct Rela {
    pub(crate) r_offset: u64,
    pub(crate) r_info: u64,
    pub(crate) r_addend: i64,
}

#[repr(C)]
pub(crate) struct Sym {
    pub(crate) st_name: u32,
    pub(crate) st_info: u8,
    pub(crate) st_other: u8,
    pub(crate) st_shndx: u16,
    pub(crate) st_value: u64,
    pub(crate) st_size: u64,
}

pub(crate) const PT_LOAD: u32 = 1;
pub(crate) const PT_DYNAMIC: u32 = 2;
pub(crate) const PT_TLS: u32 = 7;
pub(crate) const PT_GNU_RELRO: u32 = 0x6474_e552;

pub(crate) const DT_NULL: i64 = 0;
pub(crate) const DT_PLTRELSZ: i64 = 2;
#[cfg(feature = "capi")]
pub(crate) const DT_HASH: i64 = 4;
#[cfg(feature = "capi")]
pub(crate) const DT_STRTAB: i64 = 5;
pub(crate) const DT_SYMTAB: i64 = 6;
pub(crate) const DT_RELA: i64 = 7;
pub(crate) const DT_RELASZ: i64 = 8;
pub(crate) const DT_PLTREL: i64 = 20;
pub(crate) const DT_JMPREL: i64 = 23;
#[cfg(feature = "capi")]
pub(crate) const DT_GNU_HASH: i64 = 0x6fff_fef5;

pub(crate) const R_X86_64_DTPMOD64: u32 = 16;

const ET_EXEC: u16 = 2;
const ET_DYN: u16 = 3;
const EM_X86_64: u16 = 62;

/// A module mapped in this process.
pub(crate) struct Module {
    /// Address of its ELF header.
    pub(crate) base: usize,
    /// Load bias: run-time address minus link-time `p_vaddr`.
    pub(crate) bias: usize,
    pub(crate) phdrs: &'static [Phdr],
    /// Lowest and highest run-time addresses of its `PT_LOAD` segments.
    pub(crate) lo: usize,
    pub(crate) hi: usize,
}

impl Module {
    /// The module whose ELF header is at `base`, if the bytes there are one (x86-64, executable
    /// or shared object, program headers inside the first page, a `PT_LOAD` at file offset 0).
    ///
    /// # Safety
    ///
    /// The first page at `base` must be readable and stay mapped while the result is used.
    pub(crate) unsafe fn at(base: usize) -> Option<Module> {
        // SAFETY: The caller guarantees the page is readable.
        let eh = unsafe { &*(base as *const Ehdr) };
        if eh.e_ident[..4] != *b"\x7fELF"
            || eh.e_ident[4] != 2
            || eh.e_machine != EM_X86_64
            || !(eh.e_type == ET_DYN || eh.e_type == ET_EXEC)
            || eh.e_phentsize as usize != core::mem::size_of::<Phdr>()
            || eh.e_phnum == 0
            || eh.e_phoff as usize + eh.e_phnum as usize * core::mem::size_of::<Phdr>() > PAGE
        {
            return None;
        }
        // SAFETY: Checked above to lie inside the header's page.
        let phdrs = unsafe {
            core::slice::from_raw_parts(
                (base + eh.e_phoff as usize) as *const Phdr,
                eh.e_phnum as usize,
            )
        };
        let first = phdrs
            .iter()
            .find(|p| p.p_type == PT_LOAD && p.p_offset == 0)?;
        let bias = base.wrapping_sub(first.p_vaddr as usize);
        let mut lo = usize::MAX;
        let mut hi = 0;
        for p in phdrs.iter().filter(|p| p.p_type == PT_LOAD) {
            lo = lo.min(bias.wrapping_add(p.p_vaddr as usize));
            hi = hi.max(bias.wrapping_add((p.p_vaddr + p.p_memsz) as usize));
        }
        Some(Module {
            base,
            bias,
            phdrs,
            lo,
            hi,
        })
    }

    /// The module that contains `addr`: `addr` itself when it is the ELF header (such as the
    /// linker-defined `__ehdr_start`), else the nearest ELF header below it whose segments
    /// cover `addr`. Pages are tested for readability before they are read.
    pub(crate) fn containing(addr: usize) -> Option<Module> {
        let mut page = addr & !(PAGE - 1);
        // A module is far smaller than this; the bound only stops a hopeless search.
        for _ in 0..(1usize << 18) {
            // SAFETY: The page is readable; the module is mapped while its code runs.
            if arch::readable(page) && unsafe { (page as *const [u8; 4]).read() } == *b"\x7fELF" {
                // SAFETY: As above.
                if let Some(m) = unsafe { Module::at(page) } {
                    if m.lo <= addr && addr < m.hi {
                        return Some(m);
                    }
                }
            }
            page = page.checked_sub(PAGE)?;
        }
        None
    }

    pub(crate) fn phdr(&self, ty: u32) -> Option<&'static Phdr> {
        self.phdrs.iter().find(|p| p.p_type == ty)
    }

    /// An address-valued `_DYNAMIC` entry as a run-time address, whether the dynamic linker
    /// relocated it in place (glibc) or not (musl): a value inside the module's span is taken
    /// as already relocated. (Ambiguous only for a module mapped below its own size.)
    pub(crate) fn ptr(&self, v: u64) -> usize {
        let v = v as usize;
        if self.bias != 0 && self.lo <= v && v < self.hi {
            v
        } else {
            self.bias.wrapping_add(v)
        }
    }

    /// The value of the first `_DYNAMIC` entry tagged `tag`.
    pub(crate) fn dynamic(&self, tag: i64) -> Option<u64> {
        let d = self.phdr(PT_DYNAMIC)?;
        let mut p = self.bias.wrapping_add(d.p_vaddr as usize) as *const Dyn;
        loop {
            // SAFETY: `_DYNAMIC` lies in a loaded segment and ends with DT_NULL.
            let e = unsafe { &*p };
            if e.d_tag == DT_NULL {
                return None;
            }
            if e.d_tag == tag {
                return Some(e.d_val);
            }
            // SAFETY: Not past DT_NULL yet.
            p = unsafe { p.add(1) };
        }
    }

    /// The relocation tables `DT_RELA` and (when it is RELA) `DT_JMPREL`.
    pub(crate) fn relas(&self) -> [&'static [Rela]; 2] {
        let table = |addr: Option<u64>, size: Option<u64>| -> &'static [Rela] {
            match (addr, size) {
                // SAFETY: The dynamic linker processed exactly this table; it is mapped.
                (Some(a), Some(s)) if a != 0 => unsafe {
                    core::slice::from_raw_parts(
                        self.ptr(a) as *const Rela,
                        s as usize / core::mem::size_of::<Rela>(),
                    )
                },
                _ => &[],
            }
        };
        let jmprel = if self.dynamic(DT_PLTREL) == Some(DT_RELA as u64) {
            table(self.dynamic(DT_JMPREL), self.dynamic(DT_PLTRELSZ))
        } else {
            &[]
        };
        [
            table(self.dynamic(DT_RELA), self.dynamic(DT_RELASZ)),
            jmprel,
        ]
    }

    /// Dynamic symbol `i` (the caller got `i` from one of this module's relocations).
    pub(crate) fn sym(&self, i: usize) -> Option<&'static Sym> {
        let symtab = self.ptr(self.dynamic(DT_SYMTAB)?);
        // SAFETY: A relocation's symbol index lies in the dynamic symbol table.
        Some(unsafe { &*((symtab + i * core::mem::size_of::<Sym>()) as *const Sym) })
    }

    /// The run-time address of the defined dynamic symbol `name` (GNU or SysV hash table), for
    /// the C library's search of the host's `__tls_get_addr`.
    #[cfg(feature = "capi")]
    pub(crate) fn lookup(&self, name: &[u8]) -> Option<usize> {
        let symtab = self.ptr(self.dynamic(DT_SYMTAB)?) as *const Sym;
        let strtab = self.ptr(self.dynamic(DT_STRTAB)?);
        let matches = |i: u32| -> Option<usize> {
            // SAFETY: `i` comes from the module's own hash table.
            let s = unsafe { &*symtab.add(i as usize) };
            // SAFETY: `st_name` indexes the NUL-terminated string table; the comparison stops
            // at the first difference or at the NUL (no strlen: that is a libc symbol).
            let same = unsafe {
                let n = (strtab + s.st_name as usize) as *const u8;
                name.iter().enumerate().all(|(k, &c)| *n.add(k) == c) && *n.add(name.len()) == 0
            };
            (s.st_shndx != 0 && same).then(|| self.bias.wrapping_add(s.st_value as usize))
        };
        if let Some(gh) = self.dynamic(DT_GNU_HASH) {
            let gh = self.ptr(gh) as *const u32;
            // SAFETY: The layout of DT_GNU_HASH: nbuckets, symoffset, bloom size, bloom shift,
            // the bloom words (u64), the buckets, then the chains.
            unsafe {
                let (nbuckets, symoffset, bloom) = (*gh, *gh.add(1), *gh.add(2));
                if nbuckets == 0 {
                    return None;
                }
                let buckets = gh.add(4 + 2 * bloom as usize);
                let chains = buckets.add(nbuckets as usize);
                let h = gnu_hash(name);
                let mut i = *buckets.add((h % nbuckets) as usize);
                if i < symoffset {
                    return None;
                }
                loop {
                    let ch = *chains.add((i - symoffset) as usize);
                    if ch | 1 == h | 1 {
                        if let Some(a) = matches(i) {
                            return Some(a);
                        }
                    }
                    if ch & 1 != 0 {
                        return None;
                    }
                    i += 1;
                }
            }
        }
        let hash = self.ptr(self.dynamic(DT_HASH)?) as *const u32;
        // SAFETY: The layout of DT_HASH: nbucket, nchain, the buckets, then the chains.
        unsafe {
            let nbucket = *hash;
            if nbucket == 0 {
                return None;
            }
            let h = sysv_hash(name);
            let mut i = *hash.add(2 + (h % nbucket) as usize);
            while i != 0 {
                if let Some(a) = matches(i) {
                    return Some(a);
                }
                i = *hash.add(2 + nbucket as usize + i as usize);
            }
        }
        None
    }
}

/// The hash of `DT_GNU_HASH` tables (Bernstein's, `h * 33 + c` from 5381).
#[cfg(feature = "capi")]
pub(crate) fn gnu_hash(name: &[u8]) -> u32 {
    name.iter()
        .fold(5381u32, |h, &c| h.wrapping_mul(33).wrapping_add(c as u32))
}

/// The hash of System V `DT_HASH` tables (the ELF specification's `elf_hash`).
#[cfg(feature = "capi")]
pub(crate) fn sysv_hash(name: &[u8]) -> u32 {
    name.iter().fold(0u32, |h, &c| {
        let h = (h << 4).wrapping_add(c as u32);
        (h ^ ((h & 0xf000_0000) >> 24)) & 0x0fff_ffff
    })
}
