/* SPDX-License-Identifier: GPL-2.0 */
/*
 * kstls_test.h - small helpers shared by the kstls selftests: one wrapper per ioctl, each
 * returning 0 or -errno so that a test states the errno it expects on one line.
 */
#ifndef KSTLS_TEST_H
#define KSTLS_TEST_H

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "kstls.h"

static inline int kstls_open(void)
{
	return open(KSTLS_DEVICE_PATH, O_RDWR | O_CLOEXEC);
}

static inline int kstls_ioctl(int fd, unsigned long cmd, void *arg)
{
	return ioctl(fd, cmd, arg) ? -errno : 0;
}

static inline int kstls_reg(int fd, const void *image, __u64 filesz, __u64 memsz, __u64 align,
			    __u64 align_offset, __u64 *id)
{
	struct kstls_register r = {
		.image = (__u64)(uintptr_t)image,
		.filesz = filesz,
		.memsz = memsz,
		.align = align,
		.align_offset = align_offset,
	};
	int ret = kstls_ioctl(fd, KSTLS_IOC_REGISTER, &r);

	if (!ret && id)
		*id = r.module;
	return ret;
}

static inline int kstls_unreg(int fd, __u64 id)
{
	struct kstls_unregister u = { .module = id };

	return kstls_ioctl(fd, KSTLS_IOC_UNREGISTER, &u);
}

static inline int kstls_get(int fd, __u64 id, __u64 offset, void **addr)
{
	struct kstls_get_addr g = { .ti = { .module = id, .offset = offset } };
	int ret = kstls_ioctl(fd, KSTLS_IOC_GET_ADDR, &g);

	if (!ret && addr)
		*addr = (void *)(uintptr_t)g.addr;
	return ret;
}

static inline int kstls_info_get(int fd, struct kstls_info *info)
{
	memset(info, 0, sizeof(*info));
	return kstls_ioctl(fd, KSTLS_IOC_INFO, info);
}

static inline int kstls_stats_get(int fd, __u64 module, __u32 tid, struct kstls_stats *st)
{
	memset(st, 0, sizeof(*st));
	st->module = module;
	st->tid = tid;
	return kstls_ioctl(fd, KSTLS_IOC_STATS, st);
}

static inline pid_t kstls_gettid(void)
{
	return (pid_t)syscall(SYS_gettid);
}

/* Fills @buf with a pattern derived from @seed, so each module's image is recognisable. */
static inline void kstls_pattern(unsigned char *buf, size_t len, unsigned int seed)
{
	for (size_t i = 0; i < len; i++)
		buf[i] = (unsigned char)(seed * 131 + i * 7 + 1);
}

/* Whether @len bytes at @p are all zero. */
static inline int kstls_all_zero(const unsigned char *p, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (p[i])
			return 0;
	return 1;
}

#endif /* KSTLS_TEST_H */
