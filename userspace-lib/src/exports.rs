// SPDX-License-Identifier: GPL-2.0

//! The public symbols in the static archive (feature `archive`): `libkstls.a` is for linking
//! into one module privately, so its public symbols are hidden there, and a shared object that
//! links it never exports (or interposes) `__tls_get_addr`.

core::arch::global_asm!(
    ".hidden __tls_get_addr",
    ".hidden kstls_init",
    ".hidden kstls_fd",
    ".hidden kstls_register",
    ".hidden kstls_unregister",
    ".hidden kstls_register_self",
    ".hidden kstls_unregister_self",
    ".hidden kstls_get_tls_addr",
);
