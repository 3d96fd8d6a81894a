// SPDX-License-Identifier: GPL-2.0

//! The ABI of `/dev/kstls`, generated from `uapi/linux/kstls.h` by bindgen (the Makefile runs it into
//! the build directory and passes the file's path in `KSTLS_UAPI_RS`), so the library and the
//! kernel module share the one C definition. The cache layout the fast path builds in is
//! asserted where it is built in, in `cache.rs`.

#![allow(non_camel_case_types, non_upper_case_globals, dead_code)]

include!(env!(
    "KSTLS_UAPI_RS",
    "build libkstls with `make -C userspace-lib`, which generates the uapi bindings"
));

const _: () = assert!(core::mem::offset_of!(kstls_get_addr, addr) == 16);
