// SPDX-License-Identifier: GPL-2.0

//! The ABI of `/dev/kstls`, generated from `uapi/kstls.h` by bindgen (the Makefile runs it into
//! the build directory and passes the file's path in `KSTLS_UAPI_RS`), so the library and the
//! kernel module share the one C definition. The assertions below pin what the assembly fast
//! path in `arch.rs` hard-codes.

#![allow(non_camel_case_types, non_upper_case_globals, dead_code)]

include!(env!(
    "KSTLS_UAPI_RS",
    "build libkstls with `make -C userspace-lib`, which generates the uapi bindings"
));

const _: () = assert!(core::mem::size_of::<kstls_tls_index>() == 16);
const _: () = assert!(core::mem::size_of::<kstls_cache_slot>() == 16);
const _: () = assert!(core::mem::offset_of!(kstls_cache_slot, tp) == 0);
const _: () = assert!(core::mem::offset_of!(kstls_cache_slot, dtv_offset) == 8);
const _: () = assert!(core::mem::size_of::<kstls_cache_dtv_entry>() == 16);
const _: () = assert!(core::mem::offset_of!(kstls_cache_dtv_entry, module) == 0);
const _: () = assert!(core::mem::offset_of!(kstls_cache_dtv_entry, block) == 8);
const _: () = assert!(core::mem::offset_of!(kstls_get_addr, addr) == 16);
