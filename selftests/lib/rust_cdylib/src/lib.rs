// SPDX-License-Identifier: GPL-2.0

//! Scenario 5 of libkstls: a Rust `cdylib` whose `thread_local!` variables live in kstls.
//!
//! A cdylib is position-independent code, so rustc accesses its thread-locals with the
//! general-dynamic model: calls to `__tls_get_addr`, which bind to the private copy of libkstls
//! linked in by `build.rs`. A constructor in `.init_array` registers the library's own `PT_TLS`
//! (`kstls_register_self`), which also rewrites its `R_X86_64_DTPMOD64` GOT slots to the kstls
//! id; from then on every thread's thread-locals, std's included, are blocks the kernel
//! allocated. The C test program (rust_cdylib_test.c) drives the `rusttls_*` functions.

use std::cell::Cell;
use std::ffi::c_void;
use std::sync::atomic::AtomicI32;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;

extern "C" {
    fn kstls_register_self(addr: *const c_void, module: *mut u64) -> i32;
    fn kstls_unregister_self(addr: *const c_void) -> i32;
    fn kstls_fd() -> i32;
}

const NAME_INIT: [u8; 16] = *b"rust .tdata img\0";

thread_local! {
    // .tdata
    static NAME: Cell<[u8; 16]> = const { Cell::new(NAME_INIT) };
    static COUNTER: Cell<u64> = const { Cell::new(0x5eed_1234) };
    // .tbss
    static VALUE: Cell<u64> = const { Cell::new(0) };
    static WORDS: Cell<[u64; 16]> = const { Cell::new([0; 16]) };
}

static REGISTERED: AtomicI32 = AtomicI32::new(-1);
static MODULE: AtomicU64 = AtomicU64::new(0);

extern "C" fn init() {
    let mut id = 0;
    // SAFETY: Any address inside this library (this function's) identifies it; a constructor
    // runs after relocation and before any thread-local is touched.
    let r = unsafe { kstls_register_self(init as *const c_void, &mut id) };
    MODULE.store(id, Relaxed);
    REGISTERED.store(r, Relaxed);
}

extern "C" fn fini() {
    if REGISTERED.load(Relaxed) == 0 {
        // SAFETY: As in `init`; the library is still mapped while its destructors run.
        unsafe { kstls_unregister_self(init as *const c_void) };
    }
}

#[used]
#[link_section = ".init_array"]
static INIT: extern "C" fn() = init;
#[used]
#[link_section = ".fini_array"]
static FINI: extern "C" fn() = fini;

#[no_mangle]
pub extern "C" fn rusttls_registered(module: *mut u64) -> i32 {
    if !module.is_null() {
        // SAFETY: The caller passes a writable u64 or null.
        unsafe { module.write(MODULE.load(Relaxed)) };
    }
    REGISTERED.load(Relaxed)
}

#[no_mangle]
pub extern "C" fn rusttls_kstls_fd() -> i32 {
    // SAFETY: No preconditions.
    unsafe { kstls_fd() }
}

#[no_mangle]
pub extern "C" fn rusttls_check_fresh() -> i32 {
    if NAME.get() != NAME_INIT {
        return 1;
    }
    if COUNTER.get() != 0x5eed_1234 {
        return 2;
    }
    if VALUE.get() != 0 || WORDS.get() != [0; 16] {
        return 3;
    }
    0
}

#[no_mangle]
pub extern "C" fn rusttls_set(v: u64) {
    let mut name = [0u8; 16];
    name.iter_mut()
        .enumerate()
        .for_each(|(i, b)| *b = (v as u8).wrapping_add(i as u8));
    NAME.set(name);
    COUNTER.set(v * 3);
    VALUE.set(v);
    WORDS.set([v ^ 0xffff; 16]);
}

#[no_mangle]
pub extern "C" fn rusttls_check(v: u64) -> i32 {
    let mut name = [0u8; 16];
    name.iter_mut()
        .enumerate()
        .for_each(|(i, b)| *b = (v as u8).wrapping_add(i as u8));
    if NAME.get() != name {
        return 1;
    }
    if COUNTER.get() != v * 3 || VALUE.get() != v {
        return 2;
    }
    if WORDS.get() != [v ^ 0xffff; 16] {
        return 3;
    }
    0
}

#[no_mangle]
pub extern "C" fn rusttls_addr(which: i32) -> *mut c_void {
    match which {
        0 => NAME.with(|c| c.as_ptr() as *mut c_void),
        1 => COUNTER.with(|c| c.as_ptr() as *mut c_void),
        2 => VALUE.with(|c| c.as_ptr() as *mut c_void),
        3 => WORDS.with(|c| c.as_ptr() as *mut c_void),
        _ => std::ptr::null_mut(),
    }
}
