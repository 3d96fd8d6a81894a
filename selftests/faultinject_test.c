// SPDX-License-Identifier: GPL-2.0
/*
 * faultinject_test.c - every allocation failure surfaces as ENOMEM and leaves the context
 * consistent. Each operation runs with the Nth slab allocation of the calling thread failed
 * (failslab through /proc/thread-self/fail-nth), for N = 1, 2, ... until it succeeds (which may
 * be with a failure it handled, e.g. kvmalloc falling back to vmalloc): whenever it fails, the errno is ENOMEM, a failure was really injected,
 * INFO shows the state from before the call, and the same call without a fault then works.
 */
#include <sys/mman.h>
#include <sys/wait.h>

#include "kselftest_harness.h"
#include "kstls_test.h"

#define FAIL_NTH "/proc/thread-self/fail-nth"
#define FAILSLAB "/sys/kernel/debug/failslab/"

static int write_str(const char *path, const char *v)
{
	int f = open(path, O_WRONLY);
	ssize_t n;

	if (f < 0)
		return -1;
	n = write(f, v, strlen(v));
	close(f);
	return n == (ssize_t)strlen(v) ? 0 : -1;
}

static void fail_nth(int n)
{
	char v[16];

	snprintf(v, sizeof(v), "%d", n);
	write_str(FAIL_NTH, v);
}

/* Whether the failure set up by fail_nth() was injected (then the file reads 0). */
static int fail_injected(void)
{
	char v[16] = "";
	int f = open(FAIL_NTH, O_RDONLY);
	ssize_t n = f >= 0 ? read(f, v, sizeof(v) - 1) : -1;

	if (f >= 0)
		close(f);
	return n > 0 && atoi(v) == 0;
}

struct snapshot {
	__u32 nr_modules, nr_threads;
	__u64 block_bytes, image_bytes;
};

static int snap(int fd, struct snapshot *s)
{
	struct kstls_info i;
	int ret = kstls_info_get(fd, &i);

	*s = (struct snapshot){ i.nr_modules, i.nr_threads, i.block_bytes, i.image_bytes };
	return ret;
}

FIXTURE(fi)
{
	int fd;
};

FIXTURE_SETUP(fi)
{
	if (access(FAIL_NTH, W_OK))
		SKIP(return, "no fail-nth: kernel without CONFIG_FAULT_INJECTION");
	/* failslab ignores sleeping allocations unless told otherwise; and keep the log quiet. */
	ASSERT_EQ(0, write_str(FAILSLAB "ignore-gfp-wait", "N"));
	ASSERT_EQ(0, write_str(FAILSLAB "verbose", "0"));
	self->fd = kstls_open();
	ASSERT_LE(0, self->fd);
}

FIXTURE_TEARDOWN(fi)
{
	fail_nth(0);
	close(self->fd);
}

/*
 * Runs @op under fail-nth = 1, 2, ... until it succeeds with no failure injected; @op returns 0
 * or -errno. A success despite an injected failure (handled inside, e.g. kvmalloc falling back
 * to vmalloc) is undone with @undo and the sweep goes on. Evaluates to the number of injected
 * failures that made @op fail.
 */
#define FAULT_SWEEP(fd, op, undo)						\
	({									\
		int _failed = 0, _n, _ret, _hit;				\
		struct snapshot _before, _after;				\
		for (_n = 1; _n < 500; _n++) {					\
			ASSERT_EQ(0, snap(fd, &_before));			\
			fail_nth(_n);						\
			_ret = (op);						\
			_hit = fail_injected();					\
			fail_nth(0);						\
			if (_ret == 0 && !_hit)					\
				break;						\
			if (_ret == 0) {					\
				undo;						\
				continue;					\
			}							\
			ASSERT_EQ(-ENOMEM, _ret) TH_LOG("fault %d", _n);	\
			ASSERT_TRUE(_hit) TH_LOG("fault %d: failed uninjected", _n); \
			ASSERT_EQ(0, snap(fd, &_after));			\
			ASSERT_EQ(0, memcmp(&_before, &_after, sizeof(_before)))	\
				TH_LOG("fault %d changed the context", _n);	\
			_failed++;						\
		}								\
		ASSERT_GT(500, _n);						\
		_failed;							\
	})

static const char image[64] = "fault injection";

TEST_F(fi, register_fails_cleanly)
{
	__u64 id = 0;
	int failed = FAULT_SWEEP(self->fd,
				 kstls_reg(self->fd, image, sizeof(image), 128, 64, 0, &id),
				 (close(self->fd), self->fd = kstls_open()));

	ksft_print_msg("REGISTER: %d injected failures, all ENOMEM\n", failed);
	ASSERT_LT(0, failed);
	ASSERT_EQ(0, kstls_get(self->fd, id, 0, NULL));
}

TEST_F(fi, first_touch_fails_cleanly)
{
	__u64 id;
	void *p = NULL;
	int failed;

	ASSERT_EQ(0, kstls_reg(self->fd, image, sizeof(image), 128, 64, 0, &id));
	/* Undo a first touch with a fresh context, so that every allocation happens again. */
	failed = FAULT_SWEEP(self->fd, kstls_get(self->fd, id, 1, &p),
			     (close(self->fd), self->fd = kstls_open(),
			      kstls_reg(self->fd, image, sizeof(image), 128, 64, 0, &id)));
	ksft_print_msg("GET_ADDR first touch: %d injected failures, all ENOMEM\n", failed);
	ASSERT_LT(0, failed);
	ASSERT_NE(NULL, p);
	ASSERT_EQ(0, memcmp((char *)p - 1, image, sizeof(image)));
}

TEST_F(fi, cache_mmap_fails_cleanly)
{
	struct kstls_info info;
	void *m = MAP_FAILED;
	int failed;

	ASSERT_EQ(0, kstls_info_get(self->fd, &info));
	ASSERT_LT(0, info.cache_size);
	failed = FAULT_SWEEP(self->fd,
			     ((m = mmap(NULL, info.cache_size, PROT_READ, MAP_SHARED, self->fd, 0))
			      == MAP_FAILED ? -errno : 0),
			     munmap(m, info.cache_size));
	ksft_print_msg("mmap of the cache: %d injected failures, all ENOMEM\n", failed);
	ASSERT_LT(0, failed);
	ASSERT_NE(MAP_FAILED, m);
	ASSERT_EQ(KSTLS_CACHE_MAGIC, ((struct kstls_cache_header *)m)->magic);
}

/*
 * ADOPT under fail-nth = 1, 2, ...: a fork is adopted once, so every attempt is made by a child
 * of its own, which reports through its exit status: 0 adopted with no failure injected (done),
 * 1 adopted despite one (handled inside: try the next N), 2 failed cleanly with ENOMEM, the
 * context unchanged, and the same call without a fault then adopted the fork; anything else is
 * a check that failed.
 */
static int adopt_under_fault(int parent_fd, __u64 id, int n)
{
	struct kstls_adopt a = { .parent_fd = (__u32)parent_fd };
	struct snapshot before, after;
	int own = kstls_open(), ret, hit;

	if (own < 0 || snap(own, &before))
		return 10;
	fail_nth(n);
	ret = kstls_ioctl(own, KSTLS_IOC_ADOPT, &a);
	hit = fail_injected();
	fail_nth(0);
	if (ret == 0)
		return hit ? 1 : kstls_get(own, id, 0, NULL) == 0 ? 0 : 11;
	if (ret != -ENOMEM || !hit)
		return 12;
	if (snap(own, &after) || memcmp(&before, &after, sizeof(before)))
		return 13;
	/* Nothing was taken: the fork is still there to adopt. */
	if (kstls_ioctl(own, KSTLS_IOC_ADOPT, &a) || kstls_get(own, id, 0, NULL))
		return 14;
	return 2;
}

TEST_F(fi, adopt_fails_cleanly)
{
	int n, failed = 0, status;
	__u64 id;

	ASSERT_EQ(0, kstls_reg(self->fd, image, sizeof(image), 128, 64, 0, &id));
	ASSERT_EQ(0, kstls_get(self->fd, id, 0, NULL));
	for (n = 1; n < 500; n++) {
		pid_t pid = fork();

		ASSERT_LE(0, pid);
		if (pid == 0)
			_exit(adopt_under_fault(self->fd, id, n));
		ASSERT_EQ(pid, waitpid(pid, &status, 0));
		ASSERT_TRUE(WIFEXITED(status));
		if (WEXITSTATUS(status) == 0)
			break;
		if (WEXITSTATUS(status) == 2)
			failed++;
		else
			ASSERT_EQ(1, WEXITSTATUS(status)) TH_LOG("fault %d", n);
	}
	ksft_print_msg("ADOPT: %d injected failures, all ENOMEM\n", failed);
	ASSERT_GT(500, n);
	ASSERT_LT(0, failed);
}

TEST_HARNESS_MAIN
