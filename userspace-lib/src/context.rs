// SPDX-License-Identifier: GPL-2.0

//! The context of this copy of the library: one `/dev/kstls` fd per copy (a shared object that
//! links `libkstls.a` privately has its own), opened lazily; fork adoption; and the ioctls,
//! each a typed function. The cache the fd offers is mapped and looked up by `cache.rs`.
//!
//! After `fork`, the child's lookups miss (the cache's state page is wiped on fork) and reach
//! the ioctl, where the inherited fd answers `EPERM`. The child (which knows it is one: the
//! owner's pid, a plain static, is not its own) opens `/dev/kstls` again, adopts the parent's
//! context (`KSTLS_IOC_ADOPT`: same module ids, same block addresses, so the forking thread's
//! values carry over), puts the new fd on the old number with `dup3`, maps its own cache and
//! retries. The fd number and the module count are ordinary statics, copied by fork.
//!
//! Everything but the lookups runs under the lock of `lock.rs`; the first use is set up lazily,
//! so a first TLS access inside a signal handler works (no allocation, all signals blocked
//! while the lock is held).
//!
//! **Forked in the middle of something.** Another thread of the parent may hold the lock at the
//! fork; the child gets the lock free (`lock.rs`) and whatever that thread had done so far of its
//! work, which nobody finishes in the child. Each such state is safe for the child's own use:
//! - The first open (`ensure_locked`): the device opened but `FD` not yet published. The child
//!   sees no context and opens its own; the parent's fd stays open in it, unnamed (close-on-exec,
//!   gone at `exec` or exit). No module of this copy was registered yet, so nothing is lost.
//! - An adoption (`adopt_locked`, in a child that forks again): before the `dup3`, the number in
//!   `FD` still names the grandparent's context, which the grandchild may not adopt: its first
//!   access fails with the message of `entry.rs` (`KSTLS_IOC_ADOPT` failed); after it, the
//!   grandchild adopts as usual. The fd of the half-done adoption stays open, unnamed.
//! - A registration: the kernel has the module but `NR_MODULES` and the module table of
//!   `selfreg.rs` may not count it yet; an unregistration: the converse. The module is one whose
//!   `dlopen` or `dlclose` never returns in the child, so the child never reaches its TLS. The
//!   count being off by one only moves the automatic close: earlier (the kernel frees the
//!   uncounted module with the context) or never (the context stays until `exec` or exit).
//! - The cache: `FAST`, wiped on fork, says there is none, and the kernel does not copy its
//!   mapping, so a half-made or half-withdrawn mapping is invisible to the child.
//! - The kernel's own side: a child forked while another thread was changing the context in a
//!   way that mapped or unmapped memory may be refused its adoption (`ESTALE`, the fork log of the
//!   module); that ends its first access with the same message, never a wrong address.
//!
//! A `CLONE_VM` child (`vfork`, `posix_spawn`) shares the parent's memory and address space: the
//! kernel answers it through the parent's context (the owner is the mm, not the pid), so it never
//! adopts; its lock is the parent's, waited for, never taken over (`lock.rs`).

use core::sync::atomic::AtomicI32;
use core::sync::atomic::AtomicU32;
use core::sync::atomic::Ordering::Acquire;
use core::sync::atomic::Ordering::Relaxed;
use core::sync::atomic::Ordering::Release;

use rustix::fd::AsRawFd;
use rustix::fd::BorrowedFd;
use rustix::fd::FromRawFd;
use rustix::fd::IntoRawFd;
use rustix::fd::OwnedFd;
use rustix::fs::Mode;
use rustix::fs::OFlags;
use rustix::io::Errno;
use rustix::ioctl::Getter;
use rustix::ioctl::Setter;
use rustix::ioctl::Updater;

use crate::cache;
use crate::lock;
use crate::lock::Guard;
use crate::uapi::*;

/// The context's fd, -1 while closed. Survives fork (the child adopts through it). Published
/// last when the context opens, withdrawn first when it closes (see the module doc for a fork
/// in between).
static FD: AtomicI32 = AtomicI32::new(-1);
/// The process that opened or adopted the context (fork copies it: a child sees its parent's,
/// and so does a `CLONE_VM` child, whose adoption the kernel refuses: it shares the context).
static OWNER: AtomicI32 = AtomicI32::new(0);
/// Modules registered through this copy; the context is closed when it drops to 0. Changed
/// under the lock after the kernel's answer: a child forked in between may count one module
/// too many or too few (see the module doc).
static NR_MODULES: AtomicU32 = AtomicU32::new(0);

fn borrow(fd: i32) -> BorrowedFd<'static> {
    // SAFETY: `fd` is the context's fd, open while the library uses it.
    unsafe { BorrowedFd::borrow_raw(fd) }
}

/// One read-and-write ioctl of the context (`GET_ADDR`, `STATS`, `REGISTER`): the kernel reads
/// `*arg` and writes its answer back into it.
///
/// # Safety
///
/// `T` must be the structure that `CMD` encodes (its size and direction).
unsafe fn update<const CMD: rustix::ioctl::Opcode, T>(fd: i32, arg: &mut T) -> Result<(), Errno> {
    // SAFETY: The caller guarantees `CMD` reads and writes one `T`.
    unsafe { rustix::ioctl::ioctl(borrow(fd), Updater::<CMD, T>::new(arg)) }
}

/// The context's fd, opened (under the lock) on first use.
pub(crate) fn fd() -> Result<i32, Errno> {
    let fd = FD.load(Acquire);
    if fd >= 0 {
        return Ok(fd);
    }
    let g = lock::lock();
    ensure_locked(&g)
}

/// The context's fd for an API caller: opened on first use, and adopted now if this is a forked
/// child that has not used the inherited fd yet (so `kstls_fd` always hands out a usable fd).
pub(crate) fn fd_checked() -> Result<i32, Errno> {
    let fd = fd()?;
    if OWNER.load(Acquire) != getpid() {
        adopt_locked(&lock::lock(), fd)?;
    }
    Ok(FD.load(Acquire))
}

fn ensure_locked(_g: &Guard) -> Result<i32, Errno> {
    let fd = FD.load(Relaxed);
    if fd >= 0 {
        return Ok(fd);
    }
    let owned = open_device()?;
    let info = info(owned.as_raw_fd())?;
    if info.abi_version != KSTLS_ABI_VERSION {
        return Err(Errno::PROTO);
    }
    let fd = owned.into_raw_fd();
    cache::map(borrow(fd), &info);
    OWNER.store(getpid(), Release);
    FD.store(fd, Release);
    Ok(fd)
}

fn open_device() -> Result<OwnedFd, Errno> {
    rustix::fs::open(c"/dev/kstls", OFlags::RDWR | OFlags::CLOEXEC, Mode::empty())
}

fn info(fd: i32) -> Result<kstls_info, Errno> {
    // SAFETY: KSTLS_IOC_INFO writes one `struct kstls_info`.
    unsafe { rustix::ioctl::ioctl(borrow(fd), Getter::<KSTLS_IOC_INFO, kstls_info>::new()) }
}

fn getpid() -> i32 {
    rustix::process::getpid().as_raw_nonzero().get()
}

/// After fork: adopt the parent's context through the inherited fd `old` (see the module doc).
/// Returns `Ok` when the context may be retried: adopted now, or already (by another thread, or
/// this process opened the context itself, in which case the retry fails as it should).
fn adopt_locked(_g: &Guard, old: i32) -> Result<(), Errno> {
    if FD.load(Relaxed) != old || OWNER.load(Relaxed) == getpid() {
        return Ok(());
    }
    let new = open_device()?;
    let adopt = kstls_adopt {
        parent_fd: old as u32,
        ..Default::default()
    };
    // SAFETY: KSTLS_IOC_ADOPT reads one `struct kstls_adopt`.
    unsafe { rustix::ioctl::ioctl(&new, Setter::<KSTLS_IOC_ADOPT, kstls_adopt>::new(adopt)) }?;
    // SAFETY: `old` is the inherited fd; it is replaced (and the parent's context released)
    // atomically by dup3, then the OwnedFd is forgotten so the number stays open.
    let mut target = unsafe { OwnedFd::from_raw_fd(old) };
    let r = rustix::io::dup3(&new, &mut target, rustix::io::DupFlags::CLOEXEC);
    core::mem::forget(target);
    r?;
    drop(new);
    let info = info(old)?;
    cache::map(borrow(old), &info);
    OWNER.store(getpid(), Release);
    Ok(())
}

/// The step of a slow-path access that failed, for a message that says which.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Failed {
    /// Opening `/dev/kstls` (or a context of another ABI version).
    Open(Errno),
    /// Adopting the parent's context after fork (`KSTLS_IOC_ADOPT`, the fd swap, the cache).
    Adopt(Errno),
    /// The operation itself.
    Op(Errno),
}

impl Failed {
    pub(crate) fn errno(self) -> Errno {
        match self {
            Failed::Open(e) | Failed::Adopt(e) | Failed::Op(e) => e,
        }
    }
}

/// Runs `op` on the context's fd; on `EPERM` from an fd inherited over fork, adopts and retries
/// once. `op` runs without the lock.
fn with_fd<T>(op: impl Fn(i32) -> Result<T, Errno>) -> Result<T, Failed> {
    let fd = fd().map_err(Failed::Open)?;
    match op(fd) {
        Err(Errno::PERM) => {
            adopt_locked(&lock::lock(), fd).map_err(Failed::Adopt)?;
            op(FD.load(Acquire)).map_err(Failed::Op)
        }
        r => r.map_err(Failed::Op),
    }
}

/// As `with_fd`, for a caller that holds the lock (and may have to open the context).
fn with_fd_locked<T>(g: &Guard, op: impl Fn(i32) -> Result<T, Errno>) -> Result<T, Errno> {
    let fd = ensure_locked(g)?;
    match op(fd) {
        Err(Errno::PERM) => {
            adopt_locked(g, fd)?;
            op(FD.load(Relaxed))
        }
        r => r,
    }
}

/// The slow path: `KSTLS_IOC_GET_ADDR`, which also fills the cache.
pub(crate) fn get_addr(module: u64, offset: u64) -> Result<u64, Failed> {
    with_fd(|fd| {
        let mut ga = kstls_get_addr {
            ti: kstls_tls_index { module, offset },
            addr: 0,
        };
        // SAFETY: KSTLS_IOC_GET_ADDR reads the `tls_index` and writes `addr` of `ga`.
        unsafe { update::<KSTLS_IOC_GET_ADDR, _>(fd, &mut ga) }?;
        Ok(ga.addr)
    })
}

/// The calling thread's address of `offset` in `module`: the fast path, else `GET_ADDR`.
/// `EINVAL` for an id below `KSTLS_MODULE_ID_MIN` (never one of kstls's), which is not
/// forwarded anywhere.
pub(crate) fn tls_addr(module: u64, offset: u64) -> Result<u64, Errno> {
    if module < KSTLS_MODULE_ID_MIN {
        return Err(Errno::INVAL);
    }
    if let Some(addr) = cache::fast_lookup(module, offset) {
        return Ok(addr);
    }
    get_addr(module, offset).map_err(Failed::errno)
}

/// `KSTLS_IOC_STATS` for `module` (0: all) and `tid` (0: all threads).
pub(crate) fn stats(module: u64, tid: u32) -> Result<kstls_stats, Errno> {
    with_fd(|fd| {
        let mut st = kstls_stats {
            module,
            tid,
            ..Default::default()
        };
        // SAFETY: KSTLS_IOC_STATS reads and writes one `struct kstls_stats`.
        unsafe { update::<KSTLS_IOC_STATS, _>(fd, &mut st) }?;
        Ok(st)
    })
    .map_err(Failed::errno)
}

/// `KSTLS_IOC_REGISTER`, counted for the automatic close.
pub(crate) fn register(
    image: u64,
    filesz: u64,
    memsz: u64,
    align: u64,
    align_offset: u64,
) -> Result<u64, Errno> {
    let g = lock::lock();
    let id = register_locked(&g, image, filesz, memsz, align, align_offset)?;
    Ok(id)
}

pub(crate) fn register_locked(
    g: &Guard,
    image: u64,
    filesz: u64,
    memsz: u64,
    align: u64,
    align_offset: u64,
) -> Result<u64, Errno> {
    let r = with_fd_locked(g, |fd| {
        let mut reg = kstls_register {
            image,
            filesz,
            memsz,
            align,
            align_offset,
            ..Default::default()
        };
        // SAFETY: KSTLS_IOC_REGISTER reads and writes one `struct kstls_register`.
        unsafe { update::<KSTLS_IOC_REGISTER, _>(fd, &mut reg) }?;
        Ok(reg.module)
    });
    match r {
        Ok(id) => {
            NR_MODULES.fetch_add(1, Relaxed);
            Ok(id)
        }
        Err(e) => {
            close_if_unused(g);
            Err(e)
        }
    }
}

/// `KSTLS_IOC_UNREGISTER`; the last module's closes the context.
pub(crate) fn unregister(module: u64) -> Result<(), Errno> {
    let g = lock::lock();
    unregister_locked(&g, module)
}

pub(crate) fn unregister_locked(g: &Guard, module: u64) -> Result<(), Errno> {
    if FD.load(Relaxed) < 0 {
        return Err(Errno::INVAL);
    }
    with_fd_locked(g, |fd| {
        let u = kstls_unregister {
            module,
            reserved: 0,
        };
        // SAFETY: KSTLS_IOC_UNREGISTER reads one `struct kstls_unregister`.
        unsafe {
            rustix::ioctl::ioctl(
                borrow(fd),
                Setter::<KSTLS_IOC_UNREGISTER, kstls_unregister>::new(u),
            )
        }
    })?;
    let _ = NR_MODULES.fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1));
    close_if_unused(g);
    Ok(())
}

/// Closes the context when no module of this copy is registered: a shared object that linked
/// the library privately leaves nothing behind after `dlclose`. The next use opens it again.
fn close_if_unused(_g: &Guard) {
    if NR_MODULES.load(Relaxed) != 0 {
        return;
    }
    let fd = FD.swap(-1, Release);
    if fd < 0 {
        return;
    }
    cache::unmap();
    // SAFETY: `fd` was ours and is no longer published.
    drop(unsafe { OwnedFd::from_raw_fd(fd) });
}
