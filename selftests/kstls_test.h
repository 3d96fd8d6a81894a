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
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <linux/kstls.h>

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

/* Sends @passed over the unix socket @sock (SCM_RIGHTS, with one byte of data). 0 or -errno. */
static inline int kstls_send_fd(int sock, int passed)
{
	char c = 'f';
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} u;
	struct iovec iov = { .iov_base = &c, .iov_len = 1 };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf,
			      .msg_controllen = sizeof(u.buf) };
	struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);

	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(cm), &passed, sizeof(int));
	return sendmsg(sock, &msg, 0) == 1 ? 0 : -errno;
}

/* Receives an fd sent by kstls_send_fd over @sock: the new fd, or -1. */
static inline int kstls_recv_fd(int sock)
{
	char c;
	int got = -1;
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} u;
	struct iovec iov = { .iov_base = &c, .iov_len = 1 };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf,
			      .msg_controllen = sizeof(u.buf) };
	struct cmsghdr *cm;

	if (recvmsg(sock, &msg, 0) != 1)
		return -1;
	cm = CMSG_FIRSTHDR(&msg);
	if (cm && cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS)
		memcpy(&got, CMSG_DATA(cm), sizeof(int));
	return got;
}

/* The number after @key ("key:\t") in /proc/self/fdinfo/@fd, or -1. */
static inline long kstls_fdinfo_value(int fd, const char *key)
{
	char path[64], buf[4096], *p;
	long v = -1;
	ssize_t n;
	int f;

	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd);
	f = open(path, O_RDONLY);
	if (f < 0)
		return -1;
	n = read(f, buf, sizeof(buf) - 1);
	close(f);
	if (n <= 0)
		return -1;
	buf[n] = 0;
	p = strstr(buf, key);
	if (p)
		sscanf(p + strlen(key), ":\t%ld", &v);
	return v;
}

#endif /* KSTLS_TEST_H */
