// SPDX-License-Identifier: GPL-2.0
/*
 * ops.c - the measured operations that live in the benchmark executable: the baselines that
 * need no shared object (empty call, local-exec %fs load) and the syscall paths on /dev/kstls.
 *
 * The syscall paths, cheapest first, each adding a step of the strict GET_ADDR path to the one
 * before, so that their differences say where the strict path's time goes:
 *   getuid         a syscall that does nothing: entry and exit;
 *   null_ioctl     + fdget, vfs_ioctl, the misc device and kstls's ioctl dispatch (ENOTTY);
 *   strict_badmod  + the 16-byte copy-in, the owner check, the context mutex and a registry
 *                  lookup that misses (a stale generation of a live slot: EINVAL);
 *   strict_badoff  + a registry hit and the offset check (offset == memsz: EINVAL);
 *   kstls_strict   + the thread-table lookup, the counters and the 8-byte copy-out.
 * The primitives themselves (copies, mutex, ...) are timed through bench/kmod (kbench.h).
 */
#include <errno.h>

#include "bench.h"
#include "kbench.h"

/* An ioctl number kstls does not know: its answer is ENOTTY. */
#define KB_IOC_UNKNOWN _IO(KSTLS_IOC_MAGIC, 0x7f)

int kb_strict_fd = -1;
int kb_kbench_fd = -1;

/* Not static: the compiler must not fold the load into a constant. */
__thread long kb_le_var = 1;

__attribute__((noinline)) long kb_empty(void *arg)
{
	(void)arg;
	__asm__ volatile("");
	return 1;
}

__attribute__((noinline)) long kb_fs_le(void *arg)
{
	(void)arg;
	return kb_le_var;
}

/* getuid takes no lock at all; getppid takes the RCU read lock (lockdep-tracked here). */
__attribute__((noinline)) long kb_getuid(void *arg)
{
	(void)arg;
	return kb_raw_syscall0(__NR_getuid) >= 0;
}

__attribute__((noinline)) long kb_getppid(void *arg)
{
	(void)arg;
	return kb_raw_syscall0(__NR_getppid) > 0;
}

/* One primitive of bench/kmod/kstls_kbench.c: arg is a struct kb_kcall. */
__attribute__((noinline)) long kb_kbench(void *arg)
{
	struct kb_kcall *c = arg;

	return kb_raw_ioctl(kb_kbench_fd, c->cmd, c->buf) == 0;
}

__attribute__((noinline)) long kb_null_ioctl(void *arg)
{
	(void)arg;
	return kb_raw_ioctl(kb_strict_fd, KB_IOC_UNKNOWN, 0) == -ENOTTY;
}

/* kstls_strict: every access is a GET_ADDR on a strict context. */
__attribute__((noinline)) long kb_kstls_strict(void *arg)
{
	struct kstls_get_addr g = { .ti = *(struct kstls_tls_index *)arg };

	if (kb_raw_ioctl(kb_strict_fd, KSTLS_IOC_GET_ADDR, &g))
		return 0;
	return *(long *)(unsigned long)g.addr;
}

/* arg: a (module, offset) that GET_ADDR must refuse with EINVAL. */
__attribute__((noinline)) long kb_strict_einval(void *arg)
{
	struct kstls_get_addr g = { .ti = *(struct kstls_tls_index *)arg };

	return kb_raw_ioctl(kb_strict_fd, KSTLS_IOC_GET_ADDR, &g) == -EINVAL;
}
