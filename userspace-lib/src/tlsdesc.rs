// SPDX-License-Identifier: GPL-2.0

//! The TLS descriptors of a loaded module (`R_X86_64_TLSDESC`, code compiled with
//! `-mtls-dialect=gnu2`): which of them name the module's own TLS, what they tell of the calling
//! thread's block in the host's scheme, and their rewrite to kstls's resolver. For the C library
//! only (feature `capi`): the resolver is its `kstls_tlsdesc`.
//!
//! A descriptor is two words, `{entry, arg}`, which compiled code calls with `%rax` pointing to
//! it and which returns the variable's offset from the thread pointer. The host's dynamic linker
//! fills them in forms of its own: glibc `{_dl_tlsdesc_return, tp offset}` for a module in static
//! TLS and `{_dl_tlsdesc_dynamic, &{module, offset, generation}}` otherwise (resolved at load
//! time since glibc 2.33, lazily through `DT_JMPREL` before), musl `{__tlsdesc_static, tp
//! offset}` and `{__tlsdesc_dynamic, &{module, offset}}`. Rather than recognise each form, the
//! library calls the descriptor as compiled code would: its answer plus the thread pointer is the
//! variable's address in the host's block, whatever the form. That gives both the host's block of
//! the module (a descriptor of symbol 0 names the module itself: its address minus the offset the
//! relocation names) and, for a descriptor of a symbol the module defines, whether the host bound
//! it to this module or to another one that interposes the symbol (an executable defining the
//! same variable): only the module's own are rewritten, the others stay with the host.
//!
//! The rewrite makes each own descriptor `{kstls_tlsdesc, &tls_index{id, offset}}`; the
//! `tls_index`es live in an anonymous mapping of their own (no `malloc`), read-only once filled.
//! At unregister the descriptors are pointed at `RETIRED`, an index whose id no kernel gives out,
//! before the mapping is freed, so that an access after unregistering ends the process loudly
//! (as a DTPMOD64 slot's stale id does) instead of reading freed memory. A descriptor that points
//! at kstls's resolver already (a module registered again after an explicit unregister) is the
//! module's own.

use core::ptr::null_mut;

use rustix::io::Errno;
use rustix::mm::MapFlags;
use rustix::mm::MprotectFlags;
use rustix::mm::ProtFlags;

use crate::arch;
use crate::arch::PAGE;
use crate::elf::Module;
use crate::elf::Rela;
use crate::elf::R_X86_64_TLSDESC;
use crate::uapi::kstls_tls_index;

/// What a descriptor points at after its module was unregistered: no kstls id is all ones (the
/// registry slot in the low half is bounded by the kernel's module limit).
static RETIRED: kstls_tls_index = kstls_tls_index {
    module: u64::MAX,
    offset: 0,
};

/// The `tls_index`es of one module's rewritten descriptors: an anonymous mapping, or none.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Indexes {
    addr: usize,
    len: usize,
}

impl Indexes {
    /// No mapping (a module without own descriptors).
    pub(crate) const NONE: Indexes = Indexes { addr: 0, len: 0 };

    /// The mapping's address and length, for a table that keeps them in atomics.
    #[cfg_attr(not(feature = "capi"), expect(dead_code))]
    pub(crate) fn to_raw(self) -> (usize, usize) {
        (self.addr, self.len)
    }

    /// The `Indexes` that `to_raw` gave.
    #[cfg_attr(not(feature = "capi"), expect(dead_code))]
    pub(crate) fn from_raw(addr: usize, len: usize) -> Indexes {
        Indexes { addr, len }
    }

    fn contains(&self, p: usize) -> bool {
        self.addr <= p && p < self.addr + self.len
    }
}

/// The descriptor a TLSDESC relocation of `m` fills: `[entry, arg]`.
fn descriptor(m: &Module, r: &Rela) -> *mut [usize; 2] {
    m.slot(r) as *mut [usize; 2]
}

/// Whether `m` has TLS descriptors at all.
#[cfg(feature = "archive")]
pub(crate) fn any(m: &Module) -> bool {
    m.relocs(R_X86_64_TLSDESC).next().is_some()
}

/// Calls the descriptor at `d` the way compiled code does; returns the variable's address.
///
/// # Safety
///
/// `d` is a descriptor its dynamic linker filled (the call may run the host's resolver, which
/// may allocate the module's block for this thread).
unsafe fn resolve(d: *mut [usize; 2]) -> usize {
    let off: usize;
    // SAFETY: The TLSDESC convention: `%rax` points to the descriptor, the call returns the
    // offset from the thread pointer in `%rax`. Its resolver preserves the other registers;
    // they are declared clobbered anyway, as for any call.
    unsafe {
        core::arch::asm!("call qword ptr [rax]", inlateout("rax") d => off, clobber_abi("C"))
    };
    // SAFETY: A thread that runs TLS code has a thread pointer at %fs:0.
    unsafe { arch::thread_pointer() as usize }.wrapping_add(off)
}

/// The calling thread's block of `m` in the host's scheme (the address of offset 0 of its TLS),
/// found from its descriptors: a descriptor of symbol 0 tells; else the block most of the
/// descriptors of symbols `m` defines agree on. `None` when none can tell (no descriptor of its
/// own, or all of them pointing at `resolver` already).
///
/// # Safety
///
/// `m` is relocated and stays mapped.
pub(crate) unsafe fn host_block(m: &Module, resolver: usize) -> Option<usize> {
    let mut votes: [(usize, u32); 8] = [(0, 0); 8];
    for r in m.relocs(R_X86_64_TLSDESC) {
        let Some(off) = m.own_tls_offset(r) else {
            continue;
        };
        let d = descriptor(m, r);
        // SAFETY: The descriptor lies in the module's data, relocated.
        if unsafe { (*d)[0] } == resolver {
            continue;
        }
        // SAFETY: A descriptor of the module, filled by its dynamic linker.
        let block = unsafe { resolve(d) }.wrapping_sub(off as usize);
        if r.r_info >> 32 == 0 {
            return Some(block);
        }
        if let Some(v) = votes.iter_mut().find(|v| v.1 != 0 && v.0 == block) {
            v.1 += 1;
        } else if let Some(v) = votes.iter_mut().find(|v| v.1 == 0) {
            *v = (block, 1);
        }
    }
    votes
        .iter()
        .filter(|v| v.1 != 0)
        .max_by_key(|v| v.1)
        .map(|v| v.0)
}

/// Rewrites the descriptors of `m` that name its own TLS to `{resolver, &tls_index{id, offset}}`:
/// those of symbol 0, those already pointing at `resolver`, and those of symbols `m` defines that
/// resolve into `host` (the calling thread's host block of `m`, see `host_block`) at their own
/// offset. Returns the mapping that holds the indexes, for `retire`.
///
/// # Safety
///
/// `m` is relocated and stays mapped; no other thread runs its TLS code meanwhile.
pub(crate) unsafe fn rewrite(
    m: &Module,
    id: u64,
    resolver: usize,
    host: Option<usize>,
) -> Result<Indexes, Errno> {
    let n = m.relocs(R_X86_64_TLSDESC).count();
    if n == 0 {
        return Ok(Indexes::NONE);
    }
    let len = (n * core::mem::size_of::<kstls_tls_index>()).next_multiple_of(PAGE);
    // SAFETY: A new anonymous mapping, ours alone.
    let addr = unsafe {
        rustix::mm::mmap_anonymous(
            null_mut(),
            len,
            ProtFlags::READ | ProtFlags::WRITE,
            MapFlags::PRIVATE,
        )
    }? as usize;
    let idx = Indexes { addr, len };
    let own = |r: &Rela| -> Option<u64> {
        let off = m.own_tls_offset(r)?;
        let d = descriptor(m, r);
        // SAFETY: The descriptor lies in the module's data, relocated.
        if r.r_info >> 32 == 0 || unsafe { (*d)[0] } == resolver {
            return Some(off);
        }
        // SAFETY: A descriptor of the module, filled by its dynamic linker.
        let bound_here =
            host.is_some_and(|b| unsafe { resolve(d) } == b.wrapping_add(off as usize));
        bound_here.then_some(off)
    };
    let slots = m.relocs(R_X86_64_TLSDESC).map(|r| m.slot(r));
    let mut used = 0;
    let write = || {
        for r in m.relocs(R_X86_64_TLSDESC) {
            let Some(offset) = own(r) else {
                continue;
            };
            let ti = (addr as *mut kstls_tls_index).wrapping_add(used);
            used += 1;
            let d = descriptor(m, r) as *mut usize;
            // SAFETY: `used <= n` entries of the mapping, then the descriptor's two words,
            // writable now: the argument first, so the word compiled code calls is the last one
            // changed.
            unsafe {
                ti.write(kstls_tls_index { module: id, offset });
                d.add(1).write_volatile(ti as usize);
                d.write_volatile(resolver);
            }
        }
    };
    // SAFETY: The caller guarantees the module is relocated, mapped, and idle.
    let r = unsafe { m.with_slots_writable(slots, write) };
    // SAFETY: Our own mapping; nothing writes the indexes again.
    let sealed =
        r.and_then(|()| unsafe { rustix::mm::mprotect(addr as *mut _, len, MprotectFlags::READ) });
    match sealed {
        Ok(()) if used > 0 => Ok(idx),
        Ok(()) => {
            // SAFETY: No descriptor points into the mapping.
            let _ = unsafe { rustix::mm::munmap(addr as *mut _, len) };
            Ok(Indexes::NONE)
        }
        Err(e) => {
            // The descriptors rewritten before the failure keep their indexes: a failed mprotect
            // back to read-only is the only way here, and then the mapping must stay.
            Err(e)
        }
    }
}

/// Undoes what `rewrite` made of `m` for the indexes `idx`: the descriptors whose argument points
/// into `idx` (only `rewrite` wrote those) are pointed at `RETIRED`, then the mapping is freed.
///
/// # Safety
///
/// `m` is mapped (its destructors may still run, no other code of it); `idx` came from
/// `rewrite` for `m`.
pub(crate) unsafe fn retire(m: &Module, idx: Indexes) -> Result<(), Errno> {
    if idx == Indexes::NONE {
        return Ok(());
    }
    let ours = |r: &Rela| {
        let d = descriptor(m, r);
        // SAFETY: The descriptor lies in the module's data.
        let [_, arg] = unsafe { *d };
        idx.contains(arg).then_some(d as *mut usize)
    };
    let slots = m
        .relocs(R_X86_64_TLSDESC)
        .filter_map(ours)
        .map(|d| d as usize);
    let write = || {
        for d in slots.clone() {
            // SAFETY: The descriptor's argument word, writable now.
            unsafe {
                (d as *mut usize)
                    .add(1)
                    .write_volatile(core::ptr::addr_of!(RETIRED) as usize)
            };
        }
    };
    // SAFETY: Forwarded from the caller.
    unsafe { m.with_slots_writable(slots.clone(), write) }?;
    // SAFETY: No descriptor points into the mapping any more.
    unsafe { rustix::mm::munmap(idx.addr as *mut _, idx.len) }
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

    // A host resolver in the form of glibc's _dl_tlsdesc_return and musl's __tlsdesc_static: the
    // argument is the variable's offset from the thread pointer. And a stand-in for
    // kstls_tlsdesc, which these tests never call.
    core::arch::global_asm!(
        ".text",
        ".globl kstls_test_tlsdesc_static",
        ".hidden kstls_test_tlsdesc_static",
        ".globl kstls_test_resolver",
        ".hidden kstls_test_resolver",
        "kstls_test_tlsdesc_static:",
        "mov 8(%rax), %rax",
        "ret",
        "kstls_test_resolver:",
        "ud2",
        options(att_syntax)
    );
    extern "C" {
        fn kstls_test_tlsdesc_static();
        fn kstls_test_resolver();
    }

    fn resolver() -> usize {
        kstls_test_resolver as unsafe extern "C" fn() as usize
    }

    /// A module with one descriptor per `(symbol or "" for symbol 0, addend, the address the
    /// host's descriptor resolves to for this thread)`, the symbols "own" (at offset 8) and
    /// "own2" (24), which it defines, and "theirs", which it does not. Returns it and where its
    /// descriptors are.
    fn module(descs: &[(&str, i64, usize)]) -> (Module, *mut [usize; 2]) {
        let mut b = Builder::new();
        b.symbols(
            &[def("own", 8), def("own2", 24), undef("theirs")],
            Hash::Sysv,
            2,
        );
        // SAFETY: The test thread has a thread pointer.
        let tp = unsafe { arch::thread_pointer() } as usize;
        let words: std::vec::Vec<u64> = descs
            .iter()
            .flat_map(|d| {
                [
                    kstls_test_tlsdesc_static as unsafe extern "C" fn() as usize as u64,
                    d.2.wrapping_sub(tp) as u64,
                ]
            })
            .collect();
        let got = b.words(&words);
        let mut rela = std::vec::Vec::new();
        for (i, &(name, addend, _)) in descs.iter().enumerate() {
            let sym = if name.is_empty() { 0 } else { b.index(name) };
            rela.extend([
                got + 16 * i as u64,
                (sym << 32) | R_X86_64_TLSDESC as u64,
                addend as u64,
            ]);
        }
        let at = b.words(&rela);
        b.dt(Dt::Addr(DT_RELA, at));
        b.dt(Dt::Val(DT_RELASZ, 8 * rela.len() as u64));
        let base = b.load(true);
        // SAFETY: A module `Builder::load` laid out in leaked memory.
        let m = unsafe { Module::at(base) }.unwrap();
        (m, (base + got as usize) as *mut [usize; 2])
    }

    /// The descriptors of `module`'s module, `n` of them.
    fn descs(d: *mut [usize; 2], n: usize) -> &'static [[usize; 2]] {
        // SAFETY: The leaked module's GOT, `n` descriptors long.
        unsafe { core::slice::from_raw_parts(d, n) }
    }

    /// The `{module, offset}` of the `tls_index` at `p`.
    fn index(p: usize) -> (u64, u64) {
        // SAFETY: A `tls_index` of a live `Indexes` mapping.
        let ti = unsafe { (p as *const kstls_tls_index).read() };
        (ti.module, ti.offset)
    }

    const HOST: usize = 0x7000_0000;
    const ELSEWHERE: usize = 0x6000_0000;

    #[test]
    fn host_block_from_a_descriptor_of_symbol_zero() {
        let (m, _) = module(&[("own", 0, ELSEWHERE + 8), ("", 16, HOST + 16)]);
        // SAFETY: The module is leaked memory that nothing else uses.
        assert_eq!(unsafe { host_block(&m, resolver()) }, Some(HOST));
    }

    #[test]
    fn host_block_is_the_one_most_own_descriptors_agree_on() {
        let (m, _) = module(&[
            ("own", 0, HOST + 8),
            ("own2", 8, HOST + 32),
            ("own", 0, ELSEWHERE + 8),
            ("theirs", 0, ELSEWHERE),
            ("theirs", 0, ELSEWHERE),
        ]);
        // SAFETY: As above.
        assert_eq!(unsafe { host_block(&m, resolver()) }, Some(HOST));
        let (m, _) = module(&[("theirs", 0, HOST)]);
        // SAFETY: As above.
        assert_eq!(unsafe { host_block(&m, resolver()) }, None);
    }

    #[test]
    fn rewrite_takes_the_own_descriptors_and_leaves_the_interposed() {
        let id = 3 << 32 | 5;
        let (m, d) = module(&[
            ("", 16, HOST + 16),
            ("own", 4, HOST + 12),
            ("own2", 0, ELSEWHERE + 24),
            ("theirs", 0, ELSEWHERE),
        ]);
        let before = descs(d, 4).to_vec();
        // SAFETY: The module is leaked memory that nothing else uses.
        let idx = unsafe { rewrite(&m, id, resolver(), Some(HOST)) }.unwrap();
        let after = descs(d, 4);
        assert_eq!(after[0][0], resolver());
        assert_eq!(index(after[0][1]), (id, 16));
        assert_eq!(after[1][0], resolver());
        assert_eq!(index(after[1][1]), (id, 12));
        assert!(idx.contains(after[0][1]) && idx.contains(after[1][1]));
        assert_eq!(
            after[2..],
            before[2..],
            "interposed, and another module's, stay"
        );

        // Unregistered: pointed at RETIRED, the other two still untouched.
        // SAFETY: `idx` is what `rewrite` made of `m`.
        unsafe { retire(&m, idx) }.unwrap();
        let retired = core::ptr::addr_of!(RETIRED) as usize;
        assert_eq!(descs(d, 4)[0], [resolver(), retired]);
        assert_eq!(descs(d, 4)[1], [resolver(), retired]);
        assert_eq!(descs(d, 4)[2..], before[2..]);

        // Registered again: the descriptors that point at the resolver are the module's own,
        // with no host block to tell.
        // SAFETY: As above.
        let idx = unsafe { rewrite(&m, id + (1 << 32), resolver(), None) }.unwrap();
        assert_eq!(index(descs(d, 4)[1][1]).0, id + (1 << 32));
        assert_eq!(descs(d, 4)[2..], before[2..]);
        // SAFETY: As above.
        unsafe { retire(&m, idx) }.unwrap();
    }

    #[test]
    fn no_mapping_without_own_descriptors() {
        let (m, _) = module(&[("theirs", 0, ELSEWHERE)]);
        // SAFETY: The module is leaked memory that nothing else uses.
        assert_eq!(
            unsafe { rewrite(&m, 1 << 32, resolver(), Some(HOST)) },
            Ok(Indexes::NONE)
        );
        let (m, _) = module(&[]);
        // SAFETY: As above.
        assert_eq!(
            unsafe { rewrite(&m, 1 << 32, resolver(), Some(HOST)) },
            Ok(Indexes::NONE)
        );
    }
}
