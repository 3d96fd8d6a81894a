// SPDX-License-Identifier: GPL-2.0

//! The library's one lock: a spin lock held with every signal blocked, so that a signal
//! handler's first TLS access can never find it taken by the thread it interrupted. It guards
//! the context's setup, fork adoption, registration and the module table; no fast-path access
//! takes it. A [`Guard`] proves it is held: functions that must run under it take `&Guard`.

use core::sync::atomic::AtomicBool;
use core::sync::atomic::Ordering;

use crate::arch;

/// The lock itself; true while a thread holds it.
static LOCK: AtomicBool = AtomicBool::new(false);

/// Holding `LOCK`, with the signal mask the thread had before restored on drop.
pub(crate) struct Guard {
    saved: u64,
}

/// Blocks every signal, then spins (yielding the CPU) until `LOCK` is ours.
pub(crate) fn lock() -> Guard {
    let saved = arch::sigprocmask(arch::SIG_SETMASK, !0);
    while LOCK
        .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        rustix::thread::sched_yield();
    }
    Guard { saved }
}

impl Drop for Guard {
    fn drop(&mut self) {
        LOCK.store(false, Ordering::Release);
        arch::sigprocmask(arch::SIG_SETMASK, self.saved);
    }
}
