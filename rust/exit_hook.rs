// SPDX-License-Identifier: GPL-2.0

//! Tasks that leave an address space, seen by the module itself: probes on `sched_process_exit`
//! and `sched_prepare_exec`, and the index that finds such a task's cache slots.
//!
//! One `ExitHook` for the module, attached at load and detached at unload, and one global index,
//! `SLOTS`: an entry (task, cache) -> slot for every cache slot a task holds (`published`, after
//! `Cache::fill`), kept in two trees, by task for the probes and by cache for a cache that goes
//! (`remove_cache` visits only that cache's entries, however many other caches there are).
//! The exit probe runs in the exiting task before `exit_mm()` releases the thread's `clear_child_tid` futex, so the slot is gone before anybody can join the thread and
//! start another on the same stack and thread pointer. The exec probe runs in a task that is
//! about to leave its address space for a new program, before `exec_mmap()` lets a vfork parent
//! run again on the same thread pointer. Each looks the task up in `SLOTS` and forgets the slots
//! it finds: a lookup in a tree of the published tasks and one slot per cache the task holds,
//! whatever the number of caches and slots on the machine; a task that holds none (nearly every
//! task) costs one lookup, and none at all while no task holds a slot.
//!
//! Block reclamation does not need the probes (contexts see exited tasks lazily, `thread.rs`);
//! only the cache does, so when a tracepoint is missing kstls simply offers no cache. Lock order:
//! `SLOTS`, then a cache's own lock. A cache is taken out of `SLOTS` (`remove_cache`) before it
//! can be freed, so an entry's cache is always valid under the lock.

use core::{
    ffi::c_void,
    sync::atomic::{
        AtomicBool,
        AtomicUsize,
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
    sync::Arc, //
};

use crate::cache::Cache;
use crate::tracepoint::Probe;

/// The key of an entry: the task's and the cache's addresses (identities only); the same
/// two swapped in the tree by cache.
type Key = (usize, usize);

/// The two trees of the index, one entry in each per (task, cache).
struct Index {
    /// (task, cache) -> the slot.
    by_task: RBTree<Key, usize>,
    /// (cache, task).
    by_cache: RBTree<Key, ()>,
}

impl Index {
    fn new() -> Self {
        Self {
            by_task: RBTree::new(),
            by_cache: RBTree::new(),
        }
    }
}

kernel::sync::global_lock! {
    // SAFETY: `init` is called in the module initialiser, before the probes are registered and
    // before the device exists, so before any other use.
    unsafe(uninit) static SLOTS: SpinLock<Option<Index>> = None;
}

/// Entries in `SLOTS`: 0 lets the probes return at once.
static NR_SLOTS: AtomicUsize = AtomicUsize::new(0);

/// Whether both probes are attached: without them no cache may be handed out.
static ACTIVE: AtomicBool = AtomicBool::new(false);

/// Initialises the global index. Called once, from the module initialiser.
pub(crate) fn init() {
    // SAFETY: Called exactly once, before any other use of `SLOTS`.
    unsafe { SLOTS.init() };
}

/// Whether thread exits and execs are seen as they happen, so a cache may be used.
pub(crate) fn active() -> bool {
    ACTIVE.load(Ordering::Acquire)
}

/// Room for one entry of `SLOTS`, allocated before any lock is taken.
pub(crate) struct Room(
    RBTreeNodeReservation<Key, usize>,
    RBTreeNodeReservation<Key, ()>,
);

impl Room {
    pub(crate) fn new() -> Result<Self> {
        Ok(Self(
            RBTreeNodeReservation::new(GFP_KERNEL_ACCOUNT)?,
            RBTreeNodeReservation::new(GFP_KERNEL_ACCOUNT)?,
        ))
    }

    /// Bytes of kernel memory an entry takes, in both trees.
    pub(crate) fn bytes() -> usize {
        use core::mem::size_of;
        crate::budget::alloc_size(size_of::<bindings::rb_node>() + size_of::<(Key, usize)>())
            + crate::budget::alloc_size(size_of::<bindings::rb_node>() + size_of::<(Key, ())>())
    }
}

/// Records that the running task `task` holds `slot` of `cache` now (`Cache::fill` returned it).
/// A task's first slot in a cache needs `room`; a later one (it moved) replaces the entry.
/// Returns whether `room` was used.
pub(crate) fn published(
    task: usize,
    cache: &Arc<Cache>,
    slot: usize,
    room: &mut Option<Room>,
) -> bool {
    let c = Arc::as_ptr(cache) as usize;
    let mut g = SLOTS.lock();
    let index = g.get_or_insert_with(Index::new);
    if let Some(s) = index.by_task.get_mut(&(task, c)) {
        *s = slot;
        return false;
    }
    let Some(r) = room.take() else {
        return false;
    };
    index.by_task.insert(r.0.into_node((task, c), slot));
    index.by_cache.insert(r.1.into_node((c, task), ()));
    NR_SLOTS.fetch_add(1, Ordering::Relaxed);
    true
}

/// Forgets every slot `task` holds, in every cache: it is leaving its address space. Returns
/// how many entries it found (the work done, whatever the number of caches and slots).
pub(crate) fn forget_task(task: usize) -> usize {
    if NR_SLOTS.load(Ordering::Relaxed) == 0 {
        return 0;
    }
    let mut found = 0;
    let mut g = SLOTS.lock();
    let Some(index) = g.as_mut() else { return 0 };
    let mut cursor = index.by_task.cursor_lower_bound_mut(&(task, 0));
    while let Some(c) = cursor {
        let (&(t, cache), &slot) = c.current();
        if t != task {
            break;
        }
        // SAFETY: An entry's cache is valid while the entry is in `SLOTS` (under its lock):
        // `remove_cache` takes every entry of a cache out before the cache can go.
        unsafe { &*(cache as *const Cache) }.forget_slot(task, slot);
        let (next, node) = c.remove_current();
        // Freeing the nodes under the spinlock is fine: nothing sleeps, nothing allocates.
        drop(node);
        let _ = index.by_cache.remove(&(cache, task));
        NR_SLOTS.fetch_sub(1, Ordering::Relaxed);
        found += 1;
        cursor = next;
    }
    found
}

/// Takes every entry of `cache` out of `SLOTS` (its context is going away), visiting only
/// those; returns how many there were.
pub(crate) fn remove_cache(cache: &Arc<Cache>) -> usize {
    let addr = Arc::as_ptr(cache) as usize;
    let mut removed = 0;
    let mut g = SLOTS.lock();
    let Some(index) = g.as_mut() else { return 0 };
    let mut cursor = index.by_cache.cursor_lower_bound_mut(&(addr, 0));
    while let Some(c) = cursor {
        let &(cache, task) = c.current().0;
        if cache != addr {
            break;
        }
        let (next, node) = c.remove_current();
        drop(node);
        let _ = index.by_task.remove(&(task, cache));
        NR_SLOTS.fetch_sub(1, Ordering::Relaxed);
        removed += 1;
        cursor = next;
    }
    removed
}

/// The exit probe: `void (*)(void *data, struct task_struct *p, bool group_dead)`.
unsafe extern "C" fn on_exit(_data: *mut c_void, task: *mut bindings::task_struct, _dead: bool) {
    forget_task(task as usize);
}

/// The exec probe: `void (*)(void *data, struct task_struct *p, struct linux_binprm *bprm)`.
unsafe extern "C" fn on_exec(
    _data: *mut c_void,
    task: *mut bindings::task_struct,
    _bprm: *mut bindings::linux_binprm,
) {
    forget_task(task as usize);
}

/// The probes, detached on drop.
pub(crate) struct ExitHook {
    _exit: Option<Probe>,
    _exec: Option<Probe>,
}

impl ExitHook {
    /// Attaches the probes; without either the module still works, with no cache.
    pub(crate) fn new() -> Self {
        // SAFETY: `on_exit` and `on_exec` have the probe signatures of these tracepoints and live
        // as long as the module, which drops the `ExitHook` before it goes.
        let (exit, exec) = unsafe {
            (
                Probe::attach(c"sched_process_exit", on_exit as *mut c_void),
                Probe::attach(c"sched_prepare_exec", on_exec as *mut c_void),
            )
        };
        match (&exit, &exec) {
            (Ok(_), Ok(_)) => ACTIVE.store(true, Ordering::Release),
            (Err(e), _) | (_, Err(e)) => {
                pr_warn!(
                    "cannot attach to the exit or exec tracepoint ({:?}), the cache is off\n",
                    e
                );
            }
        }
        Self {
            _exit: exit.ok(),
            _exec: exec.ok(),
        }
    }
}

impl Drop for ExitHook {
    fn drop(&mut self) {
        ACTIVE.store(false, Ordering::Release);
    }
}

#[kunit_tests(rust_kstls_exit_hook)]
mod tests {
    use super::*;
    use crate::quota::ContextSlot;

    /// Task addresses no task has (kernel addresses are far above these).
    const TASK: usize = 0x7e00_0000;

    /// Takes the test's caches out of `SLOTS` however the test ends.
    struct Cleanup<'a>(&'a [Arc<Cache>]);

    impl Drop for Cleanup<'_> {
        fn drop(&mut self) {
            for c in self.0 {
                remove_cache(c);
            }
        }
    }

    #[test]
    fn exit_cost_does_not_grow_with_the_caches() -> Result {
        let u = ContextSlot::open_for(0x7ff8_0001, u64::MAX)?;
        let mut caches = KVec::new();
        for _ in 0..8 {
            caches.push(
                Arc::pin_init(Cache::new(2, false, u.quota())?, GFP_KERNEL)?,
                GFP_KERNEL,
            )?;
        }
        let _cleanup = Cleanup(&caches);
        // One task in one cache, another in all eight.
        let one = TASK;
        let all = TASK + 0x1000;
        let mut cached = 0u64;
        let slot = caches[3]
            .fill(one, 0x7f00_0000_1000, &mut cached, 1 << 32, 0, 0x9000)
            .ok_or(EINVAL)?;
        assert!(published(one, &caches[3], slot, &mut Some(Room::new()?)));
        for c in caches.iter() {
            let mut cached = 0u64;
            let slot = c
                .fill(all, 0x7f00_0040_1000, &mut cached, 1 << 32, 0, 0x9000)
                .ok_or(EINVAL)?;
            assert!(published(all, c, slot, &mut Some(Room::new()?)));
        }
        // A task that holds no slot finds nothing, however many caches there are.
        assert_eq!(forget_task(TASK + 0x2000), 0);
        // A cache that goes takes its own entries only, whatever the others hold.
        let lone = Arc::pin_init(Cache::new(2, false, u.quota())?, GFP_KERNEL)?;
        let mut cached = 0u64;
        let slot = lone
            .fill(TASK + 0x5000, 0x7f00_0080_1000, &mut cached, 1 << 32, 0, 0x9000)
            .ok_or(EINVAL)?;
        assert!(published(TASK + 0x5000, &lone, slot, &mut Some(Room::new()?)));
        assert_eq!(remove_cache(&lone), 1);
        assert_eq!(remove_cache(&lone), 0);
        // A task finds exactly the slots it holds, and they are forgotten.
        assert_eq!(forget_task(one), 1);
        assert_eq!(caches[3].cached_threads(), 1);
        assert_eq!(forget_task(all), 8);
        assert!(caches.iter().all(|c| c.cached_threads() == 0));
        assert_eq!(forget_task(one), 0);
        Ok(())
    }

    #[test]
    fn a_task_that_moved_is_found_at_its_new_slot_and_a_closed_cache_is_gone() -> Result {
        let u = ContextSlot::open_for(0x7ff8_0002, u64::MAX)?;
        let c = Arc::pin_init(Cache::new(2, false, u.quota())?, GFP_KERNEL)?;
        let caches = [c];
        let _cleanup = Cleanup(&caches);
        let c = &caches[0];
        let task = TASK + 0x3000;
        let mut cached = 0u64;
        let mut room = Some(Room::new()?);
        let first = c
            .fill(task, 0x7f00_0000_1000, &mut cached, 1 << 32, 0, 0x9000)
            .ok_or(EINVAL)?;
        assert!(published(task, c, first, &mut room));
        // The thread changed its thread pointer: a new slot, the same entry.
        let moved = c
            .fill(task, 0x7f00_4000_1000, &mut cached, 1 << 32, 0, 0x9000)
            .ok_or(EINVAL)?;
        assert_ne!(moved, first);
        assert!(!published(task, c, moved, &mut None));
        assert_eq!(forget_task(task), 1);
        assert_eq!(c.cached_threads(), 0);
        // A cache that goes takes its entries with it.
        let mut cached = 0u64;
        let slot = c
            .fill(task, 0x7f00_0000_1000, &mut cached, 1 << 32, 0, 0x9000)
            .ok_or(EINVAL)?;
        assert!(published(task, c, slot, &mut Some(Room::new()?)));
        remove_cache(c);
        assert_eq!(forget_task(task), 0);
        Ok(())
    }
}
