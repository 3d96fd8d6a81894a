// SPDX-License-Identifier: GPL-2.0

//! The FS base under x86-64 User-Mode Linux: the task's saved registers.
//!
//! A UML kernel is a host process and cannot read `MSR_FS_BASE` (`rdmsr` faults outside ring
//! 0). Each task's user registers live in `task->thread.regs.regs.gp[]`, saved on every entry
//! into the kernel and restored on the way out; `arch_prctl(ARCH_SET_FS)` and `clone(CLONE_SETTLS)`
//! write the FS base there (`arch/x86/um/syscalls_64.c`, `tls_64.c`), at index `HOST_FS_BASE`.

use kernel::bindings;

/// Index of the FS base in the saved general registers (`sysdep/ptrace_64.h`).
const FS_BASE_INDEX: usize = bindings::HOST_FS_BASE as usize;

/// The FS base of the calling task.
pub(super) fn current_fsbase() -> u64 {
    let task = kernel::task::Task::current_raw();
    // SAFETY: `current_raw()` is the running task, valid until this function returns. While a
    // task is in the kernel only the task itself writes its saved registers (a tracer's
    // PTRACE_POKEUSER needs it stopped), so the read is not racy.
    let gp = unsafe { &(*task).thread.regs.regs.gp };
    // A constant index outside the array is a compile-time error (`unconditional_panic`).
    gp[FS_BASE_INDEX] as u64
}
