// SPDX-License-Identifier: GPL-2.0

//! The assembly entry points of the C library, the top of the crate (feature `capi` only): the
//! exported `__tls_get_addr`, its Rust slow path, and the forwarding of host module ids to the
//! host's own `__tls_get_addr`. A Rust program that depends on the crate must keep the host's
//! `__tls_get_addr`, so it gets none of this, not even a local symbol.
//!
//! Every entry does the cache lookup of `cache.rs` with the symbols and immediates that file
//! defines (`EMPTY_CACHE`, `FAST`, `cache::ASM_*`), in its own `global_asm!` block, and falls
//! back to a Rust function of this file with the stack aligned. Another entry (a TLS descriptor
//! resolver, say) goes beside `__tls_get_addr` the same way.
//!
//! **`__tls_get_addr`** is called by compiler-generated general- and local-dynamic TLS
//! sequences with `%rdi` pointing to a `tls_index` and, because of GCC PR58066, possibly with a
//! stack that is not 16-byte aligned. It therefore does its fast path without touching the
//! stack, tail-jumps to the host's own `__tls_get_addr` (which realigns itself) for module ids
//! below `KSTLS_MODULE_ID_MIN`, and only aligns the stack (keeping `%rbp` as the frame pointer,
//! with CFI so unwinders and debuggers follow) before calling the Rust slow path. It clobbers
//! only registers the psABI lets a call clobber. On a hit in the home slot: 24 instructions and
//! 8 loads, one conditional branch; no syscall, no lock, no atomic read-modify-write, no store.
//! A host module's id (below `KSTLS_MODULE_ID_MIN`, never equal to an entry's) is looked up in
//! `EMPTY_CACHE` whatever `FAST.delta` says, chosen with a `cmov` rather than a branch: the
//! mapped cache may be withdrawn and unmapped at any moment (the last kstls module of this copy
//! unregistered on another thread), and a host module's accesses go on regardless, so they must
//! never read it. They miss there, are told apart and forwarded; a kstls id then probes the next
//! slots out of line. Module id 0, which no libc hands out, may match an empty entry and get
//! `offset` back, as undefined there as in glibc.

use core::arch::asm;
use core::arch::global_asm;
use core::ffi::c_void;
use core::mem::offset_of;
use core::mem::size_of;
use core::sync::atomic::AtomicUsize;
use core::sync::atomic::Ordering::Acquire;
use core::sync::atomic::Ordering::Release;

use crate::cache;
use crate::cache::EMPTY_CACHE;
use crate::cache::FAST;
use crate::context;
use crate::die;
use crate::host;
use crate::uapi::kstls_tls_index;
use crate::uapi::KSTLS_MODULE_ID_MIN;

global_asm!(
    ".text",
    ".globl __tls_get_addr",
    ".type __tls_get_addr, @function",
    ".p2align 4",
    "__tls_get_addr:",
    "kstls_tga_local:",                 // a local alias, for `tls_get_addr_entry`
    ".cfi_startproc",
    "mov (%rdi), %rax",                 // rax = module id
    "mov %fs:0, %rsi",                  // rsi = thread pointer (the psABI self-pointer)
    "lea {empty}(%rip), %r8",
    "mov %rax, %rcx",
    "shr $32, %rcx",                    // 0 for a host module's id, below KSTLS_MODULE_ID_MIN,
    "cmovnz {delta}(%rip), %rcx",       // whose lookup must never read the mapped cache
    "add %rcx, %r8",                    // r8 = the cache (EMPTY_CACHE while there is none)
    "movabs ${mul}, %rdx",
    "imul %rsi, %rdx",
    "shr ${shift4}, %rdx",
    "and $-16, %rdx",                   // rdx = hash * sizeof(struct kstls_cache_slot)
    "movzbl %al, %ecx",                 // the id's registry slot modulo dtv_entries: another
    "shl $4, %ecx",                     // module of that index fails the compare below
    "add {slots}+8(%r8,%rdx), %rcx",    // + dtv_offset (always inside the mapping)
    "mov 8(%r8,%rcx), %r9",             // r9 = block, then
    "mov (%r8,%rcx), %r10",             // the entry's module (the full id, generation
    "xor %rax, %r10",                   // included), then
    "mov {slots}(%r8,%rdx), %r11",      // the slot's tp, last
    "xor %rsi, %r11",
    "or %r11, %r10",
    "jnz 6f",                           // not both equal: the miss path
    "mov 8(%rdi), %rax",
    "add %r9, %rax",                    // block + offset
    "ret",
    "6:",                               // a miss, with rax = module id
    "mov %rax, %rcx",
    "shr $32, %rcx",
    "jz 10f",                           // below KSTLS_MODULE_ID_MIN: the host's module
    "test %r11, %r11",
    "jz 9f",                            // this thread's slot without the entry: the slow path
    "mov ${probes1}, %eax",             // else the next nr_probes - 1 slots, rax counting
    "7:",
    "add $16, %rdx",
    "and ${mask16}, %rdx",
    "movzbl (%rdi), %ecx",
    "shl $4, %ecx",
    "add {slots}+8(%r8,%rdx), %rcx",
    "mov 8(%r8,%rcx), %r9",             // the same order: block, module, tp
    "mov (%r8,%rcx), %r10",
    "cmp {slots}(%r8,%rdx), %rsi",
    "je 3f",
    "dec %eax",
    "jnz 7b",
    "jmp 9f",
    "3:",                               // this thread's slot
    "cmp (%rdi), %r10",
    "jne 9f",
    "mov 8(%rdi), %rax",
    "add %r9, %rax",
    "ret",
    "10:",
    "mov {host}(%rip), %rax",
    "cmp $1, %rax",
    "jbe 9f",                           // 0: not looked up yet, 1: there is none
    "jmp *%rax",                        // the host's __tls_get_addr, same stack, same %rdi
    "9:",
    "push %rbp",
    ".cfi_adjust_cfa_offset 8",
    ".cfi_rel_offset %rbp, 0",
    "mov %rsp, %rbp",
    ".cfi_def_cfa_register %rbp",
    "and $-16, %rsp",
    "call {slow}",
    "mov %rbp, %rsp",
    "pop %rbp",
    ".cfi_def_cfa %rsp, 8",
    ".cfi_restore %rbp",
    "ret",
    ".cfi_endproc",
    ".size __tls_get_addr, . - __tls_get_addr",
    empty = sym EMPTY_CACHE,
    delta = sym FAST,
    host = sym HOST_TLS_GET_ADDR,
    slow = sym tls_get_addr_slow,
    mul = const cache::ASM_HASH_MUL,
    shift4 = const cache::ASM_HASH_SHIFT,
    mask16 = const cache::ASM_SLOT_MASK,
    slots = const cache::ASM_SLOTS,
    probes1 = const cache::ASM_PROBES_AFTER_HOME,
    options(att_syntax)
);

// The psABI's `tls_index` as the entry reads it: the module id at `(%rdi)` (its low byte by
// `movzbl`), the offset at `8(%rdi)`.
const _: () = assert!(size_of::<kstls_tls_index>() == 16);
const _: () = assert!(offset_of!(kstls_tls_index, module) == 0);
const _: () = assert!(offset_of!(kstls_tls_index, offset) == 8);

/// The address of our own `__tls_get_addr` entry (not the one the symbol resolves to).
fn tls_get_addr_entry() -> usize {
    let a: usize;
    // SAFETY: Only computes an address.
    unsafe {
        asm!("lea {}, [rip + kstls_tga_local]", out(reg) a, options(nomem, nostack, preserves_flags))
    };
    a
}

/// The host's `__tls_get_addr`: 0 not looked up yet, 1 there is none, else its address. The
/// assembly entry jumps to it directly once known.
static HOST_TLS_GET_ADDR: AtomicUsize = AtomicUsize::new(0);

const NO_HOST: usize = 1;

type TlsGetAddr = unsafe extern "C" fn(*const kstls_tls_index) -> *mut c_void;

/// The host's `__tls_get_addr`, looked up once (racing threads compute the same answer). Never
/// our own entry: a wrong symbol table must not turn into endless recursion.
fn host_tls_get_addr() -> Option<TlsGetAddr> {
    let mut f = HOST_TLS_GET_ADDR.load(Acquire);
    if f == 0 {
        f = host::find_tls_get_addr()
            .filter(|&f| f != tls_get_addr_entry())
            .unwrap_or(NO_HOST);
        HOST_TLS_GET_ADDR.store(f, Release);
    }
    // SAFETY: `f` is the address of the interpreter's exported `__tls_get_addr`, a function
    // with this signature.
    (f != NO_HOST).then(|| unsafe { core::mem::transmute::<usize, TlsGetAddr>(f) })
}

/// The slow path of `__tls_get_addr`, called by the assembly entry with the stack aligned: an
/// id of the host's dynamic linker goes to the host's `__tls_get_addr`, a kstls id to the
/// `GET_ADDR` ioctl. Never returns a wrong address: any failure ends the process.
///
/// # Safety
///
/// `ti` points to a readable `tls_index`, as the psABI guarantees for `__tls_get_addr`.
unsafe extern "C" fn tls_get_addr_slow(ti: *const kstls_tls_index) -> *mut c_void {
    // SAFETY: The compiler-generated argument is a valid `tls_index`.
    let ti = unsafe { &*ti };
    if ti.module < KSTLS_MODULE_ID_MIN {
        let Some(host) = host_tls_get_addr() else {
            die::die(b"kstls: __tls_get_addr: module id below KSTLS_MODULE_ID_MIN and no host __tls_get_addr to forward it to\n");
        };
        // SAFETY: `host` is the host dynamic linker's `__tls_get_addr`, which takes the same
        // argument.
        return unsafe { host(ti) };
    }
    match context::get_addr(ti.module, ti.offset) {
        Ok(addr) => addr as *mut c_void,
        Err(e) => die::die_errno(b"kstls: __tls_get_addr: KSTLS_IOC_GET_ADDR failed", e),
    }
}
