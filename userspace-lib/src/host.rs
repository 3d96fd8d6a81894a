// SPDX-License-Identifier: GPL-2.0

//! The host's own `__tls_get_addr`: the one of the dynamic linker that loaded the process
//! (glibc's `ld-linux-x86-64.so.2`, musl's `ld-musl-x86_64.so.1`), which serves every module id
//! below `KSTLS_MODULE_ID_MIN`. It is found without libc and without asking that linker: the
//! interpreter's base from the auxiliary vector (`AT_BASE`, read from `/proc/self/auxv`), then
//! `__tls_get_addr` in the interpreter's dynamic symbol table. A static program has no
//! interpreter (`AT_BASE` 0) and hence no host `__tls_get_addr`.

use core::sync::atomic::AtomicUsize;
use core::sync::atomic::Ordering::Acquire;
use core::sync::atomic::Ordering::Release;

use rustix::fs::Mode;
use rustix::fs::OFlags;

use crate::elf::Module;
use crate::uapi::kstls_tls_index;

/// The host's `__tls_get_addr`: 0 not looked up yet, 1 there is none, else its address. The
/// assembly entry jumps to it directly once known.
pub(crate) static HOST_TLS_GET_ADDR: AtomicUsize = AtomicUsize::new(0);

const NONE: usize = 1;
const AT_NULL: u64 = 0;
const AT_BASE: u64 = 7;

type TlsGetAddr = unsafe extern "C" fn(*const kstls_tls_index) -> *mut core::ffi::c_void;

/// The host's `__tls_get_addr`, looked up once (racing threads compute the same answer).
pub(crate) fn tls_get_addr() -> Option<TlsGetAddr> {
    let mut f = HOST_TLS_GET_ADDR.load(Acquire);
    if f == 0 {
        f = lookup().unwrap_or(NONE);
        HOST_TLS_GET_ADDR.store(f, Release);
    }
    // SAFETY: `f` is the address of the interpreter's exported `__tls_get_addr`, a function
    // with this signature.
    (f != NONE).then(|| unsafe { core::mem::transmute::<usize, TlsGetAddr>(f) })
}

fn lookup() -> Option<usize> {
    let base = interpreter_base()?;
    // SAFETY: AT_BASE is where the kernel mapped the interpreter, whose ELF header comes
    // first; it stays mapped for the life of the process.
    let ld = unsafe { Module::at(base) }?;
    let f = ld.lookup(b"__tls_get_addr")?;
    // Never forward to ourselves (a libkstls.so that is the interpreter is not a thing, but a
    // wrong table must not turn into endless recursion).
    (f != crate::arch::tls_get_addr_entry()).then_some(f)
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
    let buf = unsafe { core::slice::from_raw_parts(buf.as_ptr() as *const u64, bytes / 8) };
    for pair in buf.chunks_exact(2) {
        match pair[0] {
            AT_NULL => break,
            AT_BASE if pair[1] != 0 => return Some(pair[1] as usize),
            _ => {}
        }
    }
    None
}
