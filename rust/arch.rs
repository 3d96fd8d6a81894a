// SPDX-License-Identifier: GPL-2.0

//! The platform's thread pointer: where the calling task's FS base is kept.
//!
//! The x86-64 psABI makes `%fs` point at the thread control block; both glibc and musl keep
//! there a self-pointer, which is what libkstls sees as its thread pointer. The kernel reads the
//! base itself, so user space cannot make it say anything else. A forked child's only thread has
//! the thread pointer of the parent thread that forked, which is how `ADOPT` finds it.
//!
//! Where the base is depends on the kernel, not on user space, which is the same x86-64 code on
//! both platforms: a kernel running on the CPU reads `MSR_FS_BASE` (`arch/x86_64.rs`); User-Mode
//! Linux runs as host processes and keeps each task's FS base in its saved registers
//! (`arch/um.rs`). Nothing else in the module is platform-specific.

#[cfg(all(CONFIG_X86_64, not(CONFIG_UML)))]
#[path = "arch/x86_64.rs"]
mod imp;

#[cfg(all(CONFIG_X86_64, CONFIG_UML))]
#[path = "arch/um.rs"]
mod imp;

#[cfg(not(CONFIG_X86_64))]
compile_error!("kstls knows the thread pointer of x86-64 kernels and x86-64 User-Mode Linux only");

/// The FS base of the calling task: its thread pointer.
pub(crate) fn current_fsbase() -> u64 {
    imp::current_fsbase()
}
