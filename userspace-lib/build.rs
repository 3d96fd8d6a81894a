// SPDX-License-Identifier: GPL-2.0
//! Rebuild when the generated ABI bindings (see `src/uapi.rs`) change.
fn main() {
    println!("cargo:rerun-if-env-changed=KSTLS_UAPI_RS");
    if let Ok(path) = std::env::var("KSTLS_UAPI_RS") {
        println!("cargo:rerun-if-changed={path}");
    }
}
