// SPDX-License-Identifier: GPL-2.0

//! Example: one TLS image registered with kstls through the `kstls` crate, used by several
//! threads at once.
//!
//! The image is what a `PT_TLS` segment describes: 24 bytes of `.tdata`, then `.tbss` up to
//! 200 bytes, every block at 8 modulo 64. Each thread asks for its block and checks that the
//! kernel copied `.tdata`, zeroed `.tbss` and aligned it as asked, fills it with its own byte,
//! waits until every thread has done the same, and checks that its block still holds only its
//! byte. The main thread then checks that the blocks are distinct and do not overlap, that its
//! own block was not touched, and that a thread started after the others exited gets a fresh
//! block. It prints what it does and exits with status 1 on any mismatch.
//!
//! Run it where `kstls.ko` is loaded, e.g. in the project's guest:
//! `make vm-run CMD=./build/selftests/rust_crate/threads`.

use std::process::ExitCode;
use std::sync::Barrier;
use std::thread;

use kstls::Image;
use kstls::Module;

const THREADS: usize = 8;
const TDATA: &[u8; 24] = b"kstls .tdata, per thread";
const MEMSZ: usize = 200;
const ALIGN: usize = 64;
const ALIGN_OFFSET: usize = 8;

/// The byte thread `i` fills its block with (the main thread uses `MAIN_BYTE`).
fn byte_of(i: usize) -> u8 {
    0xa0 + i as u8
}
const MAIN_BYTE: u8 = 0x5a;

/// The calling thread's block, checked as the kernel must hand it out the first time.
fn fresh_block(module: &Module) -> Result<&'static mut [u8], String> {
    let p = module
        .tls_addr(0)
        .map_err(|e| format!("tls_addr(0) failed: {e}"))?;
    let addr = p as usize;
    if addr % ALIGN != ALIGN_OFFSET {
        return Err(format!(
            "block at {addr:#x} is at {} modulo {ALIGN}, not {ALIGN_OFFSET}",
            addr % ALIGN
        ));
    }
    let last = module.tls_addr(MEMSZ as u64 - 1);
    if last != Ok(p.wrapping_add(MEMSZ - 1)) {
        return Err(format!(
            "tls_addr({}) is {last:?}, not block + {}",
            MEMSZ - 1,
            MEMSZ - 1
        ));
    }
    // SAFETY: kstls gave this thread MEMSZ bytes at `p`; they stay valid until the thread exits
    // or the module is unregistered, and `main` unregisters it only after joining every thread
    // (the `'static` is not used past that).
    let block = unsafe { std::slice::from_raw_parts_mut(p, MEMSZ) };
    if block[..TDATA.len()] != TDATA[..] {
        return Err(format!(
            ".tdata not copied: {:?}",
            String::from_utf8_lossy(&block[..TDATA.len()])
        ));
    }
    if let Some(k) = block[TDATA.len()..].iter().position(|&b| b != 0) {
        let at = TDATA.len() + k;
        return Err(format!(".tbss byte {at} is {:#x}, not 0", block[at]));
    }
    Ok(block)
}

/// What thread `i` does; returns its block's address. Every thread reaches the barrier once,
/// whatever happens, so that a failure in one does not hang the others.
fn run_thread(i: usize, module: &Module, barrier: &Barrier) -> Result<usize, String> {
    let block = fresh_block(module).map(|b| {
        b.fill(byte_of(i));
        b
    });
    barrier.wait();
    let block = block?;
    let addr = block.as_ptr() as usize;
    let again = module
        .tls_addr(0)
        .map_err(|e| format!("second tls_addr(0): {e}"))?;
    if again as usize != addr {
        return Err(format!(
            "second tls_addr(0) is {again:p}, the first was {addr:#x}"
        ));
    }
    if let Some(k) = block.iter().position(|&b| b != byte_of(i)) {
        return Err(format!(
            "byte {k} of the block is {:#x}: another thread wrote it",
            block[k]
        ));
    }
    Ok(addr)
}

fn main() -> ExitCode {
    let image = Image::new(TDATA, MEMSZ as u64).with_align(ALIGN as u64, ALIGN_OFFSET as u64);
    let module = match Module::register(&image) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("threads: cannot register the image: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "registered a {MEMSZ}-byte image ({} bytes .tdata, {ALIGN_OFFSET} mod {ALIGN}) as module {:#x}",
        TDATA.len(),
        module.id()
    );
    let mut failures = 0;
    let mut fail = |what: String| {
        println!("FAIL: {what}");
        failures += 1;
    };

    // The main thread's own block, which no other thread may touch.
    let main_block = match fresh_block(&module) {
        Ok(b) => {
            b.fill(MAIN_BYTE);
            Some(b)
        }
        Err(e) => {
            fail(format!("main thread: {e}"));
            None
        }
    };

    let barrier = Barrier::new(THREADS);
    let results: Vec<Result<usize, String>> = thread::scope(|s| {
        let threads: Vec<_> = (0..THREADS)
            .map(|i| {
                let (module, barrier) = (&module, &barrier);
                s.spawn(move || run_thread(i, module, barrier))
            })
            .collect();
        threads
            .into_iter()
            .map(|t| {
                t.join()
                    .unwrap_or_else(|_| Err("the thread panicked".into()))
            })
            .collect()
    });
    let mut addrs = Vec::new();
    for (i, r) in results.into_iter().enumerate() {
        match r {
            Ok(addr) => {
                println!(
                    "thread {i}: block at {addr:#x}: .tdata copied, .tbss zeroed, \
                     {ALIGN_OFFSET} mod {ALIGN}, kept its own writes"
                );
                addrs.push(addr);
            }
            Err(e) => fail(format!("thread {i}: {e}")),
        }
    }
    addrs.sort_unstable();
    if addrs.windows(2).any(|w| w[1] - w[0] < MEMSZ) {
        fail(format!("blocks overlap: {addrs:#x?}"));
    } else if addrs.len() == THREADS {
        println!("{THREADS} threads, {THREADS} distinct blocks that do not overlap");
    }
    if let Some(b) = main_block {
        if b.iter().all(|&x| x == MAIN_BYTE) {
            println!("main thread: its block at {:p} is unchanged", b.as_ptr());
        } else {
            fail("main thread: its block was written by another thread".into());
        }
    }

    // The threads above have exited: their blocks are reclaimed, and a new thread gets a block
    // initialised afresh, even if at an address one of them had.
    match thread::scope(|s| {
        s.spawn(|| fresh_block(&module).map(|b| b.as_ptr() as usize))
            .join()
    }) {
        Ok(Ok(p)) => println!("a later thread gets a fresh block at {p:#x}"),
        Ok(Err(e)) => fail(format!("later thread: {e}")),
        Err(_) => fail("later thread panicked".into()),
    }

    match module.stats(0) {
        Ok(st) => println!(
            "kstls counters of the module: {} blocks allocated, {} alive, {} kernel lookups",
            st.allocs, st.blocks, st.lookups
        ),
        Err(e) => fail(format!("stats: {e}")),
    }
    if let Err(e) = module.unregister() {
        fail(format!("unregister: {e}"));
    }
    if failures == 0 {
        println!("threads: all checks passed");
        ExitCode::SUCCESS
    } else {
        println!("threads: {failures} check(s) failed");
        ExitCode::FAILURE
    }
}
