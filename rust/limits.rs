// SPDX-License-Identifier: GPL-2.0

//! The policy every context follows: its caps (`Limits`) and the parameters of kstls.ko.
//!
//! There is one set of limits, `LIMITS`, which every context gets and `KSTLS_IOC_INFO` reports;
//! `Layout` checks a registration against it and `Budget` charges a context's memory against it.
//! Above the contexts, every user has a quota of kernel memory for all of its contexts
//! (`quota.rs`), whose size is the parameter `max_user_kbytes`. The parameters of kstls.ko
//! (`strict`, `cache_threads`, `max_user_kbytes`) are read here and nowhere else.

/// Per-context caps; every one is reported by `KSTLS_IOC_INFO`.
pub(crate) struct Limits {
    /// Modules registered at once (`ENOSPC` past it).
    pub(crate) max_modules: u32,
    /// Largest `p_align` (`EINVAL` past it): arenas are page aligned, so up to a page is exact.
    pub(crate) max_align: u32,
    /// Largest `p_memsz` of one module (`E2BIG` past it).
    pub(crate) max_image_size: u64,
    /// Sum of the `.tdata` snapshots kept in kernel memory (`E2BIG` past it).
    pub(crate) max_image_total: u64,
    /// Bytes of user memory mapped for blocks (`ENOMEM` past it).
    pub(crate) max_block_bytes: u64,
}

/// The limits every context gets.
pub(crate) const LIMITS: Limits = Limits {
    max_modules: 1024,
    max_align: kernel::page::PAGE_SIZE as u32,
    max_image_size: 1 << 20,
    max_image_total: 16 << 20,
    max_block_bytes: 256 << 20,
};

/// Whether the `strict` parameter forces strict mode on every context.
pub(crate) fn strict_forced() -> bool {
    crate::module_parameters::strict.value()
}

/// Threads one cache holds (the `cache_threads` parameter); 0 turns the cache off.
pub(crate) fn cache_threads() -> usize {
    crate::module_parameters::cache_threads.value() as usize
}

/// Bytes of kernel memory all contexts of one user may keep (the `max_user_kbytes` parameter).
pub(crate) fn max_user_bytes() -> u64 {
    crate::module_parameters::max_user_kbytes
        .value()
        .saturating_mul(1024)
}
