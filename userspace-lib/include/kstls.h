/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * kstls.h - the C API of libkstls: thread-local storage served by the kernel (/dev/kstls).
 *
 * libkstls provides __tls_get_addr (the x86-64 psABI entry that compiler-generated general- and
 * local-dynamic TLS code calls), backed by /dev/kstls instead of a libc's dynamic linker, plus
 * the functions below. It calls no libc function and never allocates, so every function here
 * is async-signal-safe and works under glibc, musl, or no libc at all.
 *
 * Errors are returned as -errno (errno is not touched: there may be no libc to own it).
 * See userspace-lib/README.md for the link recipes.
 */
#ifndef KSTLS_H
#define KSTLS_H

#include <stddef.h>	/* NULL, for KSTLS_REGISTER_SELF(NULL) */
#include <stdint.h>
#include <linux/kstls.h>	/* the ABI: struct kstls_tls_index, KSTLS_MODULE_ID_MIN, ... */

#ifdef __cplusplus
extern "C" {
#endif

/* A TLS image, as a PT_TLS program header describes it, with the image at its run-time address. */
struct kstls_image {
	const void *image;	/* the initialisation image (.tdata), filesz bytes */
	uint64_t filesz;	/* bytes copied from @image into each thread's block */
	uint64_t memsz;		/* size of each block; filesz..memsz is zeroed (.tbss) */
	uint64_t align;		/* alignment of the block, a power of two (0 is taken as 1) */
	uint64_t align_offset;	/* p_vaddr % align: every block is congruent to it modulo align */
};

/* Opens this library's context now rather than on first use. 0 or -errno (-ENOENT: no
 * /dev/kstls, i.e. the module is not loaded). */
int kstls_init(void);

/* The fd of the context (opened if need be), for KSTLS_IOC_STATS, KSTLS_IOC_INFO or
 * /proc/self/fdinfo. Do not close it. -errno on failure. */
int kstls_fd(void);

/* Registers a TLS module; *module receives its id (always >= KSTLS_MODULE_ID_MIN). 0 or -errno
 * (the errors of KSTLS_IOC_REGISTER). */
int kstls_register(const struct kstls_image *img, uint64_t *module);

/* Releases a module: every thread's block of it is freed and the id is never valid again.
 * When the last module registered through this copy of the library goes, its context is
 * closed (a later call opens a new one). 0 or -errno. */
int kstls_unregister(uint64_t module);

/*
 * Registers the module (executable or shared object) that contains @addr from its own PT_TLS
 * program header, found in memory, and rewrites the module's R_X86_64_DTPMOD64 GOT slots from
 * the host dynamic linker's module id to the new kstls id, so that its general- and local-
 * dynamic TLS accesses go to kstls. Call it from a constructor of that module, before the
 * module's first TLS access; registering the same module again returns the same id.
 * @addr: the module's ELF header (KSTLS_REGISTER_SELF passes __ehdr_start) or any address in
 * the module. *module (may be NULL) receives the id. 0 or -errno: -ENOEXEC no ELF module found
 * at @addr, -ENOENT the module has no PT_TLS, -ENOSPC too many self-registered modules.
 */
int kstls_register_self(const void *addr, uint64_t *module);

/* The destructor's counterpart: unregisters the module containing @addr. 0 or -errno. */
int kstls_unregister_self(const void *addr);

/* The calling thread's address of @offset in @module (a kstls id), or NULL: unknown module, no
 * memory. Never forwards to the host, never aborts. The kernel refuses (NULL) an offset at or
 * past the module's memsz when it answers (a thread's first access, a cache miss, strict mode);
 * an answer from the cache is block + offset unchecked, as with __tls_get_addr. */
void *kstls_get_tls_addr(uint64_t module, uint64_t offset);

/*
 * The TLS descriptor resolver, for a loader that fills descriptors itself (compiled code with
 * -mtls-dialect=gnu2 calls it through the descriptors registration rewrites): a descriptor
 * { kstls_tlsdesc, &tls_index } with a struct kstls_tls_index { kstls id, offset } that outlives
 * it resolves that thread's variable. Not a C function: the x86-64 TLSDESC convention applies
 * (%rax points to the descriptor; the offset of the variable from the thread pointer comes back
 * in %rax; every other register is preserved).
 */
void kstls_tlsdesc(void);

/*
 * Register / unregister the calling module (the one this macro is compiled into) through the
 * linker-defined __ehdr_start, its ELF header. For a constructor and a destructor:
 *
 *	__attribute__((constructor)) static void init(void) { KSTLS_REGISTER_SELF(NULL); }
 *	__attribute__((destructor)) static void fini(void) { KSTLS_UNREGISTER_SELF(); }
 */
extern const char __ehdr_start[] __attribute__((visibility("hidden")));
#define KSTLS_REGISTER_SELF(module)	kstls_register_self(__ehdr_start, (module))
#define KSTLS_UNREGISTER_SELF()		kstls_unregister_self(__ehdr_start)

#ifdef __cplusplus
}
#endif

#endif /* KSTLS_H */
