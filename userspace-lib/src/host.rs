// SPDX-License-Identifier: GPL-2.0

//! Finding the host's own `__tls_get_addr`: the one of the dynamic linker that loaded the
//! process (glibc's `ld-linux-x86-64.so.2`, musl's `ld-musl-x86_64.so.1`), which serves every
//! module id below `KSTLS_MODULE_ID_MIN`. A pure lookup, without libc and without asking that
//! linker: the interpreter's base from the auxiliary vector (`AT_BASE`, read from
//! `/proc/self/auxv`), then `__tls_get_addr` in the interpreter's dynamic symbol table. A static
//! program has no interpreter (`AT_BASE` 0) and hence no host `__tls_get_addr`. Remembering the
//! answer and forwarding to it is the entry's business (`entry.rs`).

use rustix::fs::Mode;
use rustix::fs::OFlags;

use crate::elf::Module;

const AT_NULL: u64 = 0;
const AT_BASE: u64 = 7;

/// The address of the interpreter's `__tls_get_addr`, if the process has an interpreter that
/// defines one.
pub(crate) fn find_tls_get_addr() -> Option<usize> {
    let base = interpreter_base()?;
    // SAFETY: AT_BASE is where the kernel mapped the interpreter, whose ELF header comes
    // first; it stays mapped for the life of the process.
    let ld = unsafe { Module::at(base) }?;
    ld.lookup(b"__tls_get_addr")
}

/// `AT_BASE` from `/proc/self/auxv`, read with raw syscalls into a stack buffer.
fn interpreter_base() -> Option<usize> {
    let fd = rustix::fs::open(
        c"/proc/self/auxv",
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    // Uninitialised on purpose: zeroing it would be a call to memset, a libc symbol.
    let mut buf = core::mem::MaybeUninit::<[u64; 128]>::uninit();
    let bytes = {
        // SAFETY: Viewing the buffer as bytes; `read` only writes into it.
        let b = unsafe {
            core::slice::from_raw_parts_mut(
                buf.as_mut_ptr() as *mut core::mem::MaybeUninit<u8>,
                core::mem::size_of::<[u64; 128]>(),
            )
        };
        let mut n = 0;
        while n < b.len() {
            match rustix::io::read(&fd, &mut b[n..]) {
                Ok((done, _)) if !done.is_empty() => n += done.len(),
                _ => break,
            }
        }
        n
    };
    // SAFETY: The first `bytes` bytes were written by `read`.
    at_base(unsafe { core::slice::from_raw_parts(buf.as_ptr() as *const u64, bytes / 8) })
}

/// The non-zero `AT_BASE` of an auxiliary vector (type, value pairs up to `AT_NULL`).
fn at_base(auxv: &[u64]) -> Option<usize> {
    for pair in auxv.chunks_exact(2) {
        match pair[0] {
            AT_NULL => break,
            AT_BASE if pair[1] != 0 => return Some(pair[1] as usize),
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_base_is_read_up_to_at_null() {
        assert_eq!(at_base(&[6, 4096, 7, 0x7f00_0000, 0, 0]), Some(0x7f00_0000));
        assert_eq!(
            at_base(&[6, 4096, 0, 0, 7, 0x7f00_0000]),
            None,
            "after AT_NULL"
        );
        assert_eq!(at_base(&[7, 0, 0, 0]), None, "a static program's 0");
        assert_eq!(at_base(&[6, 4096, 7]), None, "a truncated pair");
        assert_eq!(at_base(&[]), None);
    }

    extern "C" {
        /// The dynamic linker's, which glibc's `libc.so` link script brings in.
        fn __tls_get_addr();
    }

    #[test]
    fn finds_the_dynamic_linkers_own_tls_get_addr() {
        let want = __tls_get_addr as unsafe extern "C" fn() as usize;
        assert!(
            interpreter_base().is_some(),
            "the test program has an interpreter"
        );
        assert_eq!(find_tls_get_addr(), Some(want));
    }
}
