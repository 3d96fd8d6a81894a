/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * kstls.h - the user-space ABI of /dev/kstls, thread-local storage served by the kernel.
 *
 * This header is the one definition of the ABI: the kernel module (rust/) and libkstls
 * (userspace-lib/) generate their Rust types from it with bindgen. Rules: only __u32/__u64,
 * explicit reserved fields that must be zero, no implicit padding, and every ioctl number
 * carries its struct's size (_IOR/_IOW/_IOWR), so a struct that grows is a new command.
 *
 * A process opens /dev/kstls (O_RDWR | O_CLOEXEC) and gets its context: the registry of TLS
 * modules and, per thread, the table module id -> that thread's TLS block. A context belongs to
 * the process that opened it: calls through an fd that reached another process (fork, SCM_RIGHTS)
 * fail with EPERM.
 *
 * Errors common to every command: ENOTTY for an unknown command, EFAULT for an argument that
 * cannot be read or written, EINVAL for a non-zero reserved field or flag, EPERM for a call from a
 * process that does not own the context.
 *
 * /dev/kstls is open to every local user, so the kernel memory a user can make it keep is
 * bounded per user: all contexts opened by one effective uid share one quota, max_user_kbytes
 * (a parameter of kstls.ko, reported by KSTLS_IOC_INFO), which counts the contexts themselves,
 * the .tdata images, registries, thread tables, pool lists, caches and fork snapshots. A request
 * that would go past it fails with EDQUOT (open, REGISTER, GET_ADDR, ADOPT, mmap of the cache)
 * and keeps nothing; a failed request never leaves anything allocated. All of it is also charged
 * to the caller's memory cgroup, whose limits apply as they do to any kernel allocation.
 */
#ifndef _UAPI_LINUX_KSTLS_H
#define _UAPI_LINUX_KSTLS_H

#include <linux/ioctl.h>
#include <linux/types.h>

#define KSTLS_DEVICE_PATH	"/dev/kstls"
#define KSTLS_ABI_VERSION	1
#define KSTLS_IOC_MAGIC		0xB9

/*
 * Module ids that kstls hands out are never below KSTLS_MODULE_ID_MIN: their low 32 bits are the
 * module's index in the registry and their high 32 bits the generation of that index (never 0),
 * so an id is never mistaken for a small module id of a libc's dynamic linker and a reused index
 * never matches a stale id.
 */
#define KSTLS_MODULE_ID_MIN	(1ULL << 32)
/* Blocks of at most this many bytes are packed, one page per thread (see UNREGISTER). */
#define KSTLS_PACKED_MAX	512

/* The layout compilers pass to __tls_get_addr (x86-64 psABI: two 64-bit words). */
struct kstls_tls_index {
	__u64 module;		/* in: module id */
	__u64 offset;		/* in: offset of the variable in the module's TLS block */
};

/*
 * KSTLS_IOC_GET_ADDR: the address of (calling thread, module, offset). The first call of a thread
 * for a module allocates its block in the process's memory, copies the module's .tdata image and
 * zeroes the rest (.tbss); later calls return the same block. The ioctl's return value is 0: the
 * address is written to @addr, since an address does not fit in the int an ioctl returns.
 * Errors: EINVAL unknown or unregistered module id, offset >= memsz; ENOMEM the process's block
 * budget is spent or memory could not be had; EDQUOT the user's quota has no room for the
 * thread's table (as long as the highest module index the thread touches).
 */
struct kstls_get_addr {
	struct kstls_tls_index ti;	/* in */
	__u64 addr;			/* out: address of the variable */
};

/*
 * KSTLS_IOC_REGISTER: register a TLS module from its PT_TLS program header. The image is copied
 * into the kernel now, so later writes to the module's .tdata do not change what new threads see.
 * Errors: EINVAL filesz > memsz, memsz == 0, align not a power of two or above max_align,
 * align_offset >= align; E2BIG memsz above max_image_size or the images of all modules above
 * max_image_total; ENOSPC max_modules modules registered; EDQUOT the user's quota has no room
 * for the image; EFAULT image unreadable.
 */
struct kstls_register {
	__u64 image;		/* in: user address of the init image (p_vaddr + load bias) */
	__u64 filesz;		/* in: p_filesz, bytes copied from the image */
	__u64 memsz;		/* in: p_memsz, size of the block; filesz..memsz is zeroed */
	__u64 align;		/* in: p_align, a power of two (0 is taken as 1) */
	__u64 align_offset;	/* in: p_vaddr % align; every block is congruent to it mod align */
	__u32 flags;		/* in: must be 0 */
	__u32 reserved0;	/* must be 0 */
	__u64 module;		/* out: the module id */
	__u64 reserved[2];	/* must be 0 */
};

/*
 * KSTLS_IOC_UNREGISTER: release a module (dlclose). Every thread's block for it is freed; the id
 * is never valid again. Blocks of a module with memsz <= KSTLS_PACKED_MAX sit in one page per
 * thread beside those of the other small modules, which stays mapped while any of them has a
 * block; bigger blocks are unmapped with their module. Errors: EINVAL unknown module id.
 */
struct kstls_unregister {
	__u64 module;		/* in */
	__u64 reserved;		/* must be 0 */
};

/* Feature bits of kstls_info.features. */
#define KSTLS_FEAT_EXIT_TRACKING	(1U << 0)	/* the module detects thread exits itself */
#define KSTLS_FEAT_STATS		(1U << 1)	/* KSTLS_IOC_STATS */
#define KSTLS_FEAT_FDINFO		(1U << 2)	/* /proc/<pid>/fdinfo/<fd> shows the context */
#define KSTLS_FEAT_ADOPT		(1U << 3)	/* KSTLS_IOC_ADOPT */
#define KSTLS_FEAT_CACHE		(1U << 4)	/* mmap() of the fast-path cache */
#define KSTLS_FEAT_STRICT		(1U << 5)	/* KSTLS_IOC_SET_MODE with KSTLS_MODE_STRICT */
#define KSTLS_FEAT_USER_QUOTA		(1U << 6)	/* max_user_kbytes, user_kbytes are set */

/* KSTLS_IOC_INFO: ABI version, features, the limits of this context and its current use. */
struct kstls_info {
	__u32 abi_version;	/* KSTLS_ABI_VERSION */
	__u32 features;		/* KSTLS_FEAT_* */
	__u32 max_modules;	/* modules registered at once (ENOSPC past it) */
	__u32 max_align;	/* largest align accepted (EINVAL past it) */
	__u64 max_image_size;	/* largest memsz of one module (E2BIG past it) */
	__u64 max_block_bytes;	/* bytes mapped for the TLS blocks of all threads (ENOMEM past it) */
	__u32 nr_modules;	/* modules registered now */
	__u32 nr_threads;	/* threads that have at least one block now */
	__u64 block_bytes;	/* bytes mapped for TLS blocks now (counted against max_block_bytes) */
	__u64 max_image_total;	/* sum of filesz kept in the kernel for all modules (E2BIG past it) */
	__u64 image_bytes;	/* sum of filesz kept in the kernel now */
	__u32 cache_size;	/* bytes to mmap() for the fast-path cache (0: no cache) */
	__u32 mode;		/* KSTLS_MODE_* in force (the module parameter included) */
	__u32 max_user_kbytes;	/* KiB of kernel memory one user's contexts may keep (EDQUOT past it) */
	__u32 user_kbytes;	/* KiB the caller's user's contexts keep now, rounded up */
};

/*
 * KSTLS_IOC_STATS: counters of a context, optionally narrowed to one module and/or one thread.
 * @module == 0 means all modules, @tid == 0 all threads. Counters of exited threads and of
 * unregistered modules are included in the totals only.
 * Errors: EINVAL non-zero reserved, unknown module id.
 */
struct kstls_stats {
	__u64 module;		/* in: module id or 0 */
	__u32 tid;		/* in: thread id or 0 */
	__u32 reserved0;	/* must be 0 */
	__u64 lookups;		/* out: GET_ADDR calls answered */
	__u64 allocs;		/* out: first-touch block allocations */
	__u64 blocks;		/* out: live blocks */
	__u64 block_bytes;	/* out: bytes of live blocks */
	__u64 thread_exits;	/* out: exited threads whose blocks were reclaimed (totals only) */
	__u64 reserved[3];	/* zero */
};

/*
 * KSTLS_IOC_ADOPT: after fork, give the child's fresh context (the fd this is called on, opened
 * by the child) what the parent's context had for the forking thread at the moment of the fork:
 * the same module ids and the same block addresses, which in the child are the copies fork made,
 * so every TLS variable keeps its value; the blocks of the parent's other threads become free for
 * reuse in the child. Nothing the parent registers, unregisters or touches after the fork reaches
 * the child: the kernel records every fork of a process that has a context (a probe on the
 * sched_process_fork tracepoint), and before the parent's first change since a fork it keeps, for
 * each child that has not adopted yet, the state that child will adopt. Changes that other threads
 * of the parent made while fork copied the address space are judged by the child's own copy: a
 * page of the context's (the fork mark) counts the arenas mapped and the unregistrations begun,
 * and the child keeps the arenas its copy counts. Any thread of the child may call it; the
 * forking thread's table becomes that of the child's first thread. A fork is adopted once per
 * context, a failed ADOPT charges nothing, and one that failed with EDQUOT, ENOMEM or EINTR may be
 * tried again; the parent is not changed. Up to 64 forks per process may await adoption at a
 * time. ADOPT may wait for the parent's lock, interruptibly.
 * Errors: EBADF @parent_fd is not open; EINVAL it is not a kstls fd, it is the caller's own
 * process's, non-zero reserved, or this context already has modules or threads; EPERM the caller
 * was not forked from that context while it existed (a child forked before it was opened, or
 * given the fd through SCM_RIGHTS), has exec'd since, or has adopted that fork already; ESTALE
 * the state at the fork cannot be had: the child's copy was made before an unregistration that
 * another thread of the parent began as it forked; EDQUOT the user's quota has no room for the
 * child's state (or had none for the copy kept for it); EINTR a signal came while it waited for
 * the parent's lock; ENOMEM memory could not be had.
 */
struct kstls_adopt {
	__u32 parent_fd;	/* in: the fd of the parent's context, inherited over fork */
	__u32 reserved0;	/* must be 0 */
	__u64 reserved;		/* must be 0 */
};

/* Modes of KSTLS_IOC_SET_MODE. */
#define KSTLS_MODE_STRICT	(1U << 0)	/* every access traps into the kernel: no cache */

/*
 * KSTLS_IOC_SET_MODE: the context's mode. KSTLS_MODE_STRICT empties the cache and stops filling
 * it, so every access is an ioctl that the kernel sees and counts; clearing it resumes caching.
 * The module parameter `strict` forces strict mode on every context.
 * Errors: EINVAL unknown mode bits or non-zero reserved.
 */
struct kstls_mode {
	__u32 mode;		/* in: KSTLS_MODE_* */
	__u32 reserved0;	/* must be 0 */
	__u64 reserved;		/* must be 0 */
};

/*
 * The fast-path cache (vDSO-style). mmap(NULL, info.cache_size, PROT_READ, MAP_SHARED, fd, 0)
 * maps, read-only, pages that the kernel fills on the slow path (GET_ADDR) and empties when it
 * must: on thread exit, UNREGISTER, strict mode. Layout, from offset 0:
 *
 *   struct kstls_cache_header                       at 0
 *   struct kstls_cache_slot[nr_slots]               at slots_offset
 *   struct kstls_cache_dtv_entry[dtv_entries] per cached thread, at the slot's dtv_offset
 *
 * A thread's slot is found from its thread pointer tp (the x86-64 psABI self-pointer at %fs:0,
 * which the kernel has checked equals the FS base before caching the thread):
 *
 *   h = (tp * KSTLS_CACHE_HASH_MUL) >> (64 - nr_slots_log2), then h + i for i < nr_probes,
 *   all modulo nr_slots.
 *
 * A module's entry is entry number index & (dtv_entries - 1) of the thread's entries, index
 * being the id's low 32 bits (dtv_entries is a power of two): modules whose indices agree there
 * share the entry, which holds the one filled last. Reading, in this order (x86-64 keeps loads
 * in program order, so plain loads do): the slot's dtv_offset, the entry's block, the entry's
 * module, and last the slot's tp. It is a hit when the module equals the full id (generation
 * included) and the tp read last equals the reader's own: the address is block + offset.
 * Anything else: GET_ADDR, which fills the cache.
 *
 * The generations the reader checks are the slot's tp and the entry's module id. The kernel
 * keeps them so that the last read vouches for the others:
 *  - a slot's tp becomes T only in a GET_ADDR of a thread whose thread pointer is T, never while
 *    that thread runs in user space, and an entry becomes non-empty only in a GET_ADDR of the
 *    slot's own thread;
 *  - everything else (thread exit, UNREGISTER, strict mode, a second live thread with the same
 *    thread pointer) only takes away: an entry's module is zeroed before its block, a block is
 *    freed only after its entries are zeroed, and a slot's tp is changed (to 0: free, or to
 *    KSTLS_CACHE_TP_SHARED: nobody may be cached there) before its entries are zeroed or reused;
 *  - ids are never reused (their generation), and a thread's block of a module never moves.
 * So a reader that reads its own tp last has read its own thread's entries, and one that reads
 * the id has read that module's block, which was not yet freed then. The kernel only ever stores
 * a dtv_offset whose entries lie inside the mapping (0 in a free slot), so a reader need not
 * bound it before the tp check. The mapping is never copied by fork (the child must ADOPT and
 * map its own).
 *
 * The cache is made by the first mmap that passes every check, and is charged to the user's
 * quota: mmap fails with EINVAL for a writable mapping, a length other than info.cache_size or
 * a non-zero offset, ENODEV when the module offers no cache, EPERM from another process, EDQUOT
 * when the quota has no room for it; a refused mmap keeps nothing.
 */
#define KSTLS_CACHE_MAGIC	0x6b73746c	/* "kstl" */
#define KSTLS_CACHE_VERSION	2
#define KSTLS_CACHE_HASH_MUL	0x9e3779b97f4a7c15ULL
/* The tp of a slot that two live threads with one thread pointer share: never a thread's. */
#define KSTLS_CACHE_TP_SHARED	1
/*
 * The geometry of version 2, which the header repeats: a reader may build these in (libkstls's
 * assembly does) after checking that the header agrees.
 */
#define KSTLS_CACHE_SLOTS_OFFSET	4096
#define KSTLS_CACHE_SLOTS_LOG2	14
#define KSTLS_CACHE_PROBES	8
#define KSTLS_CACHE_DTV_ENTRIES	256

struct kstls_cache_header {
	__u32 magic;		/* KSTLS_CACHE_MAGIC */
	__u32 version;		/* KSTLS_CACHE_VERSION */
	__u32 nr_slots;		/* a power of two */
	__u32 nr_slots_log2;
	__u32 nr_probes;	/* slots looked at from the hash on */
	__u32 dtv_entries;	/* entries per cached thread */
	__u32 mode;		/* KSTLS_MODE_* in force */
	__u32 reserved0;
	__u64 slots_offset;	/* byte offset of the slot array */
	__u64 reserved[3];
};

struct kstls_cache_slot {
	__u64 tp;		/* thread pointer of the cached thread, 0: free */
	__u64 dtv_offset;	/* byte offset of the thread's entries in the mapping */
};

struct kstls_cache_dtv_entry {
	__u64 module;		/* full module id, 0: empty */
	__u64 block;		/* address of the thread's block of that module */
};

#define KSTLS_IOC_INFO		_IOR(KSTLS_IOC_MAGIC, 0x00, struct kstls_info)
#define KSTLS_IOC_REGISTER	_IOWR(KSTLS_IOC_MAGIC, 0x01, struct kstls_register)
#define KSTLS_IOC_UNREGISTER	_IOW(KSTLS_IOC_MAGIC, 0x02, struct kstls_unregister)
#define KSTLS_IOC_GET_ADDR	_IOWR(KSTLS_IOC_MAGIC, 0x03, struct kstls_get_addr)
#define KSTLS_IOC_STATS		_IOWR(KSTLS_IOC_MAGIC, 0x04, struct kstls_stats)
#define KSTLS_IOC_ADOPT		_IOW(KSTLS_IOC_MAGIC, 0x05, struct kstls_adopt)
#define KSTLS_IOC_SET_MODE	_IOW(KSTLS_IOC_MAGIC, 0x06, struct kstls_mode)

#endif /* _UAPI_LINUX_KSTLS_H */
