// SPDX-License-Identifier: GPL-2.0

//! Example: `Module::register_self` on the program's own executable, and the typed errors of
//! the `kstls` crate.
//!
//! `register_self` registers the `PT_TLS` segment of the ELF module the crate is linked into,
//! here this executable, whose thread-local data includes `MARKER` below. Every thread then has
//! a kstls block that starts as a copy of the executable's TLS image, so the marker's initial
//! bytes are found in it; the program's own `MARKER` is elsewhere (the crate does not reroute
//! `thread_local!`, which an executable reaches through `%fs`), and writes to one do not show in
//! the other. Then come the errors: arguments the kernel refuses, each reported as its own
//! `kstls::Error` variant, and a stale module id after `unregister`. It prints what it does
//! and exits with status 1 on any mismatch.
//!
//! Run it where `kstls.ko` is loaded, e.g. in the project's guest:
//! `make vm-run CMD=./build/selftests/rust_crate/self_register`.

use std::process::ExitCode;
use std::thread;

use kstls::Error;
use kstls::Image;
use kstls::Module;

thread_local! {
    /// Initialised data, so it lives in the executable's `.tdata`.
    static MARKER: [u8; 16] = const { *b"kstls-marker-042" };
}

/// The address of the calling thread's block of `module`, and the offset of `MARKER`'s initial
/// bytes in it.
fn find_marker(module: &Module) -> Result<(usize, usize), String> {
    let p = module
        .tls_addr(0)
        .map_err(|e| format!("tls_addr(0): {e}"))?;
    // SAFETY: kstls gave this thread `size()` bytes at `p`, valid until the thread exits or the
    // module is unregistered, neither of which happens while `block` is used.
    let block = unsafe { std::slice::from_raw_parts(p, module.size() as usize) };
    let want = MARKER.with(|m| *m);
    block
        .windows(want.len())
        .position(|w| w == want)
        .map(|off| (p as usize, off))
        .ok_or_else(|| format!("the marker is not in the block at {p:p}"))
}

/// Checks that `r` failed with `want`, and says so.
fn expect_error<T>(what: &str, r: Result<T, Error>, want: Error) -> Result<(), String> {
    match r {
        Err(e) if e == want => {
            println!(
                "{what}: refused as expected: {e} [{e:?}, errno {}]",
                e.errno()
            );
            Ok(())
        }
        Err(e) => Err(format!("{what}: expected {want:?}, got {e:?} ({e})")),
        Ok(_) => Err(format!("{what}: expected {want:?}, but it succeeded")),
    }
}

fn run() -> Result<(), String> {
    kstls::init().map_err(|e| format!("kstls::init: {e}"))?;
    let me = Module::register_self().map_err(|e| format!("Module::register_self: {e}"))?;
    println!(
        "registered this executable's PT_TLS ({} bytes per thread) as module {:#x}",
        me.size(),
        me.id()
    );
    let again = Module::register_self().map_err(|e| format!("second register_self: {e}"))?;
    if again.id() != me.id() {
        return Err(format!("second register_self gave id {:#x}", again.id()));
    }
    println!("registering it again gives the same id");

    let (block, off) = find_marker(&me)?;
    let own = MARKER.with(|m| m.as_ptr() as usize);
    println!(
        "main thread: kstls block at {block:#x} holds MARKER's initial bytes at offset {off}; \
         the program's own MARKER is at {own:#x}"
    );
    if block + off == own {
        return Err("the kstls copy is the program's own MARKER".into());
    }
    // SAFETY: The marker was found inside this thread's block, which is still registered.
    unsafe { ((block + off) as *mut u8).write(b'K') };
    if MARKER.with(|m| m[0]) != b'k' {
        return Err("writing the kstls copy changed the program's own MARKER".into());
    }
    println!("writing the kstls copy leaves the program's thread_local! alone");

    let other = thread::scope(|s| s.spawn(|| find_marker(&me)).join())
        .map_err(|_| "the second thread panicked".to_string())??;
    if other.0 == block {
        return Err("a second thread got the main thread's block".into());
    }
    println!(
        "a second thread: its own block at {:#x}, a fresh copy (marker at offset {})",
        other.0, other.1
    );

    expect_error(
        "tls_addr(size()), one past the block",
        me.tls_addr(me.size()),
        Error::InvalidArgument,
    )?;
    expect_error(
        "an image aligned to 3 bytes",
        Module::register(&Image::new(b"x", 8).with_align(3, 0)),
        Error::InvalidArgument,
    )?;
    expect_error(
        "an image with memsz below its .tdata",
        Module::register(&Image::new(b"0123456789", 4)),
        Error::InvalidArgument,
    )?;
    expect_error(
        "a 1 TiB image",
        Module::register(&Image::new(&[], 1 << 40)),
        Error::TooLarge,
    )?;

    match kstls::stats() {
        Ok(st) => println!(
            "kstls counters of this process: blocks alive {}, bytes {}",
            st.blocks, st.block_bytes
        ),
        Err(e) => return Err(format!("kstls::stats: {e}")),
    }

    // Both handles name one registration: unregistering through one makes the id stale for the
    // other, which kstls refuses (never a wrong address).
    again.unregister().map_err(|e| format!("unregister: {e}"))?;
    expect_error(
        "tls_addr(0) after unregister",
        me.tls_addr(0),
        Error::InvalidArgument,
    )?;
    expect_error(
        "a second unregister",
        me.unregister(),
        Error::InvalidArgument,
    )?;
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => {
            println!("self_register: all checks passed");
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("FAIL: {e}");
            ExitCode::FAILURE
        }
    }
}
