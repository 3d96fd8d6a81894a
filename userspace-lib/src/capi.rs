// SPDX-License-Identifier: GPL-2.0

//! The C API of libkstls (`include/kstls.h`), compiled only with the `capi` feature, which the
//! Makefile turns on when it builds `libkstls.a` and `libkstls.so` from this crate: the
//! exported C functions (all but `__tls_get_addr`, which is `entry.rs`'s; the list of them is
//! `userspace-lib/exports`) and the panic handler a `no_std` static library needs.
//!
//! The exported C symbols are thin shims (c-scape style): they check their arguments and return
//! `0` or `-errno`; the logic lives behind them. A Rust program that depends on the crate gets
//! none of this (it would clash with its own `std` and interpose the host's `__tls_get_addr`);
//! it uses the API of `api.rs` instead.

use core::ffi::c_void;
use core::panic::PanicInfo;

use rustix::io::Errno;

use crate::context;
use crate::die;
use crate::entry;
use crate::selfreg;

/// `0` or `-errno`, for the C shims.
fn result(r: Result<(), Errno>) -> i32 {
    match r {
        Ok(()) => 0,
        Err(e) => -e.raw_os_error(),
    }
}

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
    result(context::fd_checked().map(|_| ()))
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
        return -(Errno::FAULT.raw_os_error());
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
    result(context::unregister(module))
}

/// `int kstls_register_self(const void *addr, uint64_t *module)`: register the module (the
/// executable or shared object) that contains `addr` from its own `PT_TLS`, point its
/// `R_X86_64_DTPMOD64` GOT slots at the new kstls id and its own TLS descriptors at
/// `kstls_tlsdesc`, and start the calling thread's block from its host block.
///
/// # Safety
///
/// `addr` must lie in a module mapped by a dynamic linker (or the kernel) that is not unloaded
/// meanwhile; `module` is writable or null.
#[no_mangle]
pub unsafe extern "C" fn kstls_register_self(addr: *const c_void, module: *mut u64) -> i32 {
    // SAFETY: Forwarded from the caller.
    match unsafe { selfreg::register_self(addr as usize, entry::entries()) } {
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
    result(unsafe { selfreg::unregister_self(addr as usize) })
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

#[panic_handler]
fn panic(_info: &PanicInfo<'_>) -> ! {
    die::die(b"kstls: internal error (panic)\n")
}
