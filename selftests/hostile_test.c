// SPDX-License-Identifier: GPL-2.0
/*
 * hostile_test.c - what an unprivileged local user can make the kernel keep through /dev/kstls
 * (mode 0666, as packaging/60-kstls.rules sets it): at most 64 MiB per user, whatever it asks.
 *
 * Each variant runs in a child that has become uid/gid 65534 and measures the kernel memory it
 * pinned: the drop of MemAvailable less the growth of its own resident set (user memory, which is
 * the user's own and charged to it anyway). The figures are printed on "#" lines.
 *  - images: the scenario first seen: 30 fds, 16 images of 1 MiB on each (backed by the zero
 *    page, so they cost the user nothing) and one failing mmap per fd;
 *  - tables: 30 fds with 1024 small modules each, and 128 threads that touch the last module of
 *    every fd (the threads' tables, indexed by module index).
 * A refused request is fine (the caps are there to refuse them): its errno is counted and shown.
 * Also here: a failed mmap of the cache leaves nothing allocated.
 */
#define _GNU_SOURCE	/* strerrorname_np */
#include <pthread.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/wait.h>

#include "kselftest_harness.h"
#include "kstls_test.h"
#include "kstls_mem.h"

#define NFDS 30
#define NIMAGES 16
#define IMAGE_SIZE (1 << 20)
#define NMODULES 1024
#define NTHREADS 128
/* The most kernel memory one user may pin, by default. */
#define USER_PIN_MAX (64LL << 20)

/* errno counts of refused requests, for the report. */
struct refusals {
	int n[256];
};

static void refused(struct refusals *r, int err)
{
	if (err < 0 && -err < 256)
		r->n[-err]++;
}

static void report_refusals(const char *what, const struct refusals *r)
{
	for (int e = 1; e < 256; e++)
		if (r->n[e])
			ksft_print_msg("%s: %d refused with %s\n", what, r->n[e], strerrorname_np(e));
}

struct figures {
	long long avail, rss;
};

/* A new context, or -1 with the refusal counted in @opens. */
static int open_counted(struct refusals *opens)
{
	int fd = kstls_open();

	if (fd < 0)
		refused(opens, -errno);
	return fd;
}

static struct figures now(void)
{
	return (struct figures){ kstls_meminfo("MemAvailable"), kstls_rss() };
}

/* Kernel memory pinned between @a and @b: MemAvailable lost, less the caller's own pages. */
static long long pinned(struct figures a, struct figures b)
{
	return (a.avail - b.avail) - (b.rss - a.rss);
}

static int report(const char *what, struct figures a, struct figures b)
{
	long long p = pinned(a, b);

	ksft_print_msg("%s: pinned %.1f MiB of kernel memory as uid %d (MemAvailable %.1f -> %.1f MiB, own resident set +%.1f MiB)\n",
		       what, p / KSTLS_MIB, getuid(), a.avail / KSTLS_MIB, b.avail / KSTLS_MIB,
		       (b.rss - a.rss) / KSTLS_MIB);
	return p <= USER_PIN_MAX ? 0 : 1;
}

/* The first scenario: 16 zero-page images of 1 MiB on each fd, one failing mmap per fd. */
static int pin_images(void)
{
	struct refusals opens = { 0 }, regs = { 0 }, maps = { 0 };
	struct figures before, after;
	int nfds = 0, nregs = 0;
	/* Never written: every page of it is the zero page. */
	const char *image = mmap(NULL, IMAGE_SIZE, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (image == MAP_FAILED)
		return 2;
	before = now();
	for (int i = 0; i < NFDS; i++) {
		int fd = open_counted(&opens);

		if (fd < 0)
			continue;
		nfds++;
		for (int m = 0; m < NIMAGES; m++) {
			int ret = kstls_reg(fd, image, IMAGE_SIZE, IMAGE_SIZE, 8, 0, NULL);

			if (ret)
				refused(&regs, ret);
			else
				nregs++;
		}
		/* The wrong length: refused, and must leave nothing behind. */
		if (mmap(NULL, 4096, PROT_READ, MAP_SHARED, fd, 0) != MAP_FAILED)
			return 3;
		refused(&maps, -errno);
	}
	after = now();
	ksft_print_msg("images: %d fds, %d images of 1 MiB registered\n", nfds, nregs);
	report_refusals("images: open", &opens);
	report_refusals("images: REGISTER", &regs);
	report_refusals("images: mmap", &maps);
	return report("images", before, after);
}

struct toucher {
	int *fds, nfds;
	__u64 (*ids)[NMODULES];
	pthread_barrier_t *b;
	struct refusals r;
	int ok;
};

static void *touch_last(void *arg)
{
	struct toucher *t = arg;

	for (int i = 0; i < t->nfds; i++) {
		int ret = kstls_get(t->fds[i], t->ids[i][NMODULES - 1], 0, NULL);

		if (ret)
			refused(&t->r, ret);
		else
			t->ok++;
	}
	pthread_barrier_wait(t->b);	/* touched */
	pthread_barrier_wait(t->b);	/* measured */
	return NULL;
}

/* The second scenario: per-thread tables indexed by module index. */
static int pin_tables(void)
{
	static __u64 ids[NFDS][NMODULES];
	static struct toucher t[NTHREADS];
	struct refusals opens = { 0 }, regs = { 0 }, gets = { 0 };
	struct figures before, after;
	pthread_t th[NTHREADS];
	pthread_barrier_t b;
	int fds[NFDS], nfds = 0, nregs = 0, ngets = 0, nth = 0, ret;

	before = now();
	for (int i = 0; i < NFDS; i++) {
		int fd = open_counted(&opens);

		if (fd < 0)
			continue;
		for (int m = 0; m < NMODULES; m++) {
			ret = kstls_reg(fd, NULL, 0, 8, 8, 0, &ids[nfds][m]);
			if (ret) {
				refused(&regs, ret);
				/* Touch the last module that made it. */
				ids[nfds][NMODULES - 1] = m ? ids[nfds][m - 1] : 0;
				break;
			}
			nregs++;
		}
		fds[nfds++] = fd;
	}
	if (pthread_barrier_init(&b, NULL, NTHREADS + 1))
		return 2;
	for (int i = 0; i < NTHREADS; i++) {
		t[i] = (struct toucher){ .fds = fds, .nfds = nfds, .ids = ids, .b = &b };
		if (pthread_create(&th[i], NULL, touch_last, &t[i]))
			return 3;
		nth++;
	}
	pthread_barrier_wait(&b);
	after = now();
	pthread_barrier_wait(&b);
	for (int i = 0; i < nth; i++) {
		pthread_join(th[i], NULL);
		ngets += t[i].ok;
		for (int e = 1; e < 256; e++)
			gets.n[e] += t[i].r.n[e];
	}
	ksft_print_msg("tables: %d fds, %d modules, %d threads, %d first touches of a last module\n",
		       nfds, nregs, nth, ngets);
	report_refusals("tables: open", &opens);
	report_refusals("tables: REGISTER", &regs);
	report_refusals("tables: GET_ADDR", &gets);
	/* The threads are gone, their tables not yet (they go at the next sweep). */
	return report("tables", before, after);
}

FIXTURE(hostile)
{
	int mode;
};

FIXTURE_VARIANT(hostile)
{
	int (*run)(void);
};

FIXTURE_VARIANT_ADD(hostile, images) { pin_images };
FIXTURE_VARIANT_ADD(hostile, tables) { pin_tables };

FIXTURE_SETUP(hostile)
{
	if (getuid() != 0)
		SKIP(return, "needs root to become uid %d", KSTLS_NOBODY);
	self->mode = kstls_open_to_all();
	ASSERT_LE(0, self->mode) TH_LOG("chmod %s: %s", KSTLS_DEVICE_PATH, strerror(errno));
}

FIXTURE_TEARDOWN(hostile)
{
	kstls_restore_mode(self->mode);
}

TEST_F_TIMEOUT(hostile, unprivileged_user_pins_at_most_64_mib, 300)
{
	int status;
	pid_t pid = fork();

	ASSERT_LE(0, pid);
	if (pid == 0) {
		int ret = kstls_become_nobody();

		if (ret) {
			ksft_print_msg("cannot become uid %d: %s\n", KSTLS_NOBODY, strerror(-ret));
			_exit(4);
		}
		_exit(variant->run());
	}
	ASSERT_EQ(pid, waitpid(pid, &status, 0));
	ASSERT_TRUE(WIFEXITED(status)) TH_LOG("status %#x", status);
	/* 1: more than 64 MiB pinned; 2 and up: the scenario could not be set up. */
	ASSERT_EQ(0, WEXITSTATUS(status));
}

/* A failing mmap allocates nothing that outlives it (the cache is made only for a valid one). */
TEST(failed_mmap_keeps_nothing)
{
	long long before, after;
	int fds[16];

	before = kstls_meminfo("VmallocUsed");
	ASSERT_LE(0, before);
	for (int i = 0; i < 16; i++) {
		fds[i] = kstls_open();
		ASSERT_LE(0, fds[i]);
		ASSERT_EQ(MAP_FAILED, mmap(NULL, 4096, PROT_READ, MAP_SHARED, fds[i], 0));
		ASSERT_EQ(EINVAL, errno);
	}
	after = kstls_meminfo("VmallocUsed");
	ksft_print_msg("16 failed mmaps: VmallocUsed %+.1f MiB\n", (after - before) / KSTLS_MIB);
	for (int i = 0; i < 16; i++)
		close(fds[i]);
	/* Others may allocate meanwhile: allow 1 MiB of noise. */
	ASSERT_GT(1LL << 20, after - before);
}

TEST_HARNESS_MAIN
