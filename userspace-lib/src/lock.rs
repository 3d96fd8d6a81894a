// SPDX-License-Identifier: GPL-2.0

//! The library's one lock: a spin lock held with every signal blocked, so that a signal
//! handler's first TLS access can never find it taken by the thread it interrupted. It guards
//! the context's setup, fork adoption, registration and the module table; no fast-path access
//! takes it. A [`Guard`] proves it is held: functions that must run under it take `&Guard`.
//!
//! **Fork.** A forked child must never inherit the lock held: another thread of the parent may
//! have been registering, unregistering or opening the device at the fork, and that thread does
//! not exist in the child, whose first slow-path access (fork adoption) takes the lock. So the
//! lock word lives in a page of its own marked `MADV_WIPEONFORK` ([`LOCK_PAGE`]): a forked child
//! reads it as 0, free, whatever the parent's threads were doing, with no `pthread_atfork` (the
//! library has no libc to ask). The advice is given before the first acquisition in each
//! process, so a lock that is held is always in a page that the next fork wipes.
//!
//! **`CLONE_VM` children** (`vfork`, `posix_spawn`) share the parent's memory, the lock page
//! included, which no fork copies or wipes: the lock they see is the real one, and they wait
//! for it like any thread. The word holds the holder's process id, so a waiter can tell a holder
//! in its own process from one in another, which only a process sharing its memory can be
//! while the page is wiped on fork.
//!
//! **Without `MADV_WIPEONFORK`** (a kernel without `CONFIG_ADVISE_SYSCALLS`) a forked child does
//! inherit the word; a waiter that finds another process's id there asks the kernel whether
//! that process shares its memory (`kcmp(KCMP_VM)`): if not, the word is a stale copy made by
//! fork and the waiter takes the lock over; if the kernel cannot say, the process ends with a
//! message rather than spin forever ([`verdict`] is the decision). One case stays ambiguous
//! there: a child in a new pid namespace whose pid equals the stale holder's (both 1).

use core::ffi::c_void;
use core::sync::atomic::AtomicI32;
use core::sync::atomic::Ordering::Acquire;
use core::sync::atomic::Ordering::Relaxed;
use core::sync::atomic::Ordering::Release;

use rustix::mm::Advice;

use crate::arch;
use crate::arch::PAGE;

/// The lock's page, wiped on fork (see the module doc): nothing else may share it.
#[repr(C, align(4096))]
struct LockPage {
    /// The holder's process id (`getpid`), 0 while the lock is free.
    holder: AtomicI32,
    /// Whether the page is wiped on fork: [`UNKNOWN`] (never asked in this process, which is
    /// what a forked child reads), [`WIPED`], or [`NOT_WIPED`] (`madvise` refused).
    wipes: AtomicI32,
}

const UNKNOWN: i32 = 0;
const WIPED: i32 = 1;
const NOT_WIPED: i32 = 2;

const _: () = assert!(core::mem::size_of::<LockPage>() == PAGE);

static LOCK_PAGE: LockPage = LockPage {
    holder: AtomicI32::new(0),
    wipes: AtomicI32::new(UNKNOWN),
};

/// Holding the lock, with the signal mask the thread had before restored on drop.
pub(crate) struct Guard {
    saved: u64,
}

/// What a thread that found the lock held by `holder` does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The holder is alive and shares this memory: wait for it.
    Wait,
    /// The word is a copy that fork made of a lock held in another process: take it over.
    TakeOver,
    /// Neither can be told: end the process with a message.
    Unknown,
}

/// The decision of a waiter in process `me` that found the lock word holding `holder` (not 0),
/// the lock page being wiped on fork or not (`wiped`); `same_vm` asks the kernel whether
/// `holder` shares this process's memory (`None`: it cannot say), and is asked only when that
/// decides.
pub(crate) fn verdict(
    holder: i32,
    me: i32,
    wiped: bool,
    same_vm: impl FnOnce() -> Option<bool>,
) -> Verdict {
    // Another thread of this process, or (the page being wiped on fork, so no foreign id can
    // be a copy) a process that shares this memory: a real holder.
    if holder == me || wiped {
        return Verdict::Wait;
    }
    match same_vm() {
        Some(true) => Verdict::Wait,
        Some(false) => Verdict::TakeOver,
        None => Verdict::Unknown,
    }
}

/// Whether the lock page is wiped on fork, asking the kernel once per process. Called before
/// every acquisition, so the advice is in place before the lock is first held.
fn page_wiped() -> bool {
    match LOCK_PAGE.wipes.load(Relaxed) {
        WIPED => return true,
        NOT_WIPED => return false,
        _ => {}
    }
    let page = core::ptr::addr_of!(LOCK_PAGE).cast_mut().cast::<c_void>();
    // SAFETY: `LOCK_PAGE` is a whole page of our own `.bss` (its size and alignment are one
    // page), so the advice changes nothing but the fate of these bytes in a forked child, where
    // the lock is then free and `wipes` UNKNOWN. Racing threads give the same advice.
    let wiped = unsafe { rustix::mm::madvise(page, PAGE, Advice::LinuxWipeOnFork) }.is_ok();
    LOCK_PAGE
        .wipes
        .store(if wiped { WIPED } else { NOT_WIPED }, Relaxed);
    wiped
}

/// Blocks every signal, then spins (yielding the CPU) until the lock is ours.
pub(crate) fn lock() -> Guard {
    let saved = arch::sigprocmask(arch::SIG_SETMASK, !0);
    let wiped = page_wiped();
    let me = rustix::process::getpid().as_raw_nonzero().get();
    loop {
        let holder = match LOCK_PAGE
            .holder
            .compare_exchange_weak(0, me, Acquire, Relaxed)
        {
            Ok(_) => break,
            Err(0) => continue,
            Err(h) => h,
        };
        match verdict(holder, me, wiped, || arch::same_vm(holder)) {
            Verdict::Wait => rustix::thread::sched_yield(),
            Verdict::TakeOver => {
                if LOCK_PAGE
                    .holder
                    .compare_exchange(holder, me, Acquire, Relaxed)
                    .is_ok()
                {
                    break;
                }
            }
            Verdict::Unknown => unknown_holder(),
        }
    }
    Guard { saved }
}

/// The end of a process that cannot tell whether the lock's holder is alive.
#[cold]
fn unknown_holder() -> ! {
    const MSG: &[u8] = b"kstls: the library's lock is held by another process, which the kernel \
cannot say shares this memory (no MADV_WIPEONFORK, no kcmp): giving up rather than spin\n";
    #[cfg(feature = "capi")]
    crate::die::die(MSG);
    #[cfg(not(feature = "capi"))]
    panic!("{}", core::str::from_utf8(MSG).unwrap_or("kstls: lock"));
}

impl Drop for Guard {
    fn drop(&mut self) {
        LOCK_PAGE.holder.store(0, Release);
        arch::sigprocmask(arch::SIG_SETMASK, self.saved);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: i32 = 100;
    const OTHER: i32 = 200;

    fn never() -> Option<bool> {
        panic!("the kernel was asked")
    }

    #[test]
    fn a_holder_of_this_process_is_waited_for() {
        assert_eq!(verdict(ME, ME, true, never), Verdict::Wait);
        assert_eq!(verdict(ME, ME, false, never), Verdict::Wait);
    }

    #[test]
    fn in_a_wiped_page_another_process_shares_this_memory() {
        // A CLONE_VM child (vfork, posix_spawn) or its parent: never taken over.
        assert_eq!(verdict(OTHER, ME, true, never), Verdict::Wait);
    }

    #[test]
    fn without_wiping_the_kernel_tells_a_copy_from_a_sharer() {
        assert_eq!(verdict(OTHER, ME, false, || Some(true)), Verdict::Wait);
        assert_eq!(verdict(OTHER, ME, false, || Some(false)), Verdict::TakeOver);
        assert_eq!(verdict(OTHER, ME, false, || None), Verdict::Unknown);
    }

    #[test]
    fn the_lock_page_is_wiped_on_fork_and_the_lock_works() {
        drop(lock());
        assert_eq!(LOCK_PAGE.wipes.load(Relaxed), WIPED);
        let g = lock();
        assert_eq!(
            LOCK_PAGE.holder.load(Relaxed),
            rustix::process::getpid().as_raw_nonzero().get()
        );
        drop(g);
    }

    /// A forked child of a process whose lock is held finds it free: the state the old lock
    /// left a child in was a held word and a spin with every signal blocked.
    #[test]
    fn a_child_forked_with_the_lock_held_takes_it() {
        let g = lock();
        // SAFETY: The child only makes raw system calls (the lock's) and `_exit`s.
        let pid = unsafe { libc_fork() };
        assert!(pid >= 0);
        if pid == 0 {
            // Never spin here: a held word is the failure.
            if LOCK_PAGE.holder.load(Relaxed) != 0 {
                // SAFETY: Ends the child at once.
                unsafe { _exit(1) };
            }
            drop(lock());
            // SAFETY: Ends the child at once.
            unsafe { _exit(0) };
        }
        drop(g);
        let status = wait(pid);
        assert_eq!(status, 0, "the child found the lock held (status {status:#x})");
    }

    extern "C" {
        #[link_name = "fork"]
        fn libc_fork() -> i32;
        fn waitpid(pid: i32, status: *mut i32, options: i32) -> i32;
        fn _exit(status: i32) -> !;
    }

    fn wait(pid: i32) -> i32 {
        let mut status = 0;
        // SAFETY: `status` is a local the call writes.
        assert_eq!(unsafe { waitpid(pid, &mut status, 0) }, pid);
        status
    }
}
