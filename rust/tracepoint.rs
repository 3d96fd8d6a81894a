// SPDX-License-Identifier: GPL-2.0

//! Probes on the kernel's tracepoints, attached the way out-of-tree tracers (LTTng-modules) do.
//!
//! The `kernel` crate has no tracepoint-probe abstraction, so the raw bindings are wrapped here,
//! once: a tracepoint is found by name among the kernel's (`for_each_kernel_tracepoint`) and a
//! probe registered on it (`tracepoint_probe_register`); a `Probe` unregisters it when dropped,
//! and waits until no CPU can still be running it, so the module text may go afterwards. kstls
//! attaches to `sched_process_exit`, `sched_prepare_exec` and `sched_process_fork`.

use core::{
    ffi::c_void,
    ptr, //
};

use kernel::{
    bindings,
    prelude::*, //
};

/// Looks for the tracepoint whose name is in `*out` (a `Lookup`) among the kernel's.
unsafe extern "C" fn match_name(tp: *mut bindings::tracepoint, out: *mut c_void) {
    // SAFETY: `for_each_kernel_tracepoint` passes valid tracepoints whose names are static C
    // strings; `out` is the `Lookup` that `find` passed in, live for the call.
    unsafe {
        let l = &mut *out.cast::<Lookup>();
        if CStr::from_char_ptr((*tp).name) == l.name {
            l.found = tp;
        }
    }
}

struct Lookup {
    name: &'static CStr,
    found: *mut bindings::tracepoint,
}

/// A probe registered on a tracepoint, unregistered on drop.
pub(crate) struct Probe {
    tp: *mut bindings::tracepoint,
    func: *mut c_void,
}

// SAFETY: `tp` points to a static kernel tracepoint and `func` to a function of this module;
// registering and unregistering probes is allowed from any thread.
unsafe impl Send for Probe {}
// SAFETY: `Probe` has no methods that use its pointers through a shared reference.
unsafe impl Sync for Probe {}

impl Probe {
    /// Registers `func` on the tracepoint `name`. `ENOENT` when the kernel has no such
    /// tracepoint, else the error of the registration.
    ///
    /// # Safety
    ///
    /// `func` must be an `unsafe extern "C"` function with the probe signature of that
    /// tracepoint (`void *data` first, then the tracepoint's arguments), valid until the `Probe`
    /// is dropped.
    pub(crate) unsafe fn attach(name: &'static CStr, func: *mut c_void) -> Result<Self> {
        let mut l = Lookup {
            name,
            found: ptr::null_mut(),
        };
        // SAFETY: `match_name` matches the callback type and only writes through `out`, which
        // points to `l`, live for the call.
        unsafe { bindings::for_each_kernel_tracepoint(Some(match_name), (&raw mut l).cast()) };
        if l.found.is_null() {
            return Err(ENOENT);
        }
        // SAFETY: `l.found` is a kernel tracepoint and the caller guarantees that `func` has its
        // probe signature; the probe is unregistered in `drop`.
        let ret = unsafe { bindings::tracepoint_probe_register(l.found, func, ptr::null_mut()) };
        if ret != 0 {
            return Err(Error::from_errno(ret));
        }
        Ok(Self { tp: l.found, func })
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        // SAFETY: The probe was registered with these arguments in `attach`. `tracepoint_srcu`
        // is the SRCU domain non-faultable tracepoints run their probes in: after the grace
        // period no CPU is still inside the probe.
        unsafe {
            bindings::tracepoint_probe_unregister(self.tp, self.func, ptr::null_mut());
            bindings::synchronize_srcu(&raw mut bindings::tracepoint_srcu);
        }
    }
}
