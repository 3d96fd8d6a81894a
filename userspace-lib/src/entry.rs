// SPDX-License-Identifier: GPL-2.0

//! The assembly entry points of the C library, the top of the crate (feature `capi` only): the
//! exported `__tls_get_addr` and TLS descriptor resolver `kstls_tlsdesc`, their Rust slow path,
//! and the forwarding of host module ids to the host's own `__tls_get_addr`. A Rust program
//! that depends on the crate must keep the host's `__tls_get_addr`, so it gets none of this, not
//! even a local symbol.
//!
//! Every entry does the cache lookup of `cache.rs` with the symbols and immediates that file
//! defines (`EMPTY_CACHE`, `FAST`, `cache::ASM_*`), all in one `global_asm!` block, and falls
//! back to a Rust function of this file with the stack aligned. Probing past the home slot is one
//! routine, `kstls_probe`, which both entries call out of line.
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
use core::sync::atomic::AtomicU32;
use core::sync::atomic::AtomicUsize;
use core::sync::atomic::Ordering::Acquire;
use core::sync::atomic::Ordering::Release;

use crate::arch;
use crate::cache;
use crate::cache::EMPTY_CACHE;
use crate::cache::FAST;
use crate::context;
use crate::context::Failed;
use crate::die;
use crate::host;
use crate::selfreg::Entries;
use crate::uapi::kstls_tls_index;
use crate::uapi::KSTLS_MODULE_ID_MIN;

global_asm!(
    // A push or pop with its call-frame information, for the entries below.
    ".macro kstls_push reg",
    "push \\reg",
    ".cfi_adjust_cfa_offset 8",
    ".cfi_rel_offset \\reg, 0",
    ".endm",
    ".macro kstls_pop reg",
    "pop \\reg",
    ".cfi_adjust_cfa_offset -8",
    ".cfi_restore \\reg",
    ".endm",
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
    "call kstls_probe",                 // else the next nr_probes - 1 slots
    "test %rax, %rax",
    "jz 9f",
    "ret",
    "10:",
    "mov {host}(%rip), %rax",
    "cmp $1, %rax",
    "jbe 9f",                           // 0: not looked up yet, 1: there is none
    "jmp *%rax",                        // the host's __tls_get_addr, same stack, same %rdi
    "9:",
    "kstls_push %rbp",
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
    "",
    // kstls_probe: the nr_probes - 1 slots after the home slot, out of line, for both entries.
    // In: rdi = &tls_index, rsi = thread pointer, r8 = the cache, rdx = the home slot's offset
    // in the slot array. Out: rax = block + offset, or 0 when the thread has no slot there or
    // its slot has no entry for the module. Clobbers rcx, rdx, r9, r10 and flags; no stack.
    ".p2align 4",
    ".type kstls_probe, @function",
    "kstls_probe:",
    ".cfi_startproc",
    "mov ${probes1}, %eax",             // rax counting
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
    "ret",                              // rax = 0
    "3:",                               // this thread's slot
    "xor %eax, %eax",
    "cmp (%rdi), %r10",
    "jne 4f",
    "mov 8(%rdi), %rax",
    "add %r9, %rax",
    "4:",
    "ret",
    ".cfi_endproc",
    ".size kstls_probe, . - kstls_probe",
    "",
    // The TLS descriptor resolver, `kstls_tlsdesc`: what a descriptor `{kstls_tlsdesc, &tls_index}`
    // calls. The TLSDESC convention (x86-64, `-mtls-dialect=gnu2`): the call site is `lea
    // x@tlsdesc(%rip), %rax; call *x@tlscall(%rax)`, so `%rax` points to the descriptor, whose
    // second word is here a `tls_index` holding a kstls id; the resolver returns in `%rax` the
    // variable's offset from the thread pointer (block + offset - tp) and preserves every other
    // register, vector state included; only the flags may change. It assumes nothing of the stack's
    // alignment (the compiler's call site keeps none), and GCC keeps no red zone in functions that
    // make such calls, so pushing is free.
    //
    // The hit path is the lookup of `__tls_get_addr` with three registers pushed (the thread
    // pointer is read from `%fs:0` where it is needed rather than kept in one). A miss saves the
    // four more that `kstls_probe` uses and probes the next slots; the slow path (a first touch,
    // strict mode, a thread without a slot) saves the last caller-saved register and the extended
    // state its Rust code can change (`tlsdesc_slow`, which reaches nothing but this crate's code
    // and system calls): with `xsave` and the mask `arch::xsave_mask` gives (x87 and SSE for the
    // x86-64 baseline; never AMX tiles, PKRU or what the build cannot touch), in a 64-byte-aligned
    // area of the size `kstls_xsave_size` works out from CPUID leaf 0xD; `fxsave` without XSAVE.
    // The system calls preserve every register of user extended state. Then it calls the Rust
    // code with the stack aligned.
    ".globl kstls_tlsdesc",
    ".type kstls_tlsdesc, @function",
    ".p2align 4",
    "kstls_tlsdesc:",
    "kstls_tlsdesc_local:",             // a local alias, for `tlsdesc_entry`
    ".cfi_startproc",
    "mov 8(%rax), %rax",                // rax = the descriptor's tls_index
    "kstls_push %rcx",
    "kstls_push %rdx",
    "kstls_push %rsi",
    "lea {empty}(%rip), %rcx",
    "add {delta}(%rip), %rcx",          // rcx = the cache (EMPTY_CACHE while there is none)
    "movabs ${mul}, %rdx",
    "imul %fs:0, %rdx",
    "shr ${shift4}, %rdx",
    "and $-16, %rdx",
    "lea {slots}(%rcx,%rdx), %rdx",     // rdx = the thread's home slot
    "movzbl (%rax), %esi",              // the id's registry slot modulo dtv_entries
    "shl $4, %esi",
    "add 8(%rdx), %rsi",                // + dtv_offset
    "add %rcx, %rsi",                   // rsi = the entry
    "mov 8(%rsi), %rcx",                // rcx = block, then
    "mov (%rsi), %rsi",                 // the entry's module, then
    "xor (%rax), %rsi",
    "mov (%rdx), %rdx",                 // the slot's tp, last
    "xor %fs:0, %rdx",
    "or %rdx, %rsi",
    "jnz .Lkstls_tlsdesc_miss",         // not both equal
    "mov 8(%rax), %rax",
    "add %rcx, %rax",
    "sub %fs:0, %rax",                  // block + offset - tp
    ".Lkstls_tlsdesc_ret:",
    ".cfi_remember_state",
    "kstls_pop %rsi",
    "kstls_pop %rdx",
    "kstls_pop %rcx",
    "ret",
    ".cfi_restore_state",
    ".cfi_def_cfa_offset 32",           // restore_state leaves gas's own count behind
    ".Lkstls_tlsdesc_miss:",            // rax = &tls_index; rcx, rdx, rsi saved
    "kstls_push %rdi",
    "kstls_push %r8",
    "kstls_push %r9",
    "kstls_push %r10",
    "mov %rax, %rdi",                   // kstls_probe's inputs
    "mov %fs:0, %rsi",
    "lea {empty}(%rip), %r8",
    "add {delta}(%rip), %r8",
    "movabs ${mul}, %rdx",
    "imul %rsi, %rdx",
    "shr ${shift4}, %rdx",
    "and $-16, %rdx",
    "call kstls_probe",                 // rax = block + offset, or 0
    "test %rax, %rax",
    "jz .Lkstls_tlsdesc_slow",
    "sub %rsi, %rax",
    ".Lkstls_tlsdesc_pop:",
    ".cfi_remember_state",
    "kstls_pop %r10",
    "kstls_pop %r9",
    "kstls_pop %r8",
    "kstls_pop %rdi",
    "jmp .Lkstls_tlsdesc_ret",
    ".cfi_restore_state",
    ".cfi_def_cfa_offset 64",
    ".Lkstls_tlsdesc_slow:",            // rdi = &tls_index
    "kstls_push %r11",
    "kstls_push %rbp",
    "mov %rsp, %rbp",
    ".cfi_def_cfa_register %rbp",
    "push %rbx",
    ".cfi_rel_offset %rbx, -8",
    "mov %rdi, %rbx",                   // the tls_index, kept across the call
    "call kstls_xsave_size",            // eax = bytes of the save area, 512 for fxsave
    "sub %rax, %rsp",
    "and $-64, %rsp",
    "cmp $512, %eax",
    "je 5f",
    "xor %edx, %edx",                   // the XSAVE header: xsave writes only its first word,
    "mov %rdx, 512(%rsp)",              // xrstor faults on anything but zeroes in the rest
    "mov %rdx, 520(%rsp)",
    "mov %rdx, 528(%rsp)",
    "mov %rdx, 536(%rsp)",
    "mov %rdx, 544(%rsp)",
    "mov %rdx, 552(%rsp)",
    "mov %rdx, 560(%rsp)",
    "mov %rdx, 568(%rsp)",
    "mov {xmask}(%rip), %eax",          // what the slow path can change (arch::xsave_mask)
    "xor %edx, %edx",
    "xsave64 (%rsp)",
    "mov %rbx, %rdi",
    "call {dslow}",
    "mov %rax, %rbx",
    "mov {xmask}(%rip), %eax",
    "xor %edx, %edx",
    "xrstor64 (%rsp)",
    "jmp 6f",
    "5:",
    "fxsave64 (%rsp)",
    "mov %rbx, %rdi",
    "call {dslow}",
    "mov %rax, %rbx",
    "fxrstor64 (%rsp)",
    "6:",
    "mov %rbx, %rax",
    "sub %fs:0, %rax",                  // the address the slow path returned, minus tp
    "mov -8(%rbp), %rbx",
    ".cfi_restore %rbx",
    "mov %rbp, %rsp",
    "pop %rbp",
    ".cfi_def_cfa %rsp, 72",
    ".cfi_restore %rbp",
    "kstls_pop %r11",
    "jmp .Lkstls_tlsdesc_pop",
    ".cfi_endproc",
    ".size kstls_tlsdesc, . - kstls_tlsdesc",
    "",
    // kstls_xsave_size: eax = the bytes the slow path saves the extended state in, and
    // XSAVE_MASK the components it saves: when the OS enabled XSAVE (CPUID.1:ECX.OSXSAVE), the
    // mask is XCR0 & arch::SLOW_PATH_STATE (arch::xsave_mask) and the size that of a standard
    // XSAVE area up to the end of the highest component of the mask (arch::xsave_size: the
    // legacy region and header, then each component's CPUID (0xD, i) size EAX plus offset EBX);
    // else 512 (FXSAVE). Looked up once, the mask stored before the size. Preserves all but rax.
    ".p2align 4",
    ".type kstls_xsave_size, @function",
    "kstls_xsave_size:",
    ".cfi_startproc",
    "mov {xsize}(%rip), %eax",
    "test %eax, %eax",
    "jz 2f",
    "ret",
    "2:",
    "kstls_push %rbx",
    "kstls_push %rcx",
    "kstls_push %rdx",
    "kstls_push %rsi",
    "kstls_push %rdi",
    "kstls_push %r8",
    "mov $1, %eax",
    "cpuid",
    "mov $512, %esi",                   // esi = the size
    "bt $27, %ecx",
    "jnc 3f",
    "xor %ecx, %ecx",
    "xgetbv",                           // edx:eax = XCR0
    "and ${state}, %eax",               // the mask, below bit 32
    "mov %eax, %edi",
    "mov %eax, {xmask}(%rip)",
    "mov ${legacy}, %esi",
    "mov $2, %r8d",                     // r8 = component
    "4:",
    "bt %r8d, %edi",
    "jnc 5f",
    "mov $0xd, %eax",
    "mov %r8d, %ecx",
    "cpuid",                            // eax = size, ebx = offset
    "add %ebx, %eax",
    "cmp %esi, %eax",
    "cmova %eax, %esi",
    "5:",
    "inc %r8d",
    "cmp $32, %r8d",
    "jb 4b",
    "3:",
    "mov %esi, %eax",
    "mov %eax, {xsize}(%rip)",          // racing threads store the same values
    "kstls_pop %r8",
    "kstls_pop %rdi",
    "kstls_pop %rsi",
    "kstls_pop %rdx",
    "kstls_pop %rcx",
    "kstls_pop %rbx",
    "ret",
    ".cfi_endproc",
    ".size kstls_xsave_size, . - kstls_xsave_size",
    ".purgem kstls_push",
    ".purgem kstls_pop",
    empty = sym EMPTY_CACHE,
    delta = sym FAST,
    host = sym HOST_TLS_GET_ADDR,
    xsize = sym XSAVE_SIZE,
    xmask = sym XSAVE_MASK,
    slow = sym tls_get_addr_slow,
    dslow = sym tlsdesc_slow,
    state = const arch::xsave_mask(u64::MAX), // and XCR0: arch::xsave_mask(XCR0)
    legacy = const arch::XSAVE_LEGACY_AND_HEADER,
    mul = const cache::ASM_HASH_MUL,
    shift4 = const cache::ASM_HASH_SHIFT,
    mask16 = const cache::ASM_SLOT_MASK,
    slots = const cache::ASM_SLOTS,
    probes1 = const cache::ASM_PROBES_AFTER_HOME,
    options(att_syntax)
);

/// The size of the resolver's extended-state save area, 0 until its first slow path.
static XSAVE_SIZE: AtomicU32 = AtomicU32::new(0);
/// The XSAVE mask of the resolver's slow path (`arch::xsave_mask`), valid once `XSAVE_SIZE` is.
static XSAVE_MASK: AtomicU32 = AtomicU32::new(0);

// The mask is built into `and $imm32` (and XSAVE's EDX half is 0).
const _: () = assert!(arch::xsave_mask(u64::MAX) < 1 << 31);

// The psABI's `tls_index` as the entry reads it: the module id at `(%rdi)` (its low byte by
// `movzbl`), the offset at `8(%rdi)`.
const _: () = assert!(size_of::<kstls_tls_index>() == 16);
const _: () = assert!(offset_of!(kstls_tls_index, module) == 0);
const _: () = assert!(offset_of!(kstls_tls_index, offset) == 8);

/// The address of our own TLS descriptor resolver, `kstls_tlsdesc`.
fn tlsdesc_entry() -> usize {
    let a: usize;
    // SAFETY: Only computes an address.
    unsafe {
        asm!("lea {}, [rip + kstls_tlsdesc_local]", out(reg) a, options(nomem, nostack, preserves_flags))
    };
    a
}

/// This copy's entries, which registration points a module's TLS slots at.
pub(crate) fn entries() -> Entries {
    Entries {
        tlsdesc: tlsdesc_entry(),
    }
}

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
    kstls_addr(ti)
}

/// The slow path of `kstls_tlsdesc`, called with the stack aligned and only the extended state
/// saved that this crate's own code can change (see the resolver): so it reaches nothing else.
/// A kstls id goes to the `GET_ADDR` ioctl; a host module's id, which no descriptor that
/// registration rewrote holds, ends the process (the host's `__tls_get_addr`, code of another
/// build, could change vector state the resolver has not saved).
///
/// # Safety
///
/// `ti` points to a readable `tls_index`, the descriptor's argument.
unsafe extern "C" fn tlsdesc_slow(ti: *const kstls_tls_index) -> *mut c_void {
    // SAFETY: The descriptor's argument is a `tls_index`, by the resolver's contract.
    let ti = unsafe { &*ti };
    if ti.module < KSTLS_MODULE_ID_MIN {
        die::die(b"kstls: kstls_tlsdesc: the descriptor's tls_index holds no kstls module id\n");
    }
    kstls_addr(ti)
}

/// The address of a kstls id's variable from the `GET_ADDR` ioctl; any failure ends the process.
fn kstls_addr(ti: &kstls_tls_index) -> *mut c_void {
    match context::get_addr(ti.module, ti.offset) {
        Ok(addr) => addr as *mut c_void,
        Err(Failed::Open(e)) => die::die_errno(b"kstls: __tls_get_addr: cannot open /dev/kstls", e),
        Err(Failed::Adopt(e)) => die::die_errno(
            b"kstls: __tls_get_addr: after fork, adopting the parent's context (KSTLS_IOC_ADOPT) failed",
            e,
        ),
        Err(Failed::Op(e)) => die::die_errno(b"kstls: __tls_get_addr: KSTLS_IOC_GET_ADDR failed", e),
    }
}
