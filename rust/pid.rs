// SPDX-License-Identifier: GPL-2.0

//! A reference to a `struct pid`: who a process or thread is, without keeping its task.
//!
//! The `kernel` crate has no abstraction for `struct pid`, so the few bindings needed are
//! wrapped here, once. A `PinnedPid` keeps the `struct pid` (about a hundred bytes) from being
//! freed and its address from being reused, which makes it an identity that outlives the task:
//! a fork record and a context name their process by one instead of holding its
//! `task_struct` (about ten kilobytes, with its signal and credentials) after it is reaped.

use core::ptr::NonNull;

use kernel::{
    bindings,
    sync::{
        aref::ARef,
        rcu, //
    },
    task::{
        CurrentTask,
        Pid,
        Task, //
    },
};

/// A counted reference to a `struct pid`.
///
/// # Invariants
///
/// `ptr` points to a `struct pid` on which this value holds one reference.
pub(crate) struct PinnedPid {
    ptr: NonNull<bindings::pid>,
}

// SAFETY: A `struct pid` reference may be taken, used and dropped from any thread: its count is
// atomic and `put_pid` may run in any context.
unsafe impl Send for PinnedPid {}
// SAFETY: Shared use only reads the pointer and calls functions that are safe concurrently.
unsafe impl Sync for PinnedPid {}

/// The kernel memory a pinned `struct pid` keeps: the structure with one level of numbers per
/// pid namespace, up to four levels (an upper bound of what `alloc_pid` takes).
pub(crate) fn pinned_bytes() -> usize {
    crate::budget::alloc_size(
        core::mem::size_of::<bindings::pid>() + 3 * core::mem::size_of::<bindings::upid>(),
    )
}

impl PinnedPid {
    /// Takes a reference on `pid`.
    ///
    /// # Safety
    ///
    /// `pid` must point to a live `struct pid` (one the caller holds or that a live task uses).
    unsafe fn get(pid: *mut bindings::pid) -> Option<Self> {
        let ptr = NonNull::new(pid)?;
        // SAFETY: By the function's safety requirement the pid is live.
        Some(unsafe { Self::get_live(ptr) })
    }

    /// Takes a reference on the live `pid`.
    ///
    /// # Safety
    ///
    /// As for `get`.
    unsafe fn get_live(ptr: NonNull<bindings::pid>) -> Self {
        // SAFETY: By the function's safety requirement the pid is live; `get_pid` is
        // `refcount_inc` of its count.
        unsafe { bindings::refcount_inc(&raw mut (*ptr.as_ptr()).count) };
        // INVARIANT: One reference was just taken.
        Self { ptr }
    }

    /// The pid of the thread `task` (`task_pid`): for a process's first thread, the pid of the
    /// process too.
    pub(crate) fn of_thread(task: &Task) -> Option<Self> {
        // SAFETY: `task` is valid; `thread_pid` of a task that has not been released is a live
        // pid, and every task handed to us here is running or being forked.
        unsafe { Self::get((*task.as_ptr()).thread_pid) }
    }

    /// The pid of the process of the running task `task` (`task_tgid`).
    pub(crate) fn of_process(task: &Task) -> Option<Self> {
        // SAFETY: `task` is the running task, so its `signal` is valid and its TGID pid live.
        unsafe {
            let signal = (*task.as_ptr()).signal;
            Self::get((*signal).pids[bindings::pid_type_PIDTYPE_TGID as usize])
        }
    }

    /// Whether `task`'s process is the one this is the pid of (for a process's pid).
    pub(crate) fn is_process_of(&self, task: &Task) -> bool {
        // SAFETY: As in `of_process`: `task` is the running task.
        let tgid = unsafe {
            (*(*task.as_ptr()).signal).pids[bindings::pid_type_PIDTYPE_TGID as usize]
        };
        core::ptr::eq(tgid, self.ptr.as_ptr())
    }

    /// The task of type `ty` this pid names now (its thread, or its process's leader), if it
    /// still has one, with a reference.
    pub(crate) fn task(&self, ty: bindings::pid_type) -> Option<ARef<Task>> {
        self.with_task(ty, |t| ARef::from(t))
    }

    /// `f` applied to the task of type `ty` this pid names now, if any, without a reference:
    /// what a probe that must not sleep or free may do.
    pub(crate) fn with_task<R>(&self, ty: bindings::pid_type, f: impl FnOnce(&Task) -> R) -> Option<R> {
        let _rcu = rcu::read_lock();
        // SAFETY: As in `task`; the task is used only inside the RCU read-side section.
        unsafe {
            let t = bindings::pid_task(self.ptr.as_ptr(), ty);
            (!t.is_null()).then(|| f(&*t.cast::<Task>()))
        }
    }

    /// The number of this pid in the pid namespace of the running task `cur` (0 if it has none
    /// there).
    pub(crate) fn nr_seen_by(&self, cur: &CurrentTask) -> Pid {
        let ns = cur
            .active_pid_ns()
            .map_or(core::ptr::null_mut(), |ns| ns.as_ptr());
        // SAFETY: The pid is live; `ns` is the running task's active namespace (or null, for
        // which `pid_nr_ns` returns 0).
        unsafe { bindings::pid_nr_ns(self.ptr.as_ptr(), ns) }
    }
}

impl Clone for PinnedPid {
    fn clone(&self) -> Self {
        // SAFETY: This value holds a reference, so the pid is live.
        unsafe { Self::get_live(self.ptr) }
    }
}

impl Drop for PinnedPid {
    fn drop(&mut self) {
        // SAFETY: This value holds one reference (type invariant), given back here once.
        unsafe { bindings::put_pid(self.ptr.as_ptr()) };
    }
}
