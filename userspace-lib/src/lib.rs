// SPDX-License-Identifier: GPL-2.0

//! libkstls: `__tls_get_addr` served by the kernel through `/dev/kstls`, with no libc.
//!
//! The library is `no_std`, never allocates and calls no libc function: every system call is a
//! raw one (rustix's linux_raw backend, plus the two rustix lacks in `arch.rs`). It therefore
//! works under glibc, under musl, in a program with no libc at all, and inside a shared object
//! that carries its own libc into a process owned by another one.
//!
//! Files: `uapi.rs` (the ABI, generated from `uapi/kstls.h`), `arch.rs` (the `__tls_get_addr`
//! entry in assembly with the fast path, the thread pointer, raw syscalls), `context.rs` (the
//! one context of this copy of the library: the `/dev/kstls` fd, the cache, fork adoption),
//! `elf.rs` (a module's headers in memory: `PT_TLS`, `PT_DYNAMIC`, relocations, symbols),
//! `selfreg.rs` (self-registration and the `ti_module` rewrite), `host.rs` (the host dynamic
//! linker's own `__tls_get_addr`), `sys.rs` (system call helpers and the loud failure).
//!
//! The exported C symbols below are thin shims (c-scape style): they check their arguments and
//! return `0` or `-errno`; the logic lives behind them.

#![no_std]

mod arch;
mod context;
mod elf;
mod host;
mod selfreg;
mod sys;
mod uapi;

use core::ffi::c_void;
use core::panic::PanicInfo;

use uapi::kstls_tls_index;

/// The image descriptor of `kstls_register` (`struct kstls_image` in `kstls.h`): a `PT_TLS`
/// program header with the image at its run-time address.
#[repr(C)]
pub struct KstlsImage {
    image: *const c_void,
    filesz: u64,
    memsz: u64,
    align: u64,
    align_offset: u64,
}

/// `int kstls_init(void)`: open the context now instead of on first use. Returns 0 or `-errno`.
#[no_mangle]
pub extern "C" fn kstls_init() -> i32 {
    sys::result(context::fd_checked().map(|_| ()))
}

/// `int kstls_fd(void)`: the fd of this library's context (opened if need be), or `-errno`.
/// For operators and tests (`KSTLS_IOC_STATS`, `/proc/self/fdinfo`); do not close it.
#[no_mangle]
pub extern "C" fn kstls_fd() -> i32 {
    match context::fd_checked() {
        Ok(fd) => fd,
        Err(e) => -e.raw_os_error(),
    }
}

/// `int kstls_register(const struct kstls_image *img, uint64_t *module)`.
///
/// # Safety
///
/// `img` must point to a readable `struct kstls_image`, `module` to a writable `uint64_t` (or
/// be null).
#[no_mangle]
pub unsafe extern "C" fn kstls_register(img: *const KstlsImage, module: *mut u64) -> i32 {
    if img.is_null() {
        return -(rustix::io::Errno::FAULT.raw_os_error());
    }
    // SAFETY: The caller passes a valid descriptor.
    let img = unsafe { &*img };
    let r = context::register(
        img.image as usize as u64,
        img.filesz,
        img.memsz,
        img.align,
        img.align_offset,
    );
    match r {
        Ok(id) => {
            if !module.is_null() {
                // SAFETY: The caller passes a writable `uint64_t`.
                unsafe { module.write(id) };
            }
            0
        }
        Err(e) => -e.raw_os_error(),
    }
}

/// `int kstls_unregister(uint64_t module)`: release a module registered with `kstls_register`.
#[no_mangle]
pub extern "C" fn kstls_unregister(module: u64) -> i32 {
    sys::result(context::unregister(module))
}

/// `int kstls_register_self(const void *addr, uint64_t *module)`: register the module (the
/// executable or shared object) that contains `addr` from its own `PT_TLS`, and point its
/// `R_X86_64_DTPMOD64` GOT slots at the new kstls id.
///
/// # Safety
///
/// `addr` must lie in a module mapped by a dynamic linker (or the kernel) that is not unloaded
/// meanwhile; `module` is writable or null.
#[no_mangle]
pub unsafe extern "C" fn kstls_register_self(addr: *const c_void, module: *mut u64) -> i32 {
    // SAFETY: Forwarded from the caller.
    match unsafe { selfreg::register_self(addr as usize) } {
        Ok(id) => {
            if !module.is_null() {
                // SAFETY: The caller passes a writable `uint64_t`.
                unsafe { module.write(id) };
            }
            0
        }
        Err(e) => -e.raw_os_error(),
    }
}

/// `int kstls_unregister_self(const void *addr)`: the destructor's counterpart of
/// `kstls_register_self` (call it before `dlclose` unmaps the module).
///
/// # Safety
///
/// As for `kstls_register_self`.
#[no_mangle]
pub unsafe extern "C" fn kstls_unregister_self(addr: *const c_void) -> i32 {
    // SAFETY: Forwarded from the caller.
    sys::result(unsafe { selfreg::unregister_self(addr as usize) })
}

/// `void *kstls_get_tls_addr(uint64_t module, uint64_t offset)`: the calling thread's address
/// of `offset` in `module`, or NULL (a module id kstls does not know, an offset past the
/// module's size, no memory). Unlike `__tls_get_addr`, it does not forward small ids to the
/// host and does not abort.
#[no_mangle]
pub extern "C" fn kstls_get_tls_addr(module: u64, offset: u64) -> *mut c_void {
    if module < uapi::KSTLS_MODULE_ID_MIN {
        return core::ptr::null_mut();
    }
    if let Some(addr) = context::fast_lookup(module, offset) {
        return addr as *mut c_void;
    }
    match context::get_addr(module, offset) {
        Ok(addr) => addr as *mut c_void,
        Err(_) => core::ptr::null_mut(),
    }
}

/// The slow path of `__tls_get_addr`, called by the assembly entry in `arch.rs` with the stack
/// aligned: an id of the host's dynamic linker goes to the host's `__tls_get_addr`, a kstls id
/// to the `GET_ADDR` ioctl. Never returns a wrong address: any failure ends the process.
///
/// # Safety
///
/// `ti` points to a readable `tls_index`, as the psABI guarantees for `__tls_get_addr`.
pub(crate) unsafe extern "C" fn tls_get_addr_slow(ti: *const kstls_tls_index) -> *mut c_void {
    // SAFETY: The compiler-generated argument is a valid `tls_index`.
    let ti = unsafe { &*ti };
    if ti.module < uapi::KSTLS_MODULE_ID_MIN {
        let Some(host) = host::tls_get_addr() else {
            sys::die(b"kstls: __tls_get_addr: module id below KSTLS_MODULE_ID_MIN and no host __tls_get_addr to forward it to\n");
        };
        // SAFETY: `host` is the host dynamic linker's `__tls_get_addr`, which takes the same
        // argument.
        return unsafe { host(ti) };
    }
    match context::get_addr(ti.module, ti.offset) {
        Ok(addr) => addr as *mut c_void,
        Err(e) => sys::die_errno(b"kstls: __tls_get_addr: KSTLS_IOC_GET_ADDR failed", e),
    }
}

#[panic_handler]
fn panic(_info: &PanicInfo<'_>) -> ! {
    sys::die(b"kstls: internal error (panic)\n")
}
