// SPDX-License-Identifier: GPL-2.0
//! Links libkstls.a whole (its symbols are hidden: they stay private to this cdylib), as the
//! README says: its constructor registers the library, whatever the crate references. The
//! directory comes from KSTLS_LIB_DIR (build/lib of the checkout by default).
fn main() {
    let dir = std::env::var("KSTLS_LIB_DIR")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../../../build/lib").into());
    println!("cargo:rerun-if-env-changed=KSTLS_LIB_DIR");
    println!("cargo:rerun-if-changed={dir}/libkstls.a");
    println!("cargo:rustc-link-search=native={dir}");
    println!("cargo:rustc-link-lib=static:+whole-archive=kstls");
}
