// SPDX-License-Identifier: GPL-2.0

//! System call helpers shared by the library: C-style results and the loud failure (both for
//! the C library only), and the one lock (a spin lock held with every signal blocked, so that a signal handler's first TLS
//! access can never find it taken by the thread it interrupted).

use core::sync::atomic::AtomicBool;
use core::sync::atomic::Ordering;

#[cfg(feature = "capi")]
use rustix::io::Errno;

use crate::arch;

/// The page size of x86-64 Linux user space.
pub(crate) const PAGE: usize = 4096;

/// `0` or `-errno`, for the C shims.
#[cfg(feature = "capi")]
pub(crate) fn result(r: Result<(), Errno>) -> i32 {
    match r {
        Ok(()) => 0,
        Err(e) => -e.raw_os_error(),
    }
}

/// Writes `msg` to fd 2 with raw `write` calls, ignoring errors.
#[cfg(feature = "capi")]
pub(crate) fn say(msg: &[u8]) {
    // SAFETY: fd 2 is only borrowed for the call; if it is not open, `write` fails harmlessly.
    let fd = unsafe { rustix::fd::BorrowedFd::borrow_raw(2) };
    let mut rest = msg;
    while !rest.is_empty() {
        match rustix::io::write(fd, rest) {
            Ok(0) | Err(_) => return,
            Ok(n) => rest = &rest[n..],
        }
    }
}

/// Ends the process loudly: the message on fd 2, then `SIGABRT` to the calling thread and, should
/// that be caught and return, `exit_group(134)`. Used wherever returning would hand the caller a
/// wrong address.
#[cfg(feature = "capi")]
pub(crate) fn die(msg: &[u8]) -> ! {
    say(msg);
    const SIGABRT: usize = 6;
    arch::sigprocmask(arch::SIG_UNBLOCK, 1 << (SIGABRT - 1));
    arch::raise(SIGABRT);
    arch::exit_group(134)
}

/// `die` with ": errno N\n" appended to `msg`.
#[cfg(feature = "capi")]
pub(crate) fn die_errno(msg: &[u8], e: Errno) -> ! {
    say(msg);
    let mut buf = [0u8; 24];
    let tail = b"\n";
    let mut n = e.raw_os_error() as u32;
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    say(b": errno ");
    say(&buf[i..]);
    die(tail)
}

/// The library's one lock. It guards the context's setup, fork adoption, registration and the
/// module table; no fast-path access takes it.
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
