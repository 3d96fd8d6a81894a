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

    #[test]
    fn sigprocmask_returns_the_old_mask() {
        let old = sigprocmask(SIG_SETMASK, 1 << 9); // SIGUSR1
        assert_eq!(sigprocmask(SIG_SETMASK, old), 1 << 9);
    }
}
