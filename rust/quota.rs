// SPDX-License-Identifier: GPL-2.0

//! The kernel memory one user's contexts keep, counted against the per-user caps.
//!
//! `/dev/kstls` is open to every local user, so what one user can make the kernel keep is bounded
//! per user, not only per context: one `UserQuota` per user (the effective uid that opened the
//! file) with a context open, shared by all of that user's contexts and kept in the global table
//! `USERS` while any of them exists (`ContextSlot` counts them). It counts the bytes of kernel
//! memory they keep against `max_user_kbytes` (`EDQUOT` past it, as a keyring's quota): the
//! contexts themselves, images, registries, thread tables, pools, caches, fork snapshots. A
//! context's `Budget` charges here before it allocates and gives back what it frees; whatever it
//! still holds goes back when the context is dropped. What is kept outside a budget (a cache, a
//! fork snapshot) holds a `Charge`, given back when it is dropped.
//!
//! The cap is a module parameter, read when a user's first context opens (`limits.rs`). Every
//! charged allocation is also made with `GFP_KERNEL_ACCOUNT`, so the user's memory cgroup sees
//! and limits it too.

use core::sync::atomic::{
    AtomicU64,
    AtomicUsize,
    Ordering, //
};

use kernel::{
    prelude::*,
    rbtree::{
        RBTree,
        RBTreeNodeReservation, //
    },
    sync::Arc,
    task::Kuid, //
};

kernel::sync::global_lock! {
    // SAFETY: `init` is called in the module initialiser, before the device exists, so before
    // any other use.
    unsafe(uninit) static USERS: SpinLock<Option<RBTree<u32, Arc<UserQuota>>>> = None;
}

/// Initialises the global table. Called once, from the module initialiser.
pub(crate) fn init() {
    // SAFETY: Called exactly once, before any other use of `USERS`.
    unsafe { USERS.init() };
}

/// What one user's contexts hold now, against the user's cap.
pub(crate) struct UserQuota {
    uid: u32,
    /// Bytes of kernel memory all of them may keep.
    max_bytes: u64,
    /// Contexts open now (`ContextSlot`s).
    contexts: AtomicUsize,
    bytes: AtomicU64,
}

impl UserQuota {
    fn new(uid: u32, max_bytes: u64) -> Self {
        Self {
            uid,
            max_bytes,
            contexts: AtomicUsize::new(0),
            bytes: AtomicU64::new(0),
        }
    }

    /// Bytes kept for the user's contexts now.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// The cap on them.
    pub(crate) fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Charges `bytes` that are about to be allocated; `EDQUOT` when they do not fit. Racing
    /// charges never take the total past the cap (the check and the add are one atomic step).
    pub(crate) fn charge(&self, bytes: u64) -> Result {
        self.bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                b.checked_add(bytes).filter(|&t| t <= self.max_bytes)
            })
            .map(|_| ())
            .map_err(|_| EDQUOT)
    }

    /// Gives back `bytes` that were charged and are freed (or were never allocated).
    pub(crate) fn uncharge(&self, bytes: u64) {
        let before = self.bytes.fetch_sub(bytes, Ordering::Relaxed);
        debug_assert!(before >= bytes);
    }
}

/// Kernel memory kept outside a context's budget (a cache, a fork snapshot), charged to its
/// user's quota for as long as it lives.
pub(crate) struct Charge {
    quota: Arc<UserQuota>,
    bytes: u64,
}

impl Charge {
    /// Charges `bytes` to `quota`; `EDQUOT` when they do not fit.
    pub(crate) fn new(quota: &Arc<UserQuota>, bytes: u64) -> Result<Self> {
        quota.charge(bytes)?;
        Ok(Self {
            quota: quota.clone(),
            bytes,
        })
    }
}

impl Charge {
    /// Gives back what the charge holds beyond `bytes`: an upper bound charged before an
    /// allocation whose size was not known yet, brought down to what it took.
    pub(crate) fn shrink_to(&mut self, bytes: u64) {
        if bytes < self.bytes {
            self.quota.uncharge(self.bytes - bytes);
            self.bytes = bytes;
        }
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.quota.uncharge(self.bytes);
    }
}

/// One open context of a user: counted while it lives, and the user's entry in `USERS` goes
/// with the user's last one. A context gives back every byte it charged before this goes.
pub(crate) struct ContextSlot {
    quota: Arc<UserQuota>,
}

impl ContextSlot {
    /// Opens a context for the calling task's effective uid; a user that has none open yet is
    /// held to `max_bytes` from now on, until its last context closes.
    pub(crate) fn open(max_bytes: u64) -> Result<Self> {
        Self::open_for(Kuid::current_euid().into_raw().val, max_bytes)
    }

    /// The same for the user `uid` (the tests use uids no process has).
    pub(crate) fn open_for(uid: u32, max_bytes: u64) -> Result<Self> {
        // Allocated before the lock is taken; unused if the user has an entry already.
        let node = RBTreeNodeReservation::new(GFP_KERNEL_ACCOUNT)?;
        let fresh = Arc::new(UserQuota::new(uid, max_bytes), GFP_KERNEL_ACCOUNT)?;
        let mut g = USERS.lock();
        let tree = g.get_or_insert_with(RBTree::new);
        let quota = match tree.get(&uid) {
            Some(q) => q.clone(),
            None => {
                tree.insert(node.into_node(uid, fresh.clone()));
                fresh
            }
        };
        // Counted under the lock, so the entry cannot be removed between lookup and count.
        quota.contexts.fetch_add(1, Ordering::Relaxed);
        drop(g);
        Ok(Self { quota })
    }

    /// The user's quota, for the context's budget.
    pub(crate) fn quota(&self) -> &Arc<UserQuota> {
        &self.quota
    }
}

impl Drop for ContextSlot {
    fn drop(&mut self) {
        let mut g = USERS.lock();
        let last = self.quota.contexts.fetch_sub(1, Ordering::Relaxed) == 1;
        // Only a new context (under this lock) could count the user again.
        let removed = if last {
            g.as_mut().and_then(|t| t.remove(&self.quota.uid))
        } else {
            None
        };
        drop(g);
        // The tree's reference is dropped after the lock.
        drop(removed);
    }
}

#[kunit_tests(rust_kstls_quota)]
mod tests {
    use super::*;

    /// Uids no test process has: the tests do not meet real contexts.
    const UID: u32 = 0x7fff_0001;

    #[test]
    fn bytes_are_charged_up_to_the_cap() -> Result {
        let slot = ContextSlot::open_for(UID, 1000)?;
        let q = slot.quota();
        q.charge(600)?;
        assert_eq!(q.charge(401), Err(EDQUOT));
        // A refused charge leaves the count as it was.
        assert_eq!(q.bytes(), 600);
        q.charge(400)?;
        assert_eq!(q.charge(1), Err(EDQUOT));
        assert_eq!(q.charge(u64::MAX), Err(EDQUOT));
        q.uncharge(1000);
        assert_eq!(q.bytes(), 0);
        Ok(())
    }

    #[test]
    fn contexts_of_one_user_share_the_quota() -> Result {
        let a = ContextSlot::open_for(UID + 1, 1000)?;
        // The cap is the one the user's first context found.
        let b = ContextSlot::open_for(UID + 1, 5)?;
        assert!(core::ptr::eq(&**a.quota(), &**b.quota()));
        assert_eq!(b.quota().max_bytes(), 1000);
        let mut c = Charge::new(a.quota(), 800)?;
        // A bound brought down to what was used; never raised.
        c.shrink_to(700);
        c.shrink_to(750);
        assert_eq!(a.quota().bytes(), 700);
        assert_eq!(Charge::new(b.quota(), 301).err(), Some(EDQUOT));
        // Another user is counted apart.
        let other = ContextSlot::open_for(UID + 2, 1000)?;
        let d = Charge::new(other.quota(), 1000)?;
        drop(c);
        assert_eq!(b.quota().bytes(), 0);
        drop(d);
        assert_eq!(other.quota().bytes(), 0);
        Ok(())
    }

    #[test]
    fn the_last_context_takes_the_users_entry_away() -> Result {
        let a = ContextSlot::open_for(UID + 3, 1000)?;
        let q = a.quota().clone();
        drop(a);
        let b = ContextSlot::open_for(UID + 3, 2000)?;
        // A new entry: not the one the first context had, with the cap given now.
        assert!(!core::ptr::eq(&*q, &**b.quota()));
        assert_eq!(b.quota().max_bytes(), 2000);
        Ok(())
    }
}
