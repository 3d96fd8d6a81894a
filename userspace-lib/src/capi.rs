// SPDX-License-Identifier: GPL-2.0

//! The C API of libkstls (`include/kstls.h`), compiled only with the `capi` feature, which the
//! Makefile turns on when it builds `libkstls.a` and `libkstls.so` from this crate: the
//! exported C functions, the Rust slow path of the `__tls_get_addr` entry in `arch.rs`, and the
//! panic handler a `no_std` static library needs.
//!
//! The exported C symbols are thin shims (c-scape style): they check their arguments and return
//! `0` or `-errno`; the logic lives behind them. A Rust program that depends on the crate gets
//! none of this (it would clash with its own `std` and interpose the host's `__tls_get_addr`);
//! it uses the API of `api.rs` instead.

use core::ffi::c_void;
use core::panic::PanicInfo;

use crate::context;
use crate::host;
use crate::selfreg;
use crate::sys;
use crate::uapi;
use crate::uapi::kstls_tls_index;

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
    match context::tls_addr(module, offset) {
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
