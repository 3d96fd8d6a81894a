// SPDX-License-Identifier: GPL-2.0
/*
 * faultinject_test.c - every allocation failure surfaces as ENOMEM and leaves the context
 * consistent. Each operation runs with the Nth slab allocation of the calling thread failed
 * (failslab through /proc/thread-self/fail-nth), for N = 1, 2, ... until it succeeds (which may
 * be with a failure it handled, e.g. kvmalloc falling back to vmalloc): whenever it fails, the errno is ENOMEM, a failure was really injected,
 * INFO shows the state from before the call, and the same call without a fault then works.
 * A failed open keeps nothing either, a fork log that would go on recording (and pinning) the
 * process's children least of all; a failed mmap of the cache leaves nothing charged.
 */
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/wait.h>

#include "kselftest_harness.h"
#include "kstls_test.h"
#include "kstls_mem.h"

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

/* Sets failslab up for fail-nth: 0, or -1 if the kernel cannot inject failures. */
static int failslab_setup(void)
{
	if (access(FAIL_NTH, W_OK))
		return -1;
	/* failslab ignores sleeping allocations unless told otherwise; and keep the log quiet. */
	if (write_str(FAILSLAB "ignore-gfp-wait", "N") || write_str(FAILSLAB "verbose", "0"))
		return -1;
	return 0;
}

FIXTURE(fi)
{
	int fd;
};

FIXTURE_SETUP(fi)
{
	if (access(FAIL_NTH, W_OK))
		SKIP(return, "no fail-nth: kernel without CONFIG_FAULT_INJECTION");
	ASSERT_EQ(0, failslab_setup());
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

/*
 * mmap of the cache under fail-nth = 1, 2, ...: each attempt on a new context, so that every one
 * makes the cache again, including those whose failure comes after it was made (in the
 * mapping's page tables). A failed mmap keeps nothing: INFO shows the context as it was, and
 * the user's kernel memory (user_kbytes) is no more than it was before.
 */
TEST_F(fi, cache_mmap_fails_cleanly)
{
	struct kstls_info info, before, after;
	struct snapshot sb, sa;
	void *m = MAP_FAILED;
	int n, failed = 0, kept = 0, ret, hit;

	ASSERT_EQ(0, kstls_info_get(self->fd, &info));
	ASSERT_LT(0, info.cache_size);
	for (n = 1; n < 500; n++) {
		close(self->fd);
		self->fd = kstls_open();
		ASSERT_LE(0, self->fd);
		ASSERT_EQ(0, kstls_info_get(self->fd, &before));
		ASSERT_EQ(0, snap(self->fd, &sb));
		fail_nth(n);
		m = mmap(NULL, info.cache_size, PROT_READ, MAP_SHARED, self->fd, 0);
		ret = m == MAP_FAILED ? -errno : 0;
		hit = fail_injected();
		fail_nth(0);
		if (ret == 0 && !hit)
			break;
		if (ret == 0) {
			munmap(m, info.cache_size);
			continue;
		}
		ASSERT_EQ(-ENOMEM, ret) TH_LOG("fault %d", n);
		ASSERT_TRUE(hit) TH_LOG("fault %d: failed uninjected", n);
		ASSERT_EQ(0, snap(self->fd, &sa));
		ASSERT_EQ(0, memcmp(&sb, &sa, sizeof(sb))) TH_LOG("fault %d changed the context", n);
		ASSERT_EQ(0, kstls_info_get(self->fd, &after));
		/* The user's other contexts may only go meanwhile (the previous test's). */
		if (after.user_kbytes > before.user_kbytes) {
			ksft_print_msg("fault %d: mmap failed, %u KiB charged before, %u KiB after\n", n,
				       before.user_kbytes, after.user_kbytes);
			kept++;
		}
		failed++;
	}
	ksft_print_msg("mmap of the cache: %d injected failures, all ENOMEM, %d kept memory charged\n",
		       failed, kept);
	ASSERT_GT(500, n);
	ASSERT_LT(0, failed);
	ASSERT_EQ(0, kept);
	ASSERT_NE(MAP_FAILED, m);
	ASSERT_EQ(KSTLS_CACHE_MAGIC, ((struct kstls_cache_header *)m)->magic);
	/* The cache is charged while it exists. */
	ASSERT_EQ(0, kstls_info_get(self->fd, &after));
	ASSERT_LT(before.user_kbytes, after.user_kbytes);
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

/*
 * open() under fail-nth = 1, 2, ... until it succeeds with no failure injected. A failed open
 * must keep nothing, in particular no fork log in the global index: one would record every
 * child the process forks from then on (and those of any later process whose mm lands at the
 * same address), holding a reference to each task, uncharged, until rmmod. So after each
 * attempt the process forks and reaps OPEN_CHILDREN children; it runs in a child of its own, and
 * once it is gone, with every fd closed, the task_struct objects must be back to what they were,
 * within OPEN_SLACK (kernel threads that come and go), and kmemleak, where the kernel has it,
 * must report no new object of kstls's.
 */
#define OPEN_CHILDREN 32
#define OPEN_SLACK 16
#define KMEMLEAK "/sys/kernel/debug/kmemleak"

struct open_sweep {
	int attempts, failed, enomem, handled, done, last_err;
};

/* The sweep, in a process of its own: the figures go to @out. */
static int open_sweep(int out)
{
	struct open_sweep r = { 0 };

	for (int n = 1; n < 500 && !r.done; n++) {
		int fd, err, hit;

		fail_nth(n);
		fd = kstls_open();
		err = errno;
		hit = fail_injected();
		fail_nth(0);
		r.attempts++;
		if (fd >= 0) {
			close(fd);
			if (!hit) {
				r.done = 1;
				break;
			}
			r.handled++;
		} else {
			r.failed++;
			r.enomem += err == ENOMEM;
			r.last_err = err;
		}
		for (int i = 0; i < OPEN_CHILDREN; i++) {
			pid_t pid = fork();

			if (pid < 0)
				return 2;
			if (pid == 0)
				_exit(0);
			if (waitpid(pid, NULL, 0) != pid)
				return 3;
		}
	}
	return write(out, &r, sizeof(r)) == sizeof(r) ? 0 : 4;
}

/* Up to @max addresses of the objects kmemleak reports now with kstls in their backtrace. */
static int kstls_leaks(unsigned long *addr, int max)
{
	char line[512];
	unsigned long cur = 0;
	int n = 0;
	FILE *f = fopen(KMEMLEAK, "r");

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "unreferenced object 0x%lx", &cur) == 1)
			continue;
		if (cur && strstr(line, "kstls")) {
			if (n < max)
				addr[n++] = cur;
			cur = 0;
		}
	}
	fclose(f);
	return n;
}

/* No context of its own: the sweeping process must be forked from a process with none. */
FIXTURE(fi_open)
{
	long long tasks, task_size;
};

FIXTURE_SETUP(fi_open)
{
	if (failslab_setup())
		SKIP(return, "no fail-nth: kernel without CONFIG_FAULT_INJECTION");
	if (kstls_slab("task_struct", &self->tasks, &self->task_size))
		SKIP(return, "no task_struct in /proc/slabinfo (CONFIG_SLUB_DEBUG)");
}

FIXTURE_TEARDOWN(fi_open)
{
}

TEST_F_TIMEOUT(fi_open, failed_open_keeps_no_fork_log, 240)
{
	static unsigned long before[64], after[64];
	long long base = self->tasks, now = 0, size = self->task_size;
	struct open_sweep r;
	int out[2], status, nbefore = -1, nafter = -1, fresh = 0;
	pid_t pid;

	/* What kmemleak has reported so far is not this test's. */
	if (!access(KMEMLEAK, W_OK))
		nbefore = kstls_leaks(before, 64);
	ASSERT_EQ(0, pipe(out));
	pid = fork();
	ASSERT_LE(0, pid);
	if (pid == 0)
		_exit(open_sweep(out[1]));
	ASSERT_EQ(pid, waitpid(pid, &status, 0));
	ASSERT_TRUE(WIFEXITED(status));
	ASSERT_EQ(0, WEXITSTATUS(status));
	ASSERT_EQ(sizeof(r), read(out[0], &r, sizeof(r)));
	/* The last tasks are freed after an RCU grace period. */
	for (int i = 0; i < 50; i++) {
		ASSERT_EQ(0, kstls_slab("task_struct", &now, &size));
		if (now <= base + OPEN_SLACK)
			break;
		usleep(100000);
	}
	ksft_print_msg("open: %d attempts, %d failed (%d with ENOMEM), %d succeeded despite the fault; %d children forked\n",
		       r.attempts, r.failed, r.enomem, r.handled,
		       (r.attempts - r.done) * OPEN_CHILDREN);
	ksft_print_msg("task_struct: %lld objects before, %lld after (%+lld, %+.1f KiB)\n", base,
		       now, now - base, (now - base) * size / 1024.0);
	if (nbefore >= 0) {
		/* An object is reported once it is 5 s old at the start of a scan. */
		ASSERT_EQ(0, write_str(KMEMLEAK, "scan"));
		sleep(6);
		ASSERT_EQ(0, write_str(KMEMLEAK, "scan"));
		nafter = kstls_leaks(after, 64);
		for (int i = 0; i < nafter; i++) {
			int seen = 0;

			for (int j = 0; j < nbefore; j++)
				seen |= after[i] == before[j];
			if (!seen)
				ksft_print_msg("kmemleak: kstls object at %#lx\n", after[i]);
			fresh += !seen;
		}
		ksft_print_msg("kmemleak: %d new kstls objects reported\n", fresh);
	}
	ASSERT_TRUE(r.done);
	ASSERT_LT(0, r.failed);
	ASSERT_GE(base + OPEN_SLACK, now) TH_LOG("%lld task_structs kept", now - base);
	ASSERT_EQ(0, fresh);
}

TEST_HARNESS_MAIN
