// SPDX-License-Identifier: GPL-2.0

//! kstls: thread-local storage served by the kernel, through the misc device `/dev/kstls`.
//!
//! A process opens `/dev/kstls` and gets a context (see `context.rs`): it registers each TLS
//! module (the `PT_TLS` header of an executable or shared object) and asks, per thread, for the
//! address of a variable in that thread's block, which the driver allocates in the process's own
//! memory on first touch, with `.tdata` copied and `.tbss` zeroed and the address congruent to
//! `p_vaddr` modulo `p_align`. This is what `__tls_get_addr` needs, served without any libc's
//! dynamic linker. The ABI is `uapi/linux/kstls.h`.
//!
//! Words used in these files, each for one thing only:
//! - *module*: a TLS module, what one `PT_TLS` program header describes (`TlsModule`), named by
//!   a *module id* (`ModuleId`) whose low 32 bits are its *index* (its place in the registry and
//!   in every thread's table) and whose high 32 bits are the *generation* of that place. kstls.ko
//!   itself is *the driver* (`KstlsDriver`; its parameters keep the kernel's name, module
//!   parameters), and a Rust source file is a *file*.
//! - *block*: one thread's TLS block of one module, in the process's memory. It comes from the
//!   module's *storage*: a *pool* of *arenas* (mappings blocks are carved from), or, for a small
//!   module, a *column* of every thread's *row* (a page that holds the thread's small blocks).
//! - *table*: one thread's record of its blocks, by module index (`Thread`).
//! - *slot*: a place in the fast-path cache's hash table, keyed by a thread pointer, as in
//!   `struct kstls_cache_slot`; a cached thread's *entries* (`struct kstls_cache_dtv_entry`) hold
//!   one module each, at the module's index modulo the entries per thread.
//!
//! Files, each using only files listed before it (and the parameters `module!` declares here):
//! `uapi.rs` (the generated ABI, its layout checked at compile time, and the checks every
//! command's input passes), `arch.rs` (the thread pointer), `limits.rs` (the caps and the
//! driver's parameters), `usermem.rs` (the raw `vm_mmap` bindings, wrapped once), `quota.rs`
//! (the kernel memory of one user's contexts, against `max_user_kbytes`), `tracepoint.rs` (the
//! raw tracepoint-probe bindings, wrapped once), `layout.rs` (a module's block geometry),
//! `mark.rs` (the fork mark, the page through which a forked child's copy tells what fork
//! copied), `budget.rs` (the memory a context holds against its caps and its user's quota),
//! `pid.rs` (a reference to a `struct pid`, wrapped once), `pool.rs`
//! (arenas and the blocks carved from them), `rows.rs` (the rows and their columns), `block.rs`
//! (a module's storage, and first touch), `thread.rs` (one table per thread), `registry.rs`
//! (modules and ids), `threads.rs` (the tables of a context, and exited threads), `cache.rs`
//! (the fast-path pages), `exit_hook.rs` (forgetting tasks that exit or exec, by an index of
//! their cache slots), `stats.rs` (`INFO`, `STATS` and fdinfo), `fork.rs` (what a forked child
//! adopts, fitted to its copy), `fork_log.rs` (the forks recorded as they happen, per process,
//! and the states kept for children that have not adopted),
//! `context.rs` (one per open file), and this one (the device and the ioctl dispatch).
//!
//! A complete user-space program that uses every ioctl, including one that must fail:
//!
//! ```c
//! #include <assert.h>
//! #include <errno.h>
//! #include <fcntl.h>
//! #include <stdio.h>
//! #include <string.h>
//! #include <sys/ioctl.h>
//! #include <unistd.h>
//! #include <linux/kstls.h>
//!
//! static const char image[8] = "kstls!";   /* .tdata: 8 bytes, then 8 bytes of .tbss */
//!
//! int main(void)
//! {
//!         struct kstls_info info = { 0 };
//!         struct kstls_register reg = {
//!                 .image = (__u64)(unsigned long)image, .filesz = 8, .memsz = 16,
//!                 .align = 16, .align_offset = 0,
//!         };
//!         struct kstls_get_addr ga = { 0 };
//!         struct kstls_stats st = { 0 };
//!         struct kstls_unregister unreg = { 0 };
//!         int fd = open(KSTLS_DEVICE_PATH, O_RDWR | O_CLOEXEC);
//!
//!         if (fd < 0 || ioctl(fd, KSTLS_IOC_INFO, &info))
//!                 return perror("kstls"), 1;
//!         printf("abi %u, max %u modules\n", info.abi_version, info.max_modules);
//!
//!         if (ioctl(fd, KSTLS_IOC_REGISTER, &reg))
//!                 return perror("REGISTER"), 1;
//!
//!         ga.ti.module = reg.module;
//!         ga.ti.offset = 0;
//!         if (ioctl(fd, KSTLS_IOC_GET_ADDR, &ga))
//!                 return perror("GET_ADDR"), 1;
//!         char *block = (char *)(unsigned long)ga.addr;
//!         assert(ga.addr % 16 == 0 && !strcmp(block, "kstls!") && block[15] == 0);
//!
//!         st.module = reg.module;
//!         if (ioctl(fd, KSTLS_IOC_STATS, &st))
//!                 return perror("STATS"), 1;
//!         printf("%llu lookups, %llu blocks\n", st.lookups, st.blocks);
//!
//!         /* Must fail: the offset lies outside the module's 16 bytes. */
//!         ga.ti.offset = 16;
//!         assert(ioctl(fd, KSTLS_IOC_GET_ADDR, &ga) == -1 && errno == EINVAL);
//!
//!         unreg.module = reg.module;
//!         if (ioctl(fd, KSTLS_IOC_UNREGISTER, &unreg))
//!                 return perror("UNREGISTER"), 1;
//!         close(fd);
//!         return 0;
//! }
//! ```

use kernel::{
    fs::{
        File,
        LocalFile, //
    },
    ioctl::_IOC_SIZE,
    miscdevice::{
        MiscDevice,
        MiscDeviceOptions,
        MiscDeviceRegistration, //
    },
    mm::virt::VmaNew,
    prelude::*,
    seq_file::SeqFile,
    uaccess::{
        UserPtr,
        UserSlice, //
    },
};

mod arch;
mod block;
mod budget;
mod cache;
mod context;
mod exit_hook;
mod fork;
mod fork_log;
mod layout;
mod limits;
mod mark;
mod pid;
mod pool;
mod quota;
mod registry;
mod rows;
mod stats;
mod thread;
mod threads;
mod tracepoint;
mod uapi;
mod usermem;

use context::Context;
use uapi::*;

module! {
    type: KstlsDriver,
    name: "kstls",
    authors: ["The kstls developers"],
    description: "Thread-local storage served by the kernel (/dev/kstls)",
    license: "GPL",
    params: {
        strict: bool {
            default: false,
            description: "Strict mode for every process: no cache, every TLS access traps",
        },
        cache_threads: u32 {
            default: 1024,
            description: "Threads per process in the fast-path cache (4 KiB each); 0: no cache",
        },
        max_user_kbytes: u64 {
            default: 49152,
            description: "KiB of kernel memory the contexts of one user may keep (EDQUOT past it)",
        },
    },
}

/// The driver: kstls.ko, loaded once.
#[pin_data]
struct KstlsDriver {
    #[pin]
    _miscdev: MiscDeviceRegistration<KstlsDevice>,
    /// Dropped after the device is gone, so no context can still need them.
    _exit_hook: exit_hook::ExitHook,
    _fork_hook: fork_log::ForkHook,
}

impl kernel::InPlaceModule for KstlsDriver {
    fn init(_module: &'static ThisModule) -> impl PinInit<Self, Error> {
        exit_hook::init();
        quota::init();
        fork_log::init();
        thread::measure_pins();
        let hook = exit_hook::ExitHook::new();
        let fork_hook = fork_log::ForkHook::new();
        pr_info!(
            "ABI {}, /dev/kstls ready, cache {}\n",
            KSTLS_ABI_VERSION,
            if exit_hook::active() { "on" } else { "off" }
        );
        try_pin_init!(Self {
            _miscdev <- MiscDeviceRegistration::register(MiscDeviceOptions { name: c"kstls" }),
            _exit_hook: hook,
            _fork_hook: fork_hook,
        })
    }
}

/// The misc device; its per-open state is a `Context`.
struct KstlsDevice;

#[vtable]
impl MiscDevice for KstlsDevice {
    type Ptr = Pin<KBox<Context>>;

    fn open(_file: &File, _misc: &MiscDeviceRegistration<Self>) -> Result<Self::Ptr> {
        KBox::try_pin_init(Context::new()?, GFP_KERNEL_ACCOUNT)
    }

    fn ioctl(ctx: Pin<&Context>, file: &File, cmd: u32, arg: usize) -> Result<isize> {
        let size = _IOC_SIZE(cmd);
        match cmd {
            KSTLS_IOC_INFO => ioc_info(&ctx, user(arg, size)),
            KSTLS_IOC_REGISTER => ioc_register(&ctx, user(arg, size)),
            KSTLS_IOC_UNREGISTER => ioc_unregister(&ctx, user(arg, size)),
            KSTLS_IOC_GET_ADDR => ioc_get_addr(&ctx, arg),
            KSTLS_IOC_STATS => ioc_stats(&ctx, user(arg, size)),
            KSTLS_IOC_ADOPT => ioc_adopt(&ctx, file, user(arg, size)),
            KSTLS_IOC_SET_MODE => ioc_set_mode(&ctx, user(arg, size)),
            _ => Err(ENOTTY),
        }
        .map(|()| 0)
    }

    fn mmap(ctx: Pin<&Context>, _file: &File, vma: &VmaNew) -> Result {
        ctx.map_cache(vma)
    }

    fn show_fdinfo(ctx: Pin<&Context>, m: &SeqFile, _file: &File) {
        ctx.show(m);
    }
}

/// The user buffer an ioctl argument points to, `size` bytes as the command encodes.
fn user(arg: usize, size: usize) -> UserSlice {
    UserSlice::new(UserPtr::from_addr(arg), size)
}

fn ioc_info(ctx: &Context, buf: UserSlice) -> Result {
    let info = ctx.info()?;
    buf.writer().write(&info)
}

fn ioc_register(ctx: &Context, buf: UserSlice) -> Result {
    let (mut r, mut w) = buf.reader_writer();
    let mut reg: kstls_register = read_input(&mut r)?;
    reg.module = ctx.register(&reg)?;
    w.write(&reg)
}

fn ioc_unregister(ctx: &Context, buf: UserSlice) -> Result {
    let u: kstls_unregister = read_input(&mut buf.reader())?;
    ctx.unregister(u.module)
}

/// The strict path: one 16-byte copy in (the compiler's `tls_index`), one 8-byte copy out.
fn ioc_get_addr(ctx: &Context, arg: usize) -> Result {
    let ti: kstls_tls_index = user(arg, GET_ADDR_IN_SIZE).reader().read()?;
    let addr = ctx.get_addr(ti.module, ti.offset)?;
    let out = arg.checked_add(GET_ADDR_IN_SIZE).ok_or(EFAULT)?;
    user(out, core::mem::size_of::<u64>()).writer().write(&addr)
}

fn ioc_stats(ctx: &Context, buf: UserSlice) -> Result {
    let (mut r, mut w) = buf.reader_writer();
    let q: kstls_stats = read_input(&mut r)?;
    w.write(&ctx.stats(&q)?)
}

fn ioc_adopt(ctx: &Context, file: &File, buf: UserSlice) -> Result {
    let a: kstls_adopt = read_input(&mut buf.reader())?;
    let parent_file = LocalFile::fget(a.parent_fd)?;
    // SAFETY: Both files are kept alive by references (`file` by the ioctl, `parent_file` by
    // `fget`), so reading their `f_op` is valid; `misc_open` set it when they were opened and it
    // does not change afterwards.
    let ours = unsafe { (*parent_file.as_ptr()).f_op == (*file.as_ptr()).f_op };
    if !ours {
        return Err(EINVAL);
    }
    // SAFETY: A file with kstls's `f_op` was opened by `KstlsDevice::open`, so its private data is
    // the pointer `Pin<KBox<Context>>::into_foreign` returned; the context is dropped only by the
    // file's release, which cannot run while `parent_file` holds a reference.
    let parent = unsafe { &*((*parent_file.as_ptr()).private_data as *const Context) };
    ctx.adopt(parent)
}

fn ioc_set_mode(ctx: &Context, buf: UserSlice) -> Result {
    let m: kstls_mode = read_input(&mut buf.reader())?;
    ctx.set_mode(m.mode)
}
