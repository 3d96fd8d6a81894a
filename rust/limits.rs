// SPDX-License-Identifier: GPL-2.0

//! The policy every context follows: its caps (`Limits`) and the parameters of kstls.ko.
//!
//! There is one set of limits, `LIMITS`, which every context gets and `KSTLS_IOC_INFO` reports;
//! `Layout` checks a registration against it and `Budget` charges a context's memory against it.
//! The parameters of kstls.ko (`strict`, `cache_threads`) are read here and nowhere else.

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
