// SPDX-License-Identifier: GPL-2.0

//! The loud failure of the C library: a message on fd 2, then `SIGABRT`. Used wherever
//! returning would hand the caller a wrong address (the `__tls_get_addr` slow path, the panic
//! handler). It formats numbers itself: no libc (`strerror`, `printf`) and no `core::fmt`
//! machinery on the way out of a broken process.

#[cfg(feature = "capi")]
use rustix::io::Errno;

#[cfg(feature = "capi")]
use crate::arch;

/// Room for the decimal digits of any `u32`.
pub(crate) const DECIMAL_MAX: usize = 10;

/// The decimal digits of `n`, written at the end of `buf`.
pub(crate) fn decimal(n: u32, buf: &mut [u8; DECIMAL_MAX]) -> &[u8] {
    let mut n = n;
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &buf[i..]
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
/// that be caught and return, `exit_group(134)`.
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
    say(b": errno ");
    say(decimal(e.raw_os_error() as u32, &mut [0; DECIMAL_MAX]));
    die(b"\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_writes_every_digit() {
        let mut buf = [0; DECIMAL_MAX];
        assert_eq!(decimal(0, &mut buf), b"0");
        assert_eq!(decimal(7, &mut buf), b"7");
        assert_eq!(decimal(22, &mut buf), b"22");
        assert_eq!(decimal(4095, &mut buf), b"4095");
        assert_eq!(decimal(1_000_000, &mut buf), b"1000000");
        assert_eq!(decimal(u32::MAX, &mut buf), b"4294967295");
    }
}
