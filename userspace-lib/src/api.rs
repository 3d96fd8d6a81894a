// SPDX-License-Identifier: GPL-2.0

//! The Rust API of the crate: [`Module`] (a TLS image registered with kstls, one per
//! registration), [`Image`] (the `PT_TLS`-like descriptor it is registered from), [`init`],
//! [`stats`] and the typed [`Error`]. Safe wrappers over the same code the C API uses
//! (`context.rs`, `selfreg.rs`); no allocation, no libc.
//!
//! Errors are decoded once, where the code path tells what an errno means: `ENOENT` is
//! [`Error::NoTlsSegment`] when the module's program headers have no `PT_TLS` (found before
//! `/dev/kstls` is touched) and [`Error::NoDevice`] when it comes from an operation on
//! `/dev/kstls`, whose only `ENOENT` is `open` failing (no kstls ioctl returns it).

use core::fmt;

use rustix::io::Errno;

use crate::context;
use crate::selfreg;
use crate::uapi::kstls_stats;

/// Why a kstls operation failed.
///
/// Every variant stands for the errno the C API returns for the same failure
/// ([`Error::errno`]); the kernel's limits behind [`Error::InvalidArgument`],
/// [`Error::TooLarge`], [`Error::NoMemory`] and [`Error::TooManyModules`] are those of
/// `KSTLS_IOC_INFO` (`uapi/linux/kstls.h`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// `/dev/kstls` does not exist (`ENOENT` from `open`): `kstls.ko` is not loaded. A device
    /// node left without its driver gives [`Error::Os`] with `ENODEV` instead.
    NoDevice,
    /// `/dev/kstls` speaks another ABI version than this crate (`EPROTO`).
    AbiMismatch,
    /// The address [`Module::register_self`] starts from lies in no loaded ELF module
    /// (`ENOEXEC`).
    NotElfModule,
    /// The module has no `PT_TLS` program header: it has no thread-local data (`ENOENT`).
    NoTlsSegment,
    /// The kernel refused an argument (`EINVAL`): an image descriptor that is not one
    /// (`memsz` 0 or below the `.tdata` size, an alignment that is not a power of two or above
    /// the limit, `align_offset >= align`), an offset at or past the module's size, or a module
    /// that is not registered (any more).
    InvalidArgument,
    /// The image is larger than one module may be, or the images of the process together
    /// exceed their limit (`E2BIG`).
    TooLarge,
    /// No memory for the thread's block, or the process's TLS blocks reached their limit
    /// (`ENOMEM`).
    NoMemory,
    /// The process has as many modules registered as kstls allows (`ENOSPC`); also when this
    /// copy of the crate holds 64 self-registered modules.
    TooManyModules,
    /// Any other errno: `EACCES` or `EPERM` on `/dev/kstls`, `EFAULT`, `ENODEV`, ...
    Os(i32),
}

impl Error {
    /// The errno the C API (`kstls.h`) returns, positive, for the same failure.
    pub const fn errno(self) -> i32 {
        match self {
            Error::NoDevice => Errno::NOENT.raw_os_error(),
            Error::AbiMismatch => Errno::PROTO.raw_os_error(),
            Error::NotElfModule => Errno::NOEXEC.raw_os_error(),
            Error::NoTlsSegment => Errno::NOENT.raw_os_error(),
            Error::InvalidArgument => Errno::INVAL.raw_os_error(),
            Error::TooLarge => Errno::TOOBIG.raw_os_error(),
            Error::NoMemory => Errno::NOMEM.raw_os_error(),
            Error::TooManyModules => Errno::NOSPC.raw_os_error(),
            Error::Os(e) => e,
        }
    }

    /// An error of an operation on `/dev/kstls`: opening it when needed, then an ioctl.
    fn device(e: Errno) -> Self {
        match e {
            Errno::NOENT => Error::NoDevice,
            Errno::PROTO => Error::AbiMismatch,
            Errno::INVAL => Error::InvalidArgument,
            Errno::TOOBIG => Error::TooLarge,
            Errno::NOMEM => Error::NoMemory,
            Errno::NOSPC => Error::TooManyModules,
            e => Error::Os(e.raw_os_error()),
        }
    }

    /// An error of `selfreg::locate`, which reads only the module's own headers.
    fn locate(e: Errno) -> Self {
        match e {
            Errno::NOEXEC => Error::NotElfModule,
            Errno::NOENT => Error::NoTlsSegment,
            e => Error::Os(e.raw_os_error()),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Error::NoDevice => f.write_str("/dev/kstls does not exist (is kstls.ko loaded?)"),
            Error::AbiMismatch => f.write_str("/dev/kstls speaks another kstls ABI version"),
            Error::NotElfModule => f.write_str("the address is in no loaded ELF module"),
            Error::NoTlsSegment => f.write_str("the module has no PT_TLS segment"),
            Error::InvalidArgument => f.write_str(
                "invalid argument (image descriptor, offset past the module, or unknown module)",
            ),
            Error::TooLarge => f.write_str("TLS image larger than kstls allows"),
            Error::NoMemory => f.write_str("no memory for the TLS block"),
            Error::TooManyModules => f.write_str("too many modules registered with kstls"),
            Error::Os(e) => match errno_name(e) {
                Some(name) => write!(f, "{name} (os error {e})"),
                None => write!(f, "os error {e}"),
            },
        }
    }
}

impl core::error::Error for Error {}

/// The symbolic name of the errnos [`Error::Os`] is likely to hold (no libc, so no
/// `strerror`).
fn errno_name(e: i32) -> Option<&'static str> {
    const NAMES: [(Errno, &str); 7] = [
        (Errno::PERM, "EPERM: operation not permitted"),
        (Errno::ACCESS, "EACCES: permission denied"),
        (Errno::FAULT, "EFAULT: bad address"),
        (Errno::NODEV, "ENODEV: no such device"),
        (Errno::NXIO, "ENXIO: no such device or address"),
        (Errno::BADF, "EBADF: bad file descriptor"),
        (Errno::NOTTY, "ENOTTY: not a kstls device"),
    ];
    NAMES
        .iter()
        .find(|(n, _)| n.raw_os_error() == e)
        .map(|&(_, s)| s)
}

/// Opens this copy's context on `/dev/kstls` now rather than at the first registration, so that
/// a missing module is reported early ([`Error::NoDevice`]). Calling it again is cheap.
///
/// In a process forked from one that used kstls, it also adopts the parent's context, so the
/// forking thread's TLS values carry over.
pub fn init() -> Result<(), Error> {
    context::fd_checked().map(|_| ()).map_err(Error::device)
}

/// Counters of the process's kstls context (`KSTLS_IOC_STATS`), over every module and thread
/// or narrowed by [`Module::stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Lookups the kernel answered (the slow path; fast-path hits are not counted).
    pub lookups: u64,
    /// Blocks allocated on a thread's first access to a module.
    pub allocs: u64,
    /// Blocks alive now.
    pub blocks: u64,
    /// Bytes of the blocks alive now.
    pub block_bytes: u64,
    /// Exited threads whose blocks were reclaimed (in the process-wide counters only).
    pub thread_exits: u64,
}

impl From<kstls_stats> for Stats {
    fn from(s: kstls_stats) -> Self {
        Stats {
            lookups: s.lookups,
            allocs: s.allocs,
            blocks: s.blocks,
            block_bytes: s.block_bytes,
            thread_exits: s.thread_exits,
        }
    }
}

/// The counters of this process's context, over all modules and threads. Counters of modules
/// registered through another copy of the library (a shared object that links `libkstls.a`)
/// are not included: each copy has its own context.
pub fn stats() -> Result<Stats, Error> {
    context::stats(0, 0).map(Stats::from).map_err(Error::device)
}

/// A TLS image to register with [`Module::register`]: what a `PT_TLS` program header
/// describes, with the initialisation data as a slice.
///
/// Each thread's block is `memsz` bytes: a copy of `tdata` (the `.tdata` part, `p_filesz`
/// bytes), then zeroes up to `memsz` (`.tbss`), at an address `a` with
/// `a % align == align_offset` (`p_vaddr % p_align` for an ELF module).
#[derive(Clone, Copy, Debug)]
pub struct Image<'a> {
    tdata: &'a [u8],
    memsz: u64,
    align: u64,
    align_offset: u64,
}

impl<'a> Image<'a> {
    /// An image of `memsz` bytes that starts with `tdata`, with no alignment constraint
    /// (`align` 1). `memsz` must be at least `tdata.len()` and not 0.
    pub const fn new(tdata: &'a [u8], memsz: u64) -> Self {
        Image {
            tdata,
            memsz,
            align: 1,
            align_offset: 0,
        }
    }

    /// The same image with every block at `align_offset` modulo `align`; `align` is a power of
    /// two (0 and 1 mean no constraint, as in ELF) up to kstls's limit (a page), and
    /// `align_offset < align`.
    pub const fn with_align(self, align: u64, align_offset: u64) -> Self {
        Image {
            align,
            align_offset,
            ..self
        }
    }

    /// The initialisation data (`.tdata`).
    pub const fn tdata(&self) -> &'a [u8] {
        self.tdata
    }

    /// The size of each thread's block.
    pub const fn memsz(&self) -> u64 {
        self.memsz
    }

    /// The alignment of each thread's block.
    pub const fn align(&self) -> u64 {
        self.align
    }

    /// The offset of each block from an `align` boundary.
    pub const fn align_offset(&self) -> u64 {
        self.align_offset
    }
}

/// How a [`Module`] was registered, which decides how it is unregistered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Origin {
    /// [`Module::register`]: the caller's image.
    Image,
    /// [`Module::register_self`]: the ELF module this crate is part of.
    OwnModule,
}

/// A TLS image registered with kstls: every thread of the process gets its own block of it,
/// allocated and initialised by the kernel on the thread's first [`Module::tls_addr`] and
/// reclaimed when the thread exits.
///
/// Dropping a `Module` does **not** unregister it: the registration belongs to the process, and
/// unregistering frees every thread's block, which the addresses [`Module::tls_addr`] handed
/// out (raw pointers, not tied to the handle) may still be used through; and the module
/// [`Module::register_self`] registers keeps running with its TLS after the handle is gone.
/// Unregistering is explicit: [`Module::unregister`].
#[derive(Debug, PartialEq, Eq)]
pub struct Module {
    id: u64,
    origin: Origin,
    memsz: u64,
}

/// An address inside this crate's code, hence inside the ELF module (executable or shared
/// object) the crate is linked into.
fn anchor() -> usize {
    anchor as fn() -> usize as usize
}

impl Module {
    /// Registers the TLS image `image` with kstls. The kernel copies `image.tdata()` now, so the
    /// slice need not outlive the call, and later changes to it are not seen by new threads.
    ///
    /// # Errors
    ///
    /// [`Error::NoDevice`] without `kstls.ko`; [`Error::InvalidArgument`] for a descriptor
    /// that is not one (see [`Image`]); [`Error::TooLarge`], [`Error::TooManyModules`] at
    /// kstls's limits; [`Error::Os`] for anything else (`EACCES` opening `/dev/kstls`, say).
    pub fn register(image: &Image<'_>) -> Result<Module, Error> {
        let tdata = image.tdata;
        let id = context::register(
            tdata.as_ptr() as usize as u64,
            tdata.len() as u64,
            image.memsz,
            image.align,
            image.align_offset,
        )
        .map_err(Error::device)?;
        Ok(Module {
            id,
            origin: Origin::Image,
            memsz: image.memsz,
        })
    }

    /// Registers the `PT_TLS` segment of the ELF module this crate is linked into: the
    /// executable for an ordinary Rust program, the shared object for a `cdylib`. The module is
    /// found from the address of a function of this crate (the nearest ELF header below it
    /// whose `PT_LOAD` segments cover it, read in memory). Registering it again returns a
    /// handle with the same id.
    ///
    /// The module's compiled TLS accesses do not change: the crate leaves its GOT alone, so a
    /// `thread_local!` keeps being served by the program's libc (an executable reaches it
    /// through `%fs` directly). What kstls gives is one more block per thread, initialised from
    /// the module's TLS image, at [`Module::tls_addr`]. (The C library's
    /// `kstls_register_self` does redirect the module's `__tls_get_addr` calls; a `cdylib`
    /// gets that by linking `libkstls.a`, see the README.)
    ///
    /// # Errors
    ///
    /// [`Error::NotElfModule`] when no ELF header is found, [`Error::NoTlsSegment`] when the
    /// module has no thread-local data, then the errors of [`Module::register`].
    pub fn register_self() -> Result<Module, Error> {
        let (m, tls) = selfreg::locate(anchor()).map_err(Error::locate)?;
        // SAFETY: `m` contains this function, so it is mapped, relocated (its code runs) and
        // stays loaded while this call runs; without the `capi` feature (an rlib in a Rust
        // program) the module is only read, never written.
        let id = unsafe { selfreg::register_module(&m, tls, None) }.map_err(Error::device)?;
        Ok(Module {
            id,
            origin: Origin::OwnModule,
            memsz: tls.p_memsz,
        })
    }

    /// The module's kstls id (always at least `KSTLS_MODULE_ID_MIN`, `1 << 32`): the `module`
    /// of a `tls_index` that `__tls_get_addr` of the C library serves, and the id that
    /// `KSTLS_IOC_STATS` and `/proc/<pid>/fdinfo/<fd>` show.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The size of each thread's block (`memsz`).
    pub fn size(&self) -> u64 {
        self.memsz
    }

    /// The calling thread's address of byte `offset` of its block, allocated and initialised
    /// by the kernel on the thread's first call: the same address on every call in one thread,
    /// a different block in every thread. Usually a few loads (the kernel's read-only cache),
    /// else one ioctl.
    ///
    /// The block stays valid until the thread exits or the module is unregistered; using the
    /// pointer after that, or from another thread after its owner exited, is a use after free.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for `offset >= self.size()` or a module unregistered
    /// meanwhile (through another handle); [`Error::NoMemory`] when the block cannot be
    /// allocated.
    pub fn tls_addr(&self, offset: u64) -> Result<*mut u8, Error> {
        // The kernel refuses such an offset, but the cache, which knows no sizes, would not.
        if offset >= self.memsz {
            return Err(Error::InvalidArgument);
        }
        context::tls_addr(self.id, offset)
            .map(|a| a as usize as *mut u8)
            .map_err(Error::device)
    }

    /// The counters of this module: over every thread, or of the thread `tid` (0: all).
    pub fn stats(&self, tid: u32) -> Result<Stats, Error> {
        context::stats(self.id, tid)
            .map(Stats::from)
            .map_err(Error::device)
    }

    /// Unregisters the module: the kernel frees every thread's block, and its id is never
    /// valid again (a later registration gets another one). When this copy of the crate has
    /// no module left, it closes its context on `/dev/kstls`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] when it was unregistered already (through another handle
    /// for the same [`Module::register_self`] registration).
    pub fn unregister(self) -> Result<(), Error> {
        match self.origin {
            Origin::Image => context::unregister(self.id),
            Origin::OwnModule => selfreg::unregister_id(self.id),
        }
        .map_err(Error::device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_errors_are_shown_by_name_and_number() {
        assert_eq!(
            Error::Os(1).to_string(),
            "EPERM: operation not permitted (os error 1)"
        );
        assert_eq!(
            Error::Os(25).to_string(),
            "ENOTTY: not a kstls device (os error 25)"
        );
        assert_eq!(Error::Os(4095).to_string(), "os error 4095");
        assert_eq!(Error::Os(-3).to_string(), "os error -3");
    }

    #[test]
    fn every_named_errno_is_its_own() {
        for e in [1, 13, 14, 19, 6, 9, 25] {
            let text = Error::Os(e).to_string();
            assert!(text.ends_with(&format!("(os error {e})")), "{text}");
            assert!(text.starts_with('E'), "{text}");
        }
    }

    #[test]
    fn typed_errors_read_as_sentences() {
        assert_eq!(
            Error::NoDevice.to_string(),
            "/dev/kstls does not exist (is kstls.ko loaded?)"
        );
        assert_eq!(
            Error::NoTlsSegment.to_string(),
            "the module has no PT_TLS segment"
        );
    }

    #[test]
    fn device_errors_map_to_variants_and_back() {
        let cases = [
            (Errno::NOENT, Error::NoDevice),
            (Errno::PROTO, Error::AbiMismatch),
            (Errno::INVAL, Error::InvalidArgument),
            (Errno::TOOBIG, Error::TooLarge),
            (Errno::NOMEM, Error::NoMemory),
            (Errno::NOSPC, Error::TooManyModules),
            (Errno::ACCESS, Error::Os(13)),
        ];
        for (e, want) in cases {
            assert_eq!(Error::device(e), want);
            assert_eq!(Error::device(e).errno(), e.raw_os_error());
        }
    }

    #[test]
    fn enoent_means_no_tls_segment_when_locating() {
        assert_eq!(Error::locate(Errno::NOENT), Error::NoTlsSegment);
        assert_eq!(Error::locate(Errno::NOEXEC), Error::NotElfModule);
        assert_eq!(Error::locate(Errno::FAULT), Error::Os(14));
        assert_eq!(Error::NoTlsSegment.errno(), Error::NoDevice.errno());
    }

    #[test]
    fn offsets_past_the_module_are_refused_before_any_lookup() {
        let m = Module {
            id: crate::uapi::KSTLS_MODULE_ID_MIN,
            origin: Origin::Image,
            memsz: 16,
        };
        assert_eq!(m.tls_addr(16), Err(Error::InvalidArgument));
        assert_eq!(m.tls_addr(u64::MAX), Err(Error::InvalidArgument));
    }
}
