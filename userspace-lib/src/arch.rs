// SPDX-License-Identifier: GPL-2.0

//! x86-64 code: the exported `__tls_get_addr` entry (assembly, with the fast path), the thread
//! pointer, and the raw system calls rustix does not offer.
//!
//! `__tls_get_addr` is called by compiler-generated general- and local-dynamic TLS sequences
//! with `%rdi` pointing to a `tls_index` and, because of GCC PR58066, possibly with a stack that
//! is not 16-byte aligned. The entry therefore does its fast path without touching the stack,
//! tail-jumps to the host's own `__tls_get_addr` (which realigns itself) for module ids below
//! `KSTLS_MODULE_ID_MIN`, and only aligns the stack (keeping `%rbp` as the frame pointer, with
//! CFI so unwinders and debuggers follow) before calling the Rust slow path. It clobbers only
//! registers the psABI lets a call clobber.
//!
//! The fast path is the cache lookup documented in `uapi/kstls.h`, with the cache version's
//! geometry built in as immediates (`KSTLS_CACHE_SLOTS_OFFSET`, `_SLOTS_LOG2`, `_PROBES`,
//! `_DTV_ENTRIES`; `map_cache` publishes no cache whose header disagrees): hash `%fs:0` to its
//! home slot, load the slot's `dtv_offset`, the entry's block and module, and the slot's `tp`
//! last (x86-64 keeps loads in program order, which is all the protocol asks of a reader), and
//! take one branch on "module and tp both equal". The cache is found as `EMPTY_CACHE` plus the
//! wipe-on-fork `FAST.delta`: while there is no cache (or in a forked child) that is the
//! all-zero `EMPTY_CACHE`, whose slots match no thread, so the entry needs no test for it. 21
//! instructions and 8 loads on a hit in the home slot, one conditional branch; no syscall, no
//! lock, no atomic read-modify-write, no store. A miss first tells a host module's id (below
//! `KSTLS_MODULE_ID_MIN`, never equal to an entry's) apart and forwards it, then probes the next
//! slots out of line; module id 0, which no libc hands out, may match an empty entry and get
//! `offset` back, as undefined there as in glibc.
//!
//! The entry exists only in the C library (feature `capi`): a Rust program that depends on the
//! crate must keep the host's `__tls_get_addr`, so it gets no such symbol, not even a local one.

use core::arch::asm;
#[cfg(feature = "capi")]
use core::arch::global_asm;
#[cfg(feature = "capi")]
use core::mem::offset_of;

#[cfg(feature = "capi")]
use crate::context::FastState;
#[cfg(feature = "capi")]
use crate::context::EMPTY_CACHE;
#[cfg(feature = "capi")]
use crate::context::FAST;
#[cfg(feature = "capi")]
use crate::host::HOST_TLS_GET_ADDR;
#[cfg(feature = "capi")]
use crate::uapi::{
    KSTLS_CACHE_DTV_ENTRIES,
    KSTLS_CACHE_HASH_MUL,
    KSTLS_CACHE_PROBES,
    KSTLS_CACHE_SLOTS_LOG2,
    KSTLS_CACHE_SLOTS_OFFSET, //
};

#[cfg(feature = "capi")]
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
    "add {delta}(%rip), %r8",           // r8 = the cache (EMPTY_CACHE while there is none)
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
    slow = sym crate::capi::tls_get_addr_slow,
    mul = const KSTLS_CACHE_HASH_MUL,
    shift4 = const 64 - 4 - KSTLS_CACHE_SLOTS_LOG2,
    mask16 = const ((1u64 << KSTLS_CACHE_SLOTS_LOG2) - 1) << 4,
    slots = const KSTLS_CACHE_SLOTS_OFFSET,
    probes1 = const KSTLS_CACHE_PROBES - 1,
    options(att_syntax)
);

// `FAST.delta` is the word at `FAST` itself; `movzbl` above is `slot & (dtv_entries - 1)` and
// `and $-16` the slot size.
#[cfg(feature = "capi")]
const _: () = assert!(offset_of!(FastState, delta) == 0);
#[cfg(feature = "capi")]
const _: () = assert!(KSTLS_CACHE_DTV_ENTRIES == 256);
#[cfg(feature = "capi")]
const _: () = assert!(core::mem::size_of::<crate::uapi::kstls_cache_slot>() == 16);

// The static archive is for linking into one module privately: its public symbols are hidden
// there, so a shared object that links it never exports (or interposes) `__tls_get_addr`.
#[cfg(feature = "archive")]
global_asm!(
    ".hidden __tls_get_addr",
    ".hidden kstls_init",
    ".hidden kstls_fd",
    ".hidden kstls_register",
    ".hidden kstls_unregister",
    ".hidden kstls_register_self",
    ".hidden kstls_unregister_self",
    ".hidden kstls_get_tls_addr",
);

/// The thread pointer: the psABI self-pointer at `%fs:0`.
///
/// # Safety
///
/// The FS base must point to a thread control block whose first word is its own address (every
/// libc keeps it; a program without libc must set it up, see the README).
#[inline(always)]
pub(crate) unsafe fn thread_pointer() -> u64 {
    let tp: u64;
    // SAFETY: The caller guarantees that %fs:0 is readable.
    unsafe {
        asm!("mov {}, qword ptr fs:[0]", out(reg) tp, options(nostack, readonly, preserves_flags))
    };
    tp
}

/// The address of our own `__tls_get_addr` entry (not the one the symbol resolves to).
#[cfg(feature = "capi")]
pub(crate) fn tls_get_addr_entry() -> usize {
    let a: usize;
    // SAFETY: Only computes an address.
    unsafe {
        asm!("lea {}, [rip + kstls_tga_local]", out(reg) a, options(nomem, nostack, preserves_flags))
    };
    a
}

/// A raw system call with two arguments; returns the raw result (-4095..-1 is an errno).
#[inline]
unsafe fn syscall2(nr: usize, a0: usize, a1: usize) -> isize {
    let ret: isize;
    // SAFETY: The caller passes a system call and arguments that are valid for it.
    unsafe {
        asm!("syscall", inlateout("rax") nr as isize => ret, in("rdi") a0, in("rsi") a1,
             lateout("rcx") _, lateout("r11") _, options(nostack, preserves_flags))
    };
    ret
}

/// A raw system call with six arguments; returns the raw result.
#[inline]
unsafe fn syscall6(nr: usize, a: [usize; 6]) -> isize {
    let ret: isize;
    // SAFETY: The caller passes a system call and arguments that are valid for it.
    unsafe {
        asm!("syscall", inlateout("rax") nr as isize => ret, in("rdi") a[0], in("rsi") a[1],
             in("rdx") a[2], in("r10") a[3], in("r8") a[4], in("r9") a[5],
             lateout("rcx") _, lateout("r11") _, options(nostack, preserves_flags))
    };
    ret
}

const SYS_RT_SIGPROCMASK: usize = 14;
const SYS_ARCH_PRCTL: usize = 158;
#[cfg(feature = "capi")]
const SYS_EXIT_GROUP: usize = 231;
#[cfg(feature = "capi")]
const SYS_TGKILL: usize = 234;
const ARCH_GET_FS: usize = 0x1003;

/// The calling thread's FS base (`arch_prctl(ARCH_GET_FS)`), 0 when it has none.
pub(crate) fn fs_base() -> u64 {
    let mut base: u64 = 0;
    // SAFETY: ARCH_GET_FS writes one u64 to the address given, which is `base`.
    let r = unsafe { syscall2(SYS_ARCH_PRCTL, ARCH_GET_FS, &mut base as *mut u64 as usize) };
    if r < 0 {
        0
    } else {
        base
    }
}

/// How `sigprocmask` changes the mask.
#[cfg(feature = "capi")]
pub(crate) const SIG_UNBLOCK: usize = 1;
pub(crate) const SIG_SETMASK: usize = 2;

/// `rt_sigprocmask(how, &set, &old)` on the kernel's 64-bit signal set; returns the old mask.
pub(crate) fn sigprocmask(how: usize, set: u64) -> u64 {
    let mut old: u64 = 0;
    // SAFETY: Both pointers are to u64 locals, the size of the kernel's sigset on x86-64.
    unsafe {
        syscall6(
            SYS_RT_SIGPROCMASK,
            [
                how,
                &set as *const u64 as usize,
                &mut old as *mut u64 as usize,
                8,
                0,
                0,
            ],
        )
    };
    old
}

/// Sends `sig` to the calling thread.
#[cfg(feature = "capi")]
pub(crate) fn raise(sig: usize) {
    let pid = rustix::process::getpid().as_raw_nonzero().get() as usize;
    let tid = rustix::thread::gettid().as_raw_nonzero().get() as usize;
    // SAFETY: tgkill has no memory arguments.
    unsafe { syscall6(SYS_TGKILL, [pid, tid, sig, 0, 0, 0]) };
}

/// Ends the process with `status`.
#[cfg(feature = "capi")]
pub(crate) fn exit_group(status: usize) -> ! {
    // SAFETY: exit_group has no memory arguments and does not return.
    unsafe { syscall2(SYS_EXIT_GROUP, status, 0) };
    loop {
        core::hint::spin_loop();
    }
}

/// Whether the 8 bytes at `addr` are readable, tested without touching them: the kernel reads
/// them as the new signal mask of `rt_sigprocmask` with an invalid `how`, which fails with
/// `EFAULT` when they cannot be read and with `EINVAL` (changing nothing) when they can. (Unlike
/// `process_vm_readv`, this needs no optional kernel feature.)
pub(crate) fn readable(addr: usize) -> bool {
    const EINVAL: isize = -22;
    // SAFETY: The kernel only reads (and checks) `addr`; the mask is never changed because
    // `how` is invalid.
    let r = unsafe { syscall6(SYS_RT_SIGPROCMASK, [usize::MAX, addr, 0, 8, 0, 0]) };
    r == EINVAL
}
