// SPDX-License-Identifier: GPL-2.0

//! A loaded ELF module (executable or shared object) seen through its own headers in memory:
//! the ELF header, the program headers (`PT_TLS`, `PT_DYNAMIC`, `PT_GNU_RELRO`), the dynamic
//! section, its relocations and its dynamic symbols. Only what libkstls needs, for x86-64.
//!
//! Dynamic linkers differ in what they leave in `_DYNAMIC`: glibc adds the load bias to the
//! address-valued entries in place, musl does not. `Module::ptr` accepts both.

use rustix::io::Errno;
use rustix::mm::MprotectFlags;

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
#[cfg(any(feature = "capi", test))]
pub(crate) const DT_HASH: i64 = 4;
#[cfg(any(feature = "capi", test))]
pub(crate) const DT_STRTAB: i64 = 5;
pub(crate) const DT_SYMTAB: i64 = 6;
pub(crate) const DT_RELA: i64 = 7;
pub(crate) const DT_RELASZ: i64 = 8;
pub(crate) const DT_PLTREL: i64 = 20;
pub(crate) const DT_JMPREL: i64 = 23;
#[cfg(feature = "archive")]
pub(crate) const DT_FLAGS: i64 = 30;
/// `DT_FLAGS`: the module uses the static TLS model (initial-exec) somewhere.
#[cfg(feature = "archive")]
pub(crate) const DF_STATIC_TLS: u64 = 0x10;
#[cfg(any(feature = "capi", test))]
pub(crate) const DT_GNU_HASH: i64 = 0x6fff_fef5;

pub(crate) const R_X86_64_DTPMOD64: u32 = 16;
#[cfg(any(feature = "capi", test))]
pub(crate) const R_X86_64_TLSDESC: u32 = 36;

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

    /// The relocations of the tables of `relas` whose type is `ty`.
    pub(crate) fn relocs(&self, ty: u32) -> impl Iterator<Item = &'static Rela> + Clone {
        self.relas()
            .into_iter()
            .flat_map(|t| t.iter())
            .filter(move |r| r.r_info as u32 == ty)
    }

    /// The run-time address a relocation of this module writes.
    pub(crate) fn slot(&self, r: &Rela) -> usize {
        self.bias.wrapping_add(r.r_offset as usize)
    }

    /// The offset in this module's TLS block that a TLS relocation names when it names this
    /// module's own TLS: the addend for symbol 0 (a local symbol, folded in by the linker), the
    /// symbol's value plus the addend for a symbol the module defines. `None`: a symbol it only
    /// references (another module's, or an undefined weak one).
    #[cfg(any(feature = "capi", test))]
    pub(crate) fn own_tls_offset(&self, r: &Rela) -> Option<u64> {
        let sym = (r.r_info >> 32) as usize;
        if sym == 0 {
            return Some(r.r_addend as u64);
        }
        let s = self.sym(sym)?;
        (s.st_shndx != 0).then(|| s.st_value.wrapping_add(r.r_addend as u64))
    }

    /// The range of whole pages `PT_GNU_RELRO` covers, which the dynamic linker made read-only
    /// after relocation (glibc and musl round both ends down to a page).
    pub(crate) fn relro(&self) -> Option<(usize, usize)> {
        self.phdr(PT_GNU_RELRO).map(|r| {
            let start = self.bias.wrapping_add(r.p_vaddr as usize) & !(PAGE - 1);
            let end = self.bias.wrapping_add((r.p_vaddr + r.p_memsz) as usize) & !(PAGE - 1);
            (start, end)
        })
    }

    /// Runs `write` with the module's RELRO pages writable when one of `slots` lies in them
    /// (`mprotect` there and back); `write` may store to those slots, and nothing else there.
    ///
    /// # Safety
    ///
    /// The module stays mapped, and no other thread relies on its RELRO pages being read-only
    /// meanwhile.
    pub(crate) unsafe fn with_slots_writable(
        &self,
        mut slots: impl Iterator<Item = usize>,
        write: impl FnOnce(),
    ) -> Result<(), Errno> {
        let relro = self.relro().filter(|(s, e)| e > s);
        let need = relro.filter(|&(s, e)| slots.any(|p| s <= p && p < e));
        let protect = |flags| match need {
            // SAFETY: The module's own RELRO pages; only their protection changes.
            Some((s, e)) => unsafe { rustix::mm::mprotect(s as *mut _, e - s, flags) },
            None => Ok(()),
        };
        protect(MprotectFlags::READ | MprotectFlags::WRITE)?;
        write();
        protect(MprotectFlags::READ)
    }

    /// Dynamic symbol `i` (the caller got `i` from one of this module's relocations).
    pub(crate) fn sym(&self, i: usize) -> Option<&'static Sym> {
        let symtab = self.ptr(self.dynamic(DT_SYMTAB)?);
        // SAFETY: A relocation's symbol index lies in the dynamic symbol table.
        Some(unsafe { &*((symtab + i * core::mem::size_of::<Sym>()) as *const Sym) })
    }

    /// The run-time address of the defined dynamic symbol `name` (GNU or SysV hash table), for
    /// the C library's search of the host's `__tls_get_addr`.
    #[cfg(any(feature = "capi", test))]
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
#[cfg(any(feature = "capi", test))]
pub(crate) fn gnu_hash(name: &[u8]) -> u32 {
    name.iter()
        .fold(5381u32, |h, &c| h.wrapping_mul(33).wrapping_add(c as u32))
}

/// The hash of System V `DT_HASH` tables (the ELF specification's `elf_hash`).
#[cfg(any(feature = "capi", test))]
pub(crate) fn sysv_hash(name: &[u8]) -> u32 {
    name.iter().fold(0u32, |h, &c| {
        let h = (h << 4).wrapping_add(c as u32);
        (h ^ ((h & 0xf000_0000) >> 24)) & 0x0fff_ffff
    })
}

/// Modules built in memory by the tests: an ELF header, program headers and the tables the
/// test asks for, laid out as a linker would and "loaded" at a page-aligned heap address, with
/// `_DYNAMIC` either relocated in place (glibc) or left at link-time values (musl).
#[cfg(test)]
pub(crate) mod synth {

    use super::*;

    /// A `_DYNAMIC` entry: a plain value, or a link-time address (relocated on request).
    #[derive(Clone, Copy)]
    pub(crate) enum Dt {
        Val(i64, u64),
        Addr(i64, u64),
    }

    /// A dynamic symbol: its name, whether the module defines it, its link-time value.
    #[derive(Clone, Copy)]
    pub(crate) struct Symbol {
        pub(crate) name: &'static str,
        pub(crate) defined: bool,
        pub(crate) value: u64,
    }

    /// A symbol the module defines, at link-time address `value`.
    pub(crate) const fn def(name: &'static str, value: u64) -> Symbol {
        Symbol {
            name,
            defined: true,
            value,
        }
    }

    /// A symbol the module uses but another defines.
    pub(crate) const fn undef(name: &'static str) -> Symbol {
        Symbol {
            name,
            defined: false,
            value: 0,
        }
    }

    /// Which hash tables `symbols` adds.
    #[derive(Clone, Copy, PartialEq, Eq)]
    pub(crate) enum Hash {
        Gnu,
        Sysv,
        Both,
    }

    /// The module being built. Everything after the header page is data at link-time address
    /// (and file offset) `PAGE + i`; one `PT_LOAD` covers the whole image.
    pub(crate) struct Builder {
        data: Vec<u8>,
        phdrs: Vec<Phdr>,
        dynamic: Vec<Dt>,
        /// Where the symbol table lists each name (after hash-order sorting).
        sym_index: Vec<(&'static str, u32)>,
    }

    impl Builder {
        pub(crate) fn new() -> Self {
            Builder {
                data: Vec::new(),
                phdrs: Vec::new(),
                dynamic: Vec::new(),
                sym_index: Vec::new(),
            }
        }

        /// Appends `bytes` at an 8-byte boundary; returns their link-time address.
        pub(crate) fn add(&mut self, bytes: &[u8]) -> u64 {
            while self.data.len() % 8 != 0 {
                self.data.push(0);
            }
            let at = (PAGE + self.data.len()) as u64;
            self.data.extend_from_slice(bytes);
            at
        }

        /// Appends 64-bit words; returns their link-time address.
        pub(crate) fn words(&mut self, w: &[u64]) -> u64 {
            let bytes: Vec<u8> = w.iter().flat_map(|x| x.to_ne_bytes()).collect();
            self.add(&bytes)
        }

        pub(crate) fn phdr(
            &mut self,
            p_type: u32,
            vaddr: u64,
            filesz: u64,
            memsz: u64,
            align: u64,
        ) {
            self.phdrs.push(Phdr {
                p_type,
                p_flags: 0,
                p_offset: vaddr,
                p_vaddr: vaddr,
                p_paddr: vaddr,
                p_filesz: filesz,
                p_memsz: memsz,
                p_align: align,
            });
        }

        pub(crate) fn dt(&mut self, e: Dt) {
            self.dynamic.push(e);
        }

        /// A `.dynsym` (entry 0 the null symbol), `.dynstr` and the hash tables `hash` asks
        /// for, with `DT_SYMTAB`, `DT_STRTAB`, `DT_GNU_HASH` / `DT_HASH`. With a GNU table the
        /// symbols are sorted by bucket, as linkers do; `index` tells where each went.
        pub(crate) fn symbols(&mut self, syms: &[Symbol], hash: Hash, nbuckets: u32) {
            let mut syms = syms.to_vec();
            let bucket = |s: &Symbol| gnu_hash(s.name.as_bytes()).checked_rem(nbuckets);
            if hash != Hash::Sysv {
                syms.sort_by_key(bucket);
            }
            let mut strtab = std::vec![0u8];
            let mut symtab: Vec<u8> = std::vec![0; core::mem::size_of::<Sym>()];
            for (i, s) in syms.iter().enumerate() {
                let name = strtab.len() as u32;
                strtab.extend_from_slice(s.name.as_bytes());
                strtab.push(0);
                let sym = Sym {
                    st_name: name,
                    st_info: 0x11, // STB_GLOBAL, STT_OBJECT
                    st_other: 0,
                    st_shndx: if s.defined { 7 } else { 0 },
                    st_value: s.value,
                    st_size: 8,
                };
                // SAFETY: `Sym` is plain data without padding.
                let raw = unsafe {
                    core::slice::from_raw_parts(
                        &sym as *const Sym as *const u8,
                        core::mem::size_of::<Sym>(),
                    )
                };
                symtab.extend_from_slice(raw);
                self.sym_index.push((s.name, i as u32 + 1));
            }
            let symtab = self.add(&symtab);
            let strtab = self.add(&strtab);
            self.dt(Dt::Addr(DT_SYMTAB, symtab));
            self.dt(Dt::Addr(DT_STRTAB, strtab));
            let n = syms.len() as u32 + 1;
            if hash != Hash::Sysv {
                // nbuckets, symoffset 1, one bloom word (all ones: the lookup does not use it),
                // bloom shift, then the buckets and the chains.
                let symoffset = 1u32;
                let mut t = std::vec![nbuckets, symoffset, 1, 6, u32::MAX, u32::MAX];
                let mut buckets = std::vec![0u32; nbuckets as usize];
                let mut chains = std::vec![0u32; (n - symoffset) as usize];
                for (i, s) in syms.iter().enumerate().filter(|_| nbuckets != 0) {
                    let idx = i as u32 + 1;
                    let b = bucket(s).unwrap() as usize;
                    if buckets[b] == 0 {
                        buckets[b] = idx;
                    }
                    let last = syms.get(i + 1).is_none_or(|t| bucket(t) != bucket(s));
                    chains[(idx - symoffset) as usize] =
                        (gnu_hash(s.name.as_bytes()) & !1) | last as u32;
                }
                t.extend(buckets);
                if nbuckets != 0 {
                    t.extend(chains);
                }
                let bytes: Vec<u8> = t.iter().flat_map(|x| x.to_ne_bytes()).collect();
                let at = self.add(&bytes);
                self.dt(Dt::Addr(DT_GNU_HASH, at));
            }
            if hash != Hash::Gnu {
                let mut buckets = std::vec![0u32; nbuckets as usize];
                let mut chains = std::vec![0u32; n as usize];
                for (i, s) in syms.iter().enumerate() {
                    let idx = i + 1;
                    let b = (sysv_hash(s.name.as_bytes()) % nbuckets) as usize;
                    chains[idx] = buckets[b];
                    buckets[b] = idx as u32;
                }
                let mut t = std::vec![nbuckets, n];
                t.extend(buckets);
                t.extend(chains);
                let bytes: Vec<u8> = t.iter().flat_map(|x| x.to_ne_bytes()).collect();
                let at = self.add(&bytes);
                self.dt(Dt::Addr(DT_HASH, at));
            }
        }

        /// The symbol table index `symbols` gave `name`.
        pub(crate) fn index(&self, name: &str) -> u64 {
            self.sym_index.iter().find(|e| e.0 == name).unwrap().1 as u64
        }

        /// Lays the module out in leaked, page-aligned memory; `relocated`: the address-valued
        /// `_DYNAMIC` entries hold run-time addresses (glibc), else link-time ones (musl).
        /// Returns the address of its ELF header.
        pub(crate) fn load(mut self, relocated: bool) -> usize {
            // `_DYNAMIC` last: its values depend on where the module lands.
            let dyn_len = 16 * (self.dynamic.len() as u64 + 1);
            let dyn_at = self.add(&std::vec![0; dyn_len as usize]);
            let total = (PAGE + self.data.len()) as u64;
            let size = (total as usize).next_multiple_of(PAGE);
            let layout = std::alloc::Layout::from_size_align(size, PAGE).unwrap();
            // SAFETY: `layout` has a non-zero size. Never freed: a `Module` borrows it forever.
            let base = unsafe { std::alloc::alloc_zeroed(layout) } as usize;
            assert_ne!(base, 0);
            let mut dynamic = Vec::new();
            for e in &self.dynamic {
                let (tag, v) = match *e {
                    Dt::Val(t, v) => (t, v),
                    Dt::Addr(t, a) if relocated => (t, base as u64 + a),
                    Dt::Addr(t, a) => (t, a),
                };
                dynamic.extend((tag as u64).to_ne_bytes());
                dynamic.extend(v.to_ne_bytes());
            }
            let at = dyn_at as usize - PAGE;
            self.data[at..at + dynamic.len()].copy_from_slice(&dynamic);
            let mut phdrs = std::vec![Phdr {
                p_type: PT_LOAD,
                p_flags: 0,
                p_offset: 0,
                p_vaddr: 0,
                p_paddr: 0,
                p_filesz: total,
                p_memsz: total,
                p_align: PAGE as u64,
            }];
            phdrs.append(&mut self.phdrs);
            phdrs.push(Phdr {
                p_type: PT_DYNAMIC,
                p_flags: 0,
                p_offset: dyn_at,
                p_vaddr: dyn_at,
                p_paddr: dyn_at,
                p_filesz: dyn_len,
                p_memsz: dyn_len,
                p_align: 8,
            });
            let ehdr = Ehdr {
                e_ident: *b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0",
                e_type: ET_DYN,
                e_machine: EM_X86_64,
                e_version: 1,
                e_entry: 0,
                e_phoff: core::mem::size_of::<Ehdr>() as u64,
                e_shoff: 0,
                e_flags: 0,
                e_ehsize: core::mem::size_of::<Ehdr>() as u16,
                e_phentsize: core::mem::size_of::<Phdr>() as u16,
                e_phnum: phdrs.len() as u16,
                e_shentsize: 0,
                e_shnum: 0,
                e_shstrndx: 0,
            };
            // SAFETY: Everything written lies inside the `size` bytes allocated above: the
            // header page holds the ELF header and the program headers (few), the data follows.
            unsafe {
                (base as *mut Ehdr).write(ehdr);
                let ph = (base + core::mem::size_of::<Ehdr>()) as *mut Phdr;
                for (i, p) in phdrs.iter().enumerate() {
                    ph.add(i).write(*p);
                }
                core::ptr::copy_nonoverlapping(
                    self.data.as_ptr(),
                    (base + PAGE) as *mut u8,
                    self.data.len(),
                );
            }
            base
        }
    }
}

#[cfg(test)]
mod tests {

    use super::synth::def;
    use super::synth::undef;
    use super::synth::Builder;
    use super::synth::Dt;
    use super::synth::Hash;
    use super::synth::Symbol;
    use super::*;

    /// The module at `base`, which must be one.
    fn module(base: usize) -> Module {
        // SAFETY: `base` came from `Builder::load`, leaked memory with a valid header page.
        unsafe { Module::at(base) }.expect("a module")
    }

    /// A module whose first page is `header` modified by `f`: what `Module::at` says of it.
    fn at_with(f: impl FnOnce(&mut Ehdr)) -> Option<Module> {
        let mut b = Builder::new();
        b.add(&[0; 64]);
        let base = b.load(true);
        // SAFETY: The header page of a leaked module.
        f(unsafe { &mut *(base as *mut Ehdr) });
        // SAFETY: As above.
        unsafe { Module::at(base) }
    }

    #[test]
    fn program_headers_give_bias_span_and_segments() {
        let mut b = Builder::new();
        let tdata = b.add(b"tdata...");
        b.phdr(PT_TLS, tdata, 8, 64, 16);
        b.phdr(PT_GNU_RELRO, tdata, 8, 8, 1);
        let base = b.load(true);
        let m = module(base);
        assert_eq!(m.base, base);
        assert_eq!(m.bias, base, "the first PT_LOAD is at p_vaddr 0");
        assert_eq!(m.lo, base);
        assert!(m.hi > base + PAGE && m.hi <= base + 2 * PAGE);
        let tls = m.phdr(PT_TLS).unwrap();
        assert_eq!(
            (tls.p_vaddr, tls.p_filesz, tls.p_memsz, tls.p_align),
            (tdata, 8, 64, 16)
        );
        assert!(m.phdr(PT_GNU_RELRO).is_some());
        assert!(m.phdr(0x6474_e551).is_none());
    }

    #[test]
    fn not_an_elf_module_is_refused() {
        assert!(at_with(|_| {}).is_some());
        assert!(at_with(|e| e.e_ident[0] = 0).is_none(), "magic");
        assert!(at_with(|e| e.e_ident[4] = 1).is_none(), "ELFCLASS32");
        assert!(at_with(|e| e.e_machine = 3).is_none(), "EM_386");
        assert!(at_with(|e| e.e_type = 1).is_none(), "ET_REL");
        assert!(at_with(|e| e.e_type = ET_EXEC).is_some(), "ET_EXEC");
        assert!(at_with(|e| e.e_phentsize = 32).is_none(), "32-bit phdrs");
        assert!(at_with(|e| e.e_phnum = 0).is_none(), "no phdrs");
        assert!(
            at_with(|e| e.e_phoff = PAGE as u64 - 8).is_none(),
            "phdrs past the page"
        );
    }

    #[test]
    fn no_load_segment_at_offset_zero_is_refused() {
        let base = Builder::new().load(true);
        // SAFETY: The header page of a leaked module: its first program header is the PT_LOAD.
        unsafe { (*((base + core::mem::size_of::<Ehdr>()) as *mut Phdr)).p_offset = PAGE as u64 };
        // SAFETY: As above.
        assert!(unsafe { Module::at(base) }.is_none());
    }

    #[test]
    fn containing_finds_the_header_below_an_address() {
        let mut b = Builder::new();
        let far = b.add(&[0; 3 * PAGE]);
        let base = b.load(false);
        let inside = base + far as usize + 2 * PAGE + 100;
        assert_eq!(Module::containing(inside).unwrap().base, base);
        assert_eq!(Module::containing(base).unwrap().base, base);
    }

    #[test]
    fn containing_finds_this_test_program() {
        let m = Module::containing(containing_finds_this_test_program as fn() as usize).unwrap();
        assert!(m.phdr(PT_DYNAMIC).is_some());
        assert!(m.phdr(PT_TLS).is_some(), "std has thread-locals");
        assert!(m.dynamic(DT_SYMTAB).is_some());
    }

    fn dynamic_entries_both_ways(relocated: bool) {
        let mut b = Builder::new();
        let rela = b.words(&[0x100, (5 << 32) | R_X86_64_DTPMOD64 as u64, 0]);
        let jmprel = b.words(&[0x200, 7, 0, 0x208, 7, 0]);
        b.dt(Dt::Addr(DT_RELA, rela));
        b.dt(Dt::Val(DT_RELASZ, 24));
        b.dt(Dt::Addr(DT_JMPREL, jmprel));
        b.dt(Dt::Val(DT_PLTRELSZ, 48));
        b.dt(Dt::Val(DT_PLTREL, DT_RELA as u64));
        let base = b.load(relocated);
        let m = module(base);
        assert_eq!(m.dynamic(DT_RELASZ), Some(24));
        assert_eq!(m.dynamic(DT_HASH), None);
        assert_eq!(m.ptr(m.dynamic(DT_RELA).unwrap()), base + rela as usize);
        let [r, j] = m.relas();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].r_offset, 0x100);
        assert_eq!(r[0].r_info >> 32, 5);
        assert_eq!(j.len(), 2);
        assert_eq!(j[1].r_offset, 0x208);
    }

    #[test]
    fn dynamic_entries_relocated_in_place_as_glibc_leaves_them() {
        dynamic_entries_both_ways(true);
    }

    #[test]
    fn dynamic_entries_at_link_time_values_as_musl_leaves_them() {
        dynamic_entries_both_ways(false);
    }

    #[test]
    fn jmprel_is_ignored_unless_it_is_rela() {
        let mut b = Builder::new();
        let jmprel = b.words(&[0x200, 7, 0]);
        b.dt(Dt::Addr(DT_JMPREL, jmprel));
        b.dt(Dt::Val(DT_PLTRELSZ, 24));
        b.dt(Dt::Val(DT_PLTREL, 17)); // DT_REL
        let m = module(b.load(true));
        let [r, j] = m.relas();
        assert!(r.is_empty() && j.is_empty());
    }

    #[test]
    fn sym_reads_the_dynamic_symbol_table() {
        let mut b = Builder::new();
        let syms = [def("a", 0x10), undef("b")];
        b.symbols(&syms, Hash::Sysv, 1);
        let (ia, ib) = (b.index("a"), b.index("b"));
        let m = module(b.load(false));
        let a = m.sym(ia as usize).unwrap();
        assert_eq!((a.st_value, a.st_shndx != 0), (0x10, true));
        assert_eq!(m.sym(ib as usize).unwrap().st_shndx, 0);
    }

    #[test]
    fn hash_functions_match_the_published_values() {
        assert_eq!(gnu_hash(b""), 0x0000_1505);
        assert_eq!(gnu_hash(b"printf"), 0x156b_2bb8);
        assert_eq!(gnu_hash(b"exit"), 0x7c96_7e3f);
        assert_eq!(gnu_hash(b"syscall"), 0xbac2_12a0);
        assert_eq!(sysv_hash(b""), 0);
        assert_eq!(sysv_hash(b"printf"), 0x0779_05a6);
        assert_eq!(sysv_hash(b"exit"), 0x0006_cf04);
        assert_eq!(sysv_hash(b"syscall"), 0x0b09_985c);
        // Long enough for the high nibble to fold back.
        assert_eq!(sysv_hash(b"__tls_get_addr") & 0xf000_0000, 0);
    }

    const SYMS: [Symbol; 6] = [
        def("__tls_get_addr", 0x1230),
        def("__tls_get_add", 0x2000),
        def("__tls_get_addr_x", 0x3000),
        undef("malloc"),
        def("_dl_x", 0x4000),
        def("exit", 0x5000),
    ];

    fn lookups(hash: Hash, nbuckets: u32, relocated: bool) {
        let mut b = Builder::new();
        b.symbols(&SYMS, hash, nbuckets);
        let base = b.load(relocated);
        let m = module(base);
        for s in SYMS.iter().filter(|s| s.defined) {
            assert_eq!(
                m.lookup(s.name.as_bytes()),
                Some(base + s.value as usize),
                "{}",
                s.name
            );
        }
        assert_eq!(m.lookup(b"malloc"), None, "undefined symbols are not found");
        assert_eq!(m.lookup(b"__tls_get"), None);
        assert_eq!(m.lookup(b"free"), None);
        assert_eq!(m.lookup(b""), None);
    }

    #[test]
    fn gnu_hash_lookup() {
        for nbuckets in [1, 2, 3, 7, 16] {
            lookups(Hash::Gnu, nbuckets, true);
            lookups(Hash::Gnu, nbuckets, false);
        }
    }

    #[test]
    fn sysv_hash_lookup() {
        for nbuckets in [1, 2, 3, 7, 16] {
            lookups(Hash::Sysv, nbuckets, true);
            lookups(Hash::Sysv, nbuckets, false);
        }
    }

    #[test]
    fn gnu_hash_is_preferred_over_sysv() {
        let mut b = Builder::new();
        b.symbols(&SYMS, Hash::Both, 3);
        let base = b.load(true);
        let m = module(base);
        // Break the SysV table: the lookup must not need it.
        let hash = m.ptr(m.dynamic(DT_HASH).unwrap()) as *mut u32;
        // SAFETY: The table's nbucket word, in the leaked module.
        unsafe { hash.write(0) };
        assert_eq!(m.lookup(b"exit"), Some(base + 0x5000));
    }

    #[test]
    fn no_hash_table_no_symbol() {
        let mut b = Builder::new();
        b.symbols(&SYMS, Hash::Gnu, 0);
        let m = module(b.load(true));
        assert_eq!(m.lookup(b"exit"), None, "nbuckets 0 and no DT_HASH");
    }
}
