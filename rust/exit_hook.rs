// SPDX-License-Identifier: GPL-2.0

//! Thread exit, seen by the driver itself: a probe on the `sched_process_exit` tracepoint.
//!
//! One `ExitHook` for the driver, registered at load and unregistered at unload, and one global
//! table of the caches that exist (`CACHES`). The probe runs in the exiting task, before
//! `exit_mm()` releases the thread's `clear_child_tid` futex, so the thread's cache slot is gone
//! before anybody can join it and start a thread on the same stack and thread pointer. Block
//! reclamation does not need it (contexts see `PF_EXITING` lazily); only the cache does, so when
//! the tracepoint is missing kstls simply offers no cache.
//!
//! The `kernel` crate has no tracepoint-probe abstraction, so the raw bindings are wrapped here,
//! once. Lock order: `CACHES`, then a cache's own lock.

use core::{
    ffi::c_void,
    ptr,
    sync::atomic::{
        AtomicBool,
        Ordering, //
    },
};

use kernel::{
    bindings,
    prelude::*,
    rbtree::{
        RBTree,
        RBTreeNodeReservation, //
    },
    sync::Arc,
};

use crate::arch;
use crate::cache::Cache;

kernel::sync::global_lock! {
    // SAFETY: `init_caches` is called in the driver's initialiser, before the probe is registered
    // and before the device exists, so before any other use.
    unsafe(uninit) static CACHES: SpinLock<Option<RBTree<usize, Arc<Cache>>>> = None;
}

/// Whether the probe is registered: without it no cache may be handed out.
static ACTIVE: AtomicBool = AtomicBool::new(false);

/// Initialises the global table. Called once, from the driver's initialiser.
pub(crate) fn init_caches() {
    // SAFETY: Called exactly once, before any other use of `CACHES`.
    unsafe { CACHES.init() };
}

/// Whether thread exits are seen as they happen, so a cache may be used.
pub(crate) fn active() -> bool {
    ACTIVE.load(Ordering::Acquire)
}

/// Makes `cache` visible to the exit probe. The tree node is allocated before the lock is taken.
pub(crate) fn add_cache(cache: &Arc<Cache>) -> Result {
    let node = RBTreeNodeReservation::new(GFP_KERNEL_ACCOUNT)?;
    let key = Arc::as_ptr(cache) as usize;
    let mut g = CACHES.lock();
    g.get_or_insert_with(RBTree::new)
        .insert(node.into_node(key, cache.clone()));
    Ok(())
}

/// Hides `cache` from the exit probe (its context is going away).
pub(crate) fn remove_cache(cache: &Arc<Cache>) {
    let key = Arc::as_ptr(cache) as usize;
    let removed = CACHES.lock().as_mut().and_then(|t| t.remove_node(&key));
    // The last reference may be the one in the tree: drop it after the lock.
    drop(removed);
}

/// The probe: `void (*)(void *data, struct task_struct *p, bool group_dead)`.
unsafe extern "C" fn on_exit(_data: *mut c_void, task: *mut bindings::task_struct, _dead: bool) {
    // SAFETY: The tracepoint passes the exiting task, which is `current` and valid; `mm` is still
    // set, since `exit_mm()` runs after this tracepoint. It is compared, never dereferenced.
    let mm = unsafe { ptr::read_volatile(&raw const (*task).mm) } as usize;
    if mm == 0 {
        return;
    }
    // The exiting task is the one running: its FS base is the thread pointer it was cached by.
    let tp = arch::current_fsbase();
    let g = CACHES.lock();
    if let Some(tree) = g.as_ref() {
        for c in tree.values().filter(|c| c.mm == mm) {
            c.forget_task(task as usize, tp);
        }
    }
}

/// Looks for `sched_process_exit` among the kernel's tracepoints.
unsafe extern "C" fn find_exit_tp(tp: *mut bindings::tracepoint, out: *mut c_void) {
    // SAFETY: `for_each_kernel_tracepoint` passes valid tracepoints whose names are static C
    // strings; `out` is the `*mut *mut tracepoint` that `ExitHook::new` passed in.
    unsafe {
        if CStr::from_char_ptr((*tp).name) == c"sched_process_exit" {
            *out.cast::<*mut bindings::tracepoint>() = tp;
        }
    }
}

/// The registration of the probe, undone on drop.
pub(crate) struct ExitHook {
    tp: *mut bindings::tracepoint,
}

// SAFETY: `tp` points to a static kernel tracepoint; registering and unregistering probes is
// allowed from any thread.
unsafe impl Send for ExitHook {}
// SAFETY: `ExitHook` has no methods that use `tp` through a shared reference.
unsafe impl Sync for ExitHook {}

impl ExitHook {
    /// Registers the probe; without the tracepoint the driver still works, with no cache.
    pub(crate) fn new() -> Self {
        let mut tp: *mut bindings::tracepoint = ptr::null_mut();
        // SAFETY: `find_exit_tp` matches the callback type and only writes through `out`, which
        // points to `tp`, live for the call.
        unsafe { bindings::for_each_kernel_tracepoint(Some(find_exit_tp), (&raw mut tp).cast()) };
        if tp.is_null() {
            pr_warn!("no sched_process_exit tracepoint, the fast-path cache is off\n");
            return Self { tp };
        }
        // SAFETY: `tp` is a kernel tracepoint and `on_exit` has its probe signature; the probe
        // is unregistered in `drop` before the driver's text goes away.
        let ret = unsafe {
            bindings::tracepoint_probe_register(tp, on_exit as *mut c_void, ptr::null_mut())
        };
        if ret != 0 {
            pr_warn!(
                "cannot attach to sched_process_exit ({}), the cache is off\n",
                ret
            );
            return Self {
                tp: ptr::null_mut(),
            };
        }
        ACTIVE.store(true, Ordering::Release);
        Self { tp }
    }
}

impl Drop for ExitHook {
    fn drop(&mut self) {
        if self.tp.is_null() {
            return;
        }
        ACTIVE.store(false, Ordering::Release);
        // SAFETY: The probe was registered with these arguments in `new`. `tracepoint_srcu` is
        // the SRCU domain non-faultable tracepoints run their probes in: after the grace period
        // no CPU is still inside `on_exit`, so the driver may be unloaded.
        unsafe {
            bindings::tracepoint_probe_unregister(self.tp, on_exit as *mut c_void, ptr::null_mut());
            bindings::synchronize_srcu(&raw mut bindings::tracepoint_srcu);
        }
    }
}
