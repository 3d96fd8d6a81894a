// SPDX-License-Identifier: GPL-2.0

//! The FS base on an x86-64 kernel: `MSR_FS_BASE`, which holds the running task's.

/// `MSR_FS_BASE`.
const MSR_FS_BASE: u32 = 0xc000_0100;

/// The FS base of the calling task.
pub(super) fn current_fsbase() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: Reading MSR_FS_BASE is allowed at CPL 0 on every x86-64 CPU and has no side
    // effects. While a task runs, the MSR holds that task's FS base (the scheduler restores it
    // on every switch), so the value read is the caller's even if it is preempted afterwards.
    unsafe {
        core::arch::asm!(
            "rdmsr",
            in("ecx") MSR_FS_BASE,
            out("eax") lo,
            out("edx") hi,
            options(nomem, nostack, preserves_flags)
        );
    }
    (u64::from(hi) << 32) | u64::from(lo)
}
