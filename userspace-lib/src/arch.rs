// SPDX-License-Identifier: GPL-2.0

//! x86-64 helpers, a leaf of the crate: the page size, the thread pointer, the FS base, and the
//! raw system calls rustix does not offer (`arch_prctl`, `rt_sigprocmask`, `tgkill`,
//! `exit_group`, `kcmp`). Nothing here knows about kstls; the assembly entry points that do are in
//! `entry.rs`.

use core::arch::asm;

/// The page size of x86-64 Linux user space.
pub(crate) const PAGE: usize = 4096;

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

const SYS_KCMP: usize = 312;
const KCMP_VM: usize = 1;
const ESRCH: isize = -3;

/// Whether process `pid` shares the calling process's address space (`kcmp(KCMP_VM)`): `None`
/// when the kernel cannot say (no `CONFIG_KCMP`, or not allowed to look at `pid`). A process
/// that does not exist shares nothing.
pub(crate) fn same_vm(pid: i32) -> Option<bool> {
    let me = rustix::process::getpid().as_raw_nonzero().get() as usize;
    // SAFETY: kcmp has no memory arguments.
    let r = unsafe { syscall6(SYS_KCMP, [me, pid as usize, KCMP_VM, 0, 0, 0]) };
    match r {
        0 => Some(true),
        ESRCH => Some(false),
        r if r > 0 => Some(false),
        _ => None,
    }
}

/// XSAVE state components (bits of XCR0 and of an XSAVE mask, Intel SDM vol. 1, 13.1): x87,
/// SSE (XMM0-15 and MXCSR), AVX (the upper halves of YMM0-15), AVX-512 (the opmask registers,
/// the upper halves of ZMM0-15, ZMM16-31), AMX (TILECFG, TILEDATA).
#[cfg(any(feature = "capi", test))]
pub(crate) const XSTATE_X87: u64 = 1 << 0;
#[cfg(any(feature = "capi", test))]
pub(crate) const XSTATE_SSE: u64 = 1 << 1;
#[cfg(any(feature = "capi", test))]
pub(crate) const XSTATE_AVX: u64 = 1 << 2;
#[cfg(any(feature = "capi", test))]
pub(crate) const XSTATE_AVX512: u64 = 0b111 << 5;
#[cfg(test)]
pub(crate) const XSTATE_AMX: u64 = 0b11 << 17;

/// The legacy region and the header of an XSAVE area: components 0 and 1 live in the first.
#[cfg(any(feature = "capi", test))]
pub(crate) const XSAVE_LEGACY_AND_HEADER: u32 = 576;

/// The state components that code compiled with these target features can change: x87 and SSE
/// always (the x86-64 baseline: XMM registers and MXCSR), AVX and AVX-512 only when enabled.
/// Legacy SSE instructions leave the upper halves of YMM and ZMM as they are, and no compiled
/// code touches PKRU, AMX tiles or anything else without intrinsics the library never uses.
#[cfg(any(feature = "capi", test))]
pub(crate) const fn compiled_state(avx: bool, avx512f: bool) -> u64 {
    let mut m = XSTATE_X87 | XSTATE_SSE;
    if avx {
        m |= XSTATE_AVX;
    }
    if avx512f {
        m |= XSTATE_AVX512;
    }
    m
}

/// What the Rust code of this build (and the `core` it links, built for the baseline) can
/// change: the components the TLS descriptor resolver's slow path saves, at most.
#[cfg(any(feature = "capi", test))]
pub(crate) const SLOW_PATH_STATE: u64 = compiled_state(
    cfg!(target_feature = "avx"),
    cfg!(target_feature = "avx512f"),
);

/// The XSAVE mask with which the TLS descriptor resolver's slow path saves the extended state,
/// on a CPU whose XCR0 is `xcr0`: what the slow path can change ([`SLOW_PATH_STATE`]) of what the
/// OS enabled. The resolver's contract (the TLSDESC convention; glibc's resolvers after its
/// bug 31372) is to return the offset in `%rax` and preserve every other register, vector
/// state included: only state that the slow path changes needs saving. The system calls it
/// makes preserve all user extended state (the kernel saves and restores it, and returns with
/// it as it was); so the compiled code is all that matters, and its components are known at
/// build time. AMX tile data alone is 8 KiB, which a signal handler's `SIGSTKSZ` alternate stack
/// cannot hold.
#[cfg(any(feature = "capi", test))]
pub(crate) const fn xsave_mask(xcr0: u64) -> u64 {
    xcr0 & SLOW_PATH_STATE
}

/// The bytes of a standard-format (not compacted) XSAVE area that holds the components of
/// `mask`: the legacy region and header, then up to the end of the highest component saved,
/// where `layout(i)` is component `i`'s (size, offset), CPUID leaf 0xD sub-leaf `i` (EAX, EBX).
/// The statement of what `entry.rs`'s `kstls_xsave_size` computes in assembly (it must run
/// before any vector register is saved, so no Rust code can do it there).
#[cfg(test)]
pub(crate) fn xsave_size(mask: u64, layout: impl Fn(u32) -> (u32, u32)) -> u32 {
    (2..64)
        .filter(|i| mask & (1 << i) != 0)
        .map(|i| {
            let (size, offset) = layout(i);
            size.saturating_add(offset)
        })
        .fold(XSAVE_LEGACY_AND_HEADER, u32::max)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_pointer_is_the_fs_base_under_glibc() {
        let fs = fs_base();
        assert_ne!(fs, 0);
        // SAFETY: The test runs in a glibc thread, whose FS base is its self-pointing TCB.
        assert_eq!(unsafe { thread_pointer() }, fs);
    }

    #[test]
    fn readable_tells_mapped_from_unmapped() {
        let word = 0u64;
        assert!(readable(&word as *const u64 as usize));
        assert!(!readable(0));
        assert!(!readable(usize::MAX - PAGE + 1));
    }

    #[test]
    fn same_vm_tells_this_process_from_its_parent() {
        let me = rustix::process::getpid().as_raw_nonzero().get();
        let parent = rustix::process::getppid().map_or(1, |p| p.as_raw_nonzero().get());
        // Where the kernel can say (CONFIG_KCMP, the parent visible to us).
        if let Some(same) = same_vm(parent) {
            assert!(!same);
            assert_eq!(same_vm(me), Some(true));
        }
        assert_eq!(same_vm(i32::MAX), Some(false), "no such process");
    }

    /// CPUID leaf 0xD on a Sapphire Rapids Xeon (AMX, AVX-512, PKRU): (size, offset) per
    /// component; the area for all of XCR0 0x602e7 is 11008 bytes.
    fn sapphire_rapids(i: u32) -> (u32, u32) {
        match i {
            2 => (256, 576),
            5 => (64, 1088),
            6 => (512, 1152),
            7 => (1024, 1664),
            9 => (8, 2688),
            17 => (64, 2752),
            18 => (8192, 2816),
            _ => (0, 0),
        }
    }
    const SPR_XCR0: u64 = 0x602e7;

    #[test]
    fn the_slow_path_saves_no_amx_state() {
        let mask = xsave_mask(SPR_XCR0);
        assert_eq!(mask & XSTATE_AMX, 0, "AMX tile state saved: mask {mask:#x}");
        assert_eq!(mask & (1 << 9), 0, "PKRU saved: mask {mask:#x}");
        assert_eq!(mask & (XSTATE_X87 | XSTATE_SSE), XSTATE_X87 | XSTATE_SSE);
        // A SIGSTKSZ (8192-byte) alternate stack holds the area with room to spare.
        let size = xsave_size(mask, sapphire_rapids);
        assert!(size <= 2688, "{size} bytes for mask {mask:#x}");
        assert_eq!(xsave_size(SPR_XCR0, sapphire_rapids), 11008, "the whole of XCR0");
    }

    #[test]
    fn the_slow_path_saves_what_this_build_may_change() {
        let mask = xsave_mask(SPR_XCR0);
        let avx = cfg!(target_feature = "avx");
        let avx512 = cfg!(target_feature = "avx512f");
        assert_eq!(mask & XSTATE_AVX != 0, avx);
        assert_eq!(mask & XSTATE_AVX512 == XSTATE_AVX512, avx512);
        let want = if avx512 {
            2688
        } else if avx {
            832
        } else {
            XSAVE_LEGACY_AND_HEADER
        };
        assert_eq!(xsave_size(mask, sapphire_rapids), want);
        // Never a component the OS did not enable.
        assert_eq!(xsave_mask(XSTATE_X87 | XSTATE_SSE), XSTATE_X87 | XSTATE_SSE);
    }

    #[test]
    fn compiled_state_grows_with_the_target_features() {
        assert_eq!(compiled_state(false, false), 0b11);
        assert_eq!(compiled_state(true, false), 0b111);
        assert_eq!(compiled_state(true, true), 0b1110_0111);
    }

    #[test]
    fn xsave_size_ends_at_the_highest_component() {
        assert_eq!(xsave_size(0b11, sapphire_rapids), 576);
        assert_eq!(xsave_size(0b111, sapphire_rapids), 832);
        assert_eq!(xsave_size(0b1110_0111, sapphire_rapids), 2688);
        assert_eq!(xsave_size(1 << 18 | 0b11, sapphire_rapids), 11008);
    }

    #[test]
    fn sigprocmask_returns_the_old_mask() {
        let old = sigprocmask(SIG_SETMASK, 1 << 9); // SIGUSR1
        assert_eq!(sigprocmask(SIG_SETMASK, old), 1 << 9);
    }
}
