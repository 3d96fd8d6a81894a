// SPDX-License-Identifier: GPL-2.0

//! The context of this copy of the library: one `/dev/kstls` fd per copy (a shared object that
//! links `libkstls.a` privately has its own), the fast-path cache mapped from it, and fork
//! adoption.
//!
//! State that must not survive `fork` lives in `FAST`, a page of the library's own `.bss` with
//! `MADV_WIPEONFORK`: a forked child reads it as zero, so its lookups read the all-zero
//! `EMPTY_CACHE` instead of the parent's cache (the kernel does not copy that mapping into the
//! child), miss, and take the slow path. There
//! the inherited fd answers `EPERM`; the child (which knows it is one: the owner's pid, a plain
//! static, is not its own) opens `/dev/kstls` again, adopts the parent's
//! context (`KSTLS_IOC_ADOPT`: same module ids, same block addresses, so the forking thread's
//! values carry over), puts the new fd on the old number with `dup3`, maps its own cache and
//! retries. The fd number and the module count are ordinary statics, copied by fork.
//!
//! Everything but the lookups runs under the lock of `sys.rs`; the first use is set up lazily,
//! so a first TLS access inside a signal handler works (no allocation, all signals blocked
//! while the lock is held).

use core::ffi::c_void;
use core::ptr::null_mut;
use core::sync::atomic::AtomicI32;
use core::sync::atomic::AtomicU32;
use core::sync::atomic::AtomicU64;
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
use rustix::mm::Advice;
use rustix::mm::MapFlags;
use rustix::mm::ProtFlags;

use crate::arch;
use crate::sys;
use crate::sys::Guard;
use crate::sys::PAGE;
use crate::uapi::*;

/// Bytes that a lookup may read from a cache before its tp check fails: the header page (entries
/// at `dtv_offset` 0) and the slot array.
const EMPTY_CACHE_WORDS: usize = (KSTLS_CACHE_SLOTS_OFFSET as usize
    + (1usize << KSTLS_CACHE_SLOTS_LOG2) * core::mem::size_of::<kstls_cache_slot>())
    / 8;

/// What the lookups read while there is no cache: zeroes (in `.bss`, never written), where no
/// slot has a thread pointer, so every lookup misses. It saves the assembly entry a test.
pub(crate) static EMPTY_CACHE: [AtomicU64; EMPTY_CACHE_WORDS] =
    [const { AtomicU64::new(0) }; EMPTY_CACHE_WORDS];

/// The wipe-on-fork page: where the mapped cache is, for the fast paths (the cache's geometry
/// is the uapi's `KSTLS_CACHE_*`, which `map_cache` checks the header against). A page of its
/// own, so that `MADV_WIPEONFORK` takes nothing else with it.
///
/// `delta` is written last when the cache is published and first when it is withdrawn, and is
/// what the lookups use: non-zero means every other field is valid.
#[repr(C, align(4096))]
pub(crate) struct FastState {
    /// Address of the mapped cache minus that of `EMPTY_CACHE`, 0: no cache in this process
    /// (the lookups then read `EMPTY_CACHE`).
    pub(crate) delta: AtomicU64,
    /// The largest `dtv_offset` whose entries lie inside the mapping.
    dtv_limit: AtomicU64,
    /// Length of the cache mapping.
    cache_len: AtomicU64,
    /// Whether the page is wiped on fork: without that there is no fast path, since a forked
    /// child could not tell that the cache is not its own. (A child reads false and asks again.)
    wipes: AtomicU64,
}

/// The one `FastState`, zero (no cache) until a context is opened.
pub(crate) static FAST: FastState = FastState {
    delta: AtomicU64::new(0),
    dtv_limit: AtomicU64::new(0),
    cache_len: AtomicU64::new(0),
    wipes: AtomicU64::new(0),
};
const _: () = assert!(core::mem::size_of::<FastState>() == PAGE);

/// The context's fd, -1 while closed. Survives fork (the child adopts through it).
static FD: AtomicI32 = AtomicI32::new(-1);
/// The process that opened or adopted the context (fork copies it: a child sees its parent's).
static OWNER: AtomicI32 = AtomicI32::new(0);
/// Modules registered through this copy; the context is closed when it drops to 0.
static NR_MODULES: AtomicU32 = AtomicU32::new(0);

fn empty_cache() -> u64 {
    EMPTY_CACHE.as_ptr() as u64
}

/// The mapped cache's address, if there is one.
fn cache() -> Option<u64> {
    let delta = FAST.delta.load(Acquire);
    (delta != 0).then(|| empty_cache().wrapping_add(delta))
}

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
    let g = sys::lock();
    ensure_locked(&g)
}

/// The context's fd for an API caller: opened on first use, and adopted now if this is a forked
/// child that has not used the inherited fd yet (so `kstls_fd` always hands out a usable fd).
pub(crate) fn fd_checked() -> Result<i32, Errno> {
    let fd = fd()?;
    if OWNER.load(Acquire) != getpid() {
        adopt_locked(&sys::lock(), fd)?;
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
    map_cache(fd, &info);
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

/// Makes `FAST` wipe-on-fork, once per process. Without `MADV_WIPEONFORK` (a kernel built
/// without `CONFIG_ADVISE_SYSCALLS`, or a loader that mapped our `.bss` from a file) there is
/// simply no fast path.
fn state_page() -> bool {
    if FAST.wipes.load(Relaxed) != 0 {
        return true;
    }
    let page = core::ptr::addr_of!(FAST).cast_mut().cast::<c_void>();
    // SAFETY: `FAST` is a whole page of our own `.bss` (its size and alignment are one page),
    // so the advice changes nothing but the fate of these bytes in a forked child.
    if unsafe { rustix::mm::madvise(page, PAGE, Advice::LinuxWipeOnFork) }.is_err() {
        return false;
    }
    FAST.wipes.store(1, Relaxed);
    true
}

/// Maps and publishes the cache when the kernel offers one and its header makes sense; on any
/// doubt there is no cache, and every access takes the ioctl.
fn map_cache(fd: i32, info: &kstls_info) {
    if !state_page() {
        return;
    }
    let f = &FAST;
    let len = info.cache_size as usize;
    if info.features & KSTLS_FEAT_CACHE == 0 || len < core::mem::size_of::<kstls_cache_header>() {
        return;
    }
    // The lookup reads %fs:0: only when the thread pointer follows the psABI (every libc's
    // does; a program without libc may have no FS base at all).
    let fs = arch::fs_base();
    // SAFETY: `fs` is this thread's FS base, tested to be non-zero and hence readable.
    if fs == 0 || unsafe { arch::thread_pointer() } != fs {
        return;
    }
    // SAFETY: A shared read-only mapping of the device, as uapi/kstls.h describes.
    let Ok(p) = (unsafe {
        rustix::mm::mmap(
            null_mut(),
            len,
            ProtFlags::READ,
            MapFlags::SHARED,
            borrow(fd),
            0,
        )
    }) else {
        return;
    };
    // SAFETY: The mapping is at least one header long.
    let h = unsafe { &*(p as *const kstls_cache_header) };
    let slot = core::mem::size_of::<kstls_cache_slot>() as u64;
    let entry = core::mem::size_of::<kstls_cache_dtv_entry>() as u64;
    let n = h.nr_slots as u64;
    let dtv_bytes = (h.dtv_entries as u64).saturating_mul(entry);
    // Both lookups have the version's geometry built in: a header that disagrees gets no fast
    // path.
    let ok = h.magic == KSTLS_CACHE_MAGIC
        && h.version == KSTLS_CACHE_VERSION
        && h.nr_slots_log2 == KSTLS_CACHE_SLOTS_LOG2
        && n == 1 << h.nr_slots_log2
        && h.nr_probes == KSTLS_CACHE_PROBES
        && h.dtv_entries == KSTLS_CACHE_DTV_ENTRIES
        && h.slots_offset == KSTLS_CACHE_SLOTS_OFFSET as u64
        && h.slots_offset
            .checked_add(n * slot)
            .is_some_and(|end| end <= len as u64)
        && dtv_bytes <= len as u64;
    if !ok {
        // SAFETY: Our own mapping, not yet published.
        let _ = unsafe { rustix::mm::munmap(p, len) };
        return;
    }
    f.cache_len.store(len as u64, Relaxed);
    f.dtv_limit.store(len as u64 - dtv_bytes, Relaxed);
    // Never 0: the mapping is not `EMPTY_CACHE`.
    f.delta
        .store((p as u64).wrapping_sub(empty_cache()), Release);
}

/// Withdraws and unmaps the cache of this process, if any.
fn unmap_cache() {
    let Some(base) = cache() else { return };
    FAST.delta.store(0, Release);
    let len = FAST.cache_len.swap(0, Relaxed);
    // SAFETY: The mapping `map_cache` made, withdrawn above.
    let _ = unsafe { rustix::mm::munmap(base as *mut c_void, len as usize) };
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
    map_cache(old, &info);
    OWNER.store(getpid(), Release);
    Ok(())
}

/// Runs `op` on the context's fd; on `EPERM` from an fd inherited over fork, adopts and retries
/// once. `op` runs without the lock.
fn with_fd<T>(op: impl Fn(i32) -> Result<T, Errno>) -> Result<T, Errno> {
    let fd = fd()?;
    match op(fd) {
        Err(Errno::PERM) => {
            adopt_locked(&sys::lock(), fd)?;
            op(FD.load(Acquire))
        }
        r => r,
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
pub(crate) fn get_addr(module: u64, offset: u64) -> Result<u64, Errno> {
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

/// The fast path in Rust, for `kstls_get_tls_addr` (the assembly entry has its own copy).
pub(crate) fn fast_lookup(module: u64, offset: u64) -> Option<u64> {
    let cache = cache()?;
    let slots = cache + KSTLS_CACHE_SLOTS_OFFSET as u64;
    // The id's registry slot, modulo dtv_entries (a power of two): the entry may hold another
    // module of the same index, which the id compare below rejects.
    let idx = module & 0xffff_ffff & (KSTLS_CACHE_DTV_ENTRIES as u64 - 1);
    // SAFETY: `cache()` gave an address: the cache was published, which required %fs:0 to be the
    // FS base.
    let tp = unsafe { arch::thread_pointer() };
    let slot_mask = (1u64 << KSTLS_CACHE_SLOTS_LOG2) - 1;
    let mut h = tp.wrapping_mul(KSTLS_CACHE_HASH_MUL as u64) >> (64 - KSTLS_CACHE_SLOTS_LOG2);
    for _ in 0..KSTLS_CACHE_PROBES {
        h &= slot_mask;
        // SAFETY: `h <= slot_mask`, and `map_cache` checked the slot array lies in the mapping.
        let slot = unsafe { &*((slots + h * 16) as *const [AtomicU64; 2]) };
        // The order of uapi/kstls.h: dtv_offset, block, module, and the slot's tp last.
        let off = slot[1].load(Acquire);
        let e = cache + off.min(FAST.dtv_limit.load(Relaxed)) + idx * 16;
        // SAFETY: `off` is bounded by `dtv_limit` and `idx < dtv_entries`, which keeps the entry
        // in the mapping.
        let e = unsafe { &*(e as *const [AtomicU64; 2]) };
        let block = e[1].load(Acquire);
        let m = e[0].load(Acquire);
        if slot[0].load(Acquire) == tp {
            return (m == module && off <= FAST.dtv_limit.load(Relaxed))
                .then(|| block.wrapping_add(offset));
        }
        h += 1;
    }
    None
}

/// The calling thread's address of `offset` in `module`: the fast path, else `GET_ADDR`.
/// `EINVAL` for an id below `KSTLS_MODULE_ID_MIN` (never one of kstls's), which is not
/// forwarded anywhere.
pub(crate) fn tls_addr(module: u64, offset: u64) -> Result<u64, Errno> {
    if module < KSTLS_MODULE_ID_MIN {
        return Err(Errno::INVAL);
    }
    if let Some(addr) = fast_lookup(module, offset) {
        return Ok(addr);
    }
    get_addr(module, offset)
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
}

/// `KSTLS_IOC_REGISTER`, counted for the automatic close.
pub(crate) fn register(
    image: u64,
    filesz: u64,
    memsz: u64,
    align: u64,
    align_offset: u64,
) -> Result<u64, Errno> {
    let g = sys::lock();
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
    let g = sys::lock();
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
    unmap_cache();
    // SAFETY: `fd` was ours and is no longer published.
    drop(unsafe { OwnedFd::from_raw_fd(fd) });
}
