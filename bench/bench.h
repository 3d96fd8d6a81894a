/* SPDX-License-Identifier: GPL-2.0 */
/*
 * bench.h - what the kstls benchmark's executable and its shared objects share: the shape of one
 * measured operation and a raw ioctl.
 *
 * Every measured operation is a non-inlined function `long op(void *arg)` that reads one TLS
 * variable (initialised to 1) and returns its value, or 1 when a syscall-only path got the errno
 * it expects. The timing loop sums the results, so every single access is checked: a sum that
 * is not the iteration count is an error. `arg` is the path's `struct kstls_tls_index` for the
 * kstls paths and unused otherwise.
 */
#ifndef KSTLS_BENCH_H
#define KSTLS_BENCH_H

#include <asm/unistd.h>

#include <linux/kstls.h>

typedef long (*kb_op_fn)(void *arg);

/* The raw ioctl syscall (no libc wrapper, no errno): 0 or -errno, as libkstls issues it. */
static inline long kb_raw_ioctl(int fd, unsigned long cmd, void *arg)
{
	long ret;

	__asm__ volatile("syscall"
			 : "=a"(ret)
			 : "0"((long)__NR_ioctl), "D"((long)fd), "S"(cmd), "d"(arg)
			 : "rcx", "r11", "memory");
	return ret;
}

static inline long kb_raw_syscall0(long nr)
{
	long ret;

	__asm__ volatile("syscall" : "=a"(ret) : "0"(nr) : "rcx", "r11", "memory");
	return ret;
}

/* The x86-64 psABI thread pointer: the self-pointer at %fs:0. */
static inline unsigned long kb_thread_pointer(void)
{
	unsigned long tp;

	__asm__("mov %%fs:0, %0" : "=r"(tp));
	return tp;
}

/* libkb_ie.so (DT_NEEDED): initial-exec access to its own variable. */
long kb_ie(void *arg);

/*
 * libkb_kstls.so (dlopen'd): the kstls_cached path. kb_kstls_setup() hands it the context's fd
 * (the slow path) and its mapped cache; kb_kstls_misses() counts slow-path calls, so the harness
 * can prove that a measured loop never left the fast path.
 */
typedef int (*kb_kstls_setup_fn)(int fd, const void *cache);
typedef unsigned long (*kb_kstls_misses_fn)(void);

#endif /* KSTLS_BENCH_H */
