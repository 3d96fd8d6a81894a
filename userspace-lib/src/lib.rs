// SPDX-License-Identifier: GPL-2.0

//! Thread-local storage served by the kernel through `/dev/kstls`, with no libc: the `kstls`
//! crate for Rust programs, and libkstls, the C library built from the same code.
//!
//! # The Rust API
//!
//! A Rust program adds `kstls = { path = ".../userspace-lib" }` to its dependencies and uses
//! [`Module`] (register a TLS image, get the calling thread's block of it), [`init`],
//! [`stats`] and the typed [`Error`]. `kstls.ko` must be loaded (`/dev/kstls`); everything
//! fails with [`Error::NoDevice`] otherwise.
//!
//! ```no_run
//! use kstls::{Image, Module};
//!
//! // A 64-byte TLS block per thread: 4 bytes of `.tdata`, the rest zeroed `.tbss`, aligned
//! // to 16 bytes.
//! static TDATA: [u8; 4] = *b"abcd";
//! let module = Module::register(&Image::new(&TDATA, 64).with_align(16, 0))?;
//! let block = module.tls_addr(0)?; // this thread's copy, different in every thread
//! // SAFETY: `block` points to 64 bytes that belong to the calling thread.
//! assert_eq!(unsafe { *block }, b'a');
//! module.unregister()?;
//! # Ok::<(), kstls::Error>(())
//! ```
//!
//! The crate is `no_std` and never allocates; it works in `std` and `no_std` programs alike.
//! It does not change how the program's own `thread_local!` variables are reached: see
//! [`Module::register_self`].
//!
//! # The C library (feature `capi`)
//!
//! `make -C userspace-lib` builds this crate as a static library with the `capi` feature and
//! turns it into `libkstls.a` and `libkstls.so`: `__tls_get_addr` served by kstls, with the
//! cache fast path, self-registration, and the C API of `include/kstls.h`. That build also
//! brings a panic handler and exports C symbols, which is why a Rust program must leave the
//! feature off.
//!
//! # Files
//!
//! One concept per file, in layers that only look down (no file uses one that uses it back):
//!
//! | layer | files |
//! | --- | --- |
//! | leaves | `uapi.rs` (the ABI, generated from `uapi/linux/kstls.h`); `arch.rs` (x86-64: the thread pointer, the FS base, raw syscalls) |
//! | then | `die.rs` (the loud failure); `elf.rs` (a module's headers in memory: `PT_TLS`, `_DYNAMIC`, relocations, symbols and their hash tables) |
//! | then | `lock.rs` (the one lock, signals blocked, never inherited held by a forked child) |
//! | then | `cache.rs` (the fast-path cache: `EMPTY_CACHE`, the wipe-on-fork `FAST`, mapping it, the lookup) |
//! | then | `context.rs` (the `/dev/kstls` fd, fork adoption, the ioctls) |
//! | then | `tlsdesc.rs` (a module's TLS descriptors: which are its own, the host's block they tell of, their rewrite) |
//! | then | `host.rs` (finding the host dynamic linker's `__tls_get_addr`); `selfreg.rs` (registering a module: its `PT_TLS`, the `ti_module` and descriptor rewrite, the earlier writes carried over) |
//! | top | `api.rs` (the Rust API); `capi.rs` (the C shims and the panic handler); `entry.rs` (the assembly `__tls_get_addr` and TLS descriptor resolver, their slow path, host forwarding); `exports.rs` (the public symbols hidden in `libkstls.a`); `ctor.rs` (the constructor and destructor of `libkstls.a` that register the module it is linked into) |
//!
//! `capi.rs`, `entry.rs`, `die.rs`, `host.rs` and `tlsdesc.rs` exist only in the C library,
//! `exports.rs` and `ctor.rs` only in its archive, `libkstls.a`.
//! Every system call is a raw one (rustix's linux_raw backend, plus the few rustix lacks in
//! `arch.rs`). Host-side unit tests (`make -C userspace-lib unit-test`) sit at the bottom of the
//! file under test and build the crate with `std`.

#![cfg_attr(not(test), no_std)]

mod api;
mod arch;
mod cache;
#[cfg(feature = "capi")]
mod capi;
mod context;
#[cfg(feature = "archive")]
mod ctor;
#[cfg(any(feature = "capi", test))]
mod die;
mod elf;
#[cfg(feature = "capi")]
mod entry;
#[cfg(feature = "archive")]
mod exports;
#[cfg(any(feature = "capi", test))]
mod host;
mod lock;
mod selfreg;
#[cfg(any(feature = "capi", test))]
mod tlsdesc;
mod uapi;

pub use api::init;
pub use api::stats;
pub use api::Error;
pub use api::Image;
pub use api::Module;
pub use api::Stats;
