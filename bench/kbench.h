/* SPDX-License-Identifier: GPL-2.0 */
/*
 * kbench.h - the ioctls of /dev/kstls_kbench (bench/kmod/kstls_kbench.c, which has the same
 * definitions): one kernel primitive of the strict path each, timed by the benchmark.
 */
#ifndef KSTLS_KBENCH_H
#define KSTLS_KBENCH_H

#include <linux/ioctl.h>
#include <linux/types.h>

#define KBENCH_DEVICE	"/dev/kstls_kbench"
#define KBENCH_MAGIC	0xBA
#define KBENCH_NOP	_IO(KBENCH_MAGIC, 0)
#define KBENCH_COPY_IN	_IOW(KBENCH_MAGIC, 1, __u64[2])
#define KBENCH_COPY_OUT	_IOR(KBENCH_MAGIC, 2, __u64)
#define KBENCH_MUTEX	_IO(KBENCH_MAGIC, 3)
#define KBENCH_SPINLOCK	_IO(KBENCH_MAGIC, 4)
#define KBENCH_RCU	_IO(KBENCH_MAGIC, 5)
#define KBENCH_SKELETON	_IOWR(KBENCH_MAGIC, 6, __u64[3])

struct kb_kcall {
	unsigned long cmd;
	__u64 buf[3];
};

extern int kb_kbench_fd;

#endif /* KSTLS_KBENCH_H */
