// SPDX-License-Identifier: GPL-2.0
//! Points `src/uapi.rs` at the ABI bindings generated from `uapi/linux/kstls.h`: `KSTLS_UAPI_RS`
//! when set (the Makefile sets it), else the file `make -C userspace-lib lib` writes in the
//! checkout, so that a Rust program depending on the crate by path builds with plain
//! `cargo build`.
//! Rebuilds when that file changes.

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=KSTLS_UAPI_RS");
    let path = match std::env::var_os("KSTLS_UAPI_RS") {
        Some(p) => PathBuf::from(p),
        None => {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../build/lib/gen/uapi_generated.rs")
        }
    };
    if !path.is_file() {
        eprintln!(
            "kstls: no ABI bindings at {}: run `make -C userspace-lib lib` in the kstls checkout \
             first (it generates them from uapi/linux/kstls.h with bindgen), or set KSTLS_UAPI_RS",
            path.display()
        );
        std::process::exit(1);
    }
    println!("cargo:rerun-if-changed={}", path.display());
    println!("cargo:rustc-env=KSTLS_UAPI_RS={}", path.display());
}
