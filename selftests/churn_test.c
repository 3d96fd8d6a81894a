// SPDX-License-Identifier: GPL-2.0
/*
 * churn_test.c - thread exit: threads that each touch 4 modules, dirty their blocks and exit,
 * over and over. Every new thread, even one
 * that reuses a dead thread's tid or thread pointer (glibc reuses stacks, and pid_max is lowered
 * so tids wrap), must get freshly initialised blocks; the module must reclaim exited threads by
 * itself, so its tables and the block memory stay bounded.
 *
 * 5,000 threads by default (a thread costs 1.5-6 ms to create under TCG with the debug kernel;
 * pid_max is lowered to 4096, so tids are reused); KSTLS_CHURN_THREADS=100000 for the long run.
 */
#include <pthread.h>
#include <stdlib.h>

#include "kselftest_harness.h"
#include "kstls_test.h"

#define NMODULES 4
#define BATCH 8
#define MEMSZ 96
#define FILESZ 40

static unsigned char images[NMODULES][FILESZ];

struct churner {
	int fd;
	const __u64 *ids;
	pid_t tid;
	unsigned long tp;
	int err;
};

static void *churn(void *arg)
{
	struct churner *c = arg;

	c->tid = kstls_gettid();
	__asm__ volatile("mov %%fs:0, %0" : "=r"(c->tp));
	for (int m = 0; m < NMODULES; m++) {
		unsigned char *b;

		if (kstls_get(c->fd, c->ids[m], 0, (void **)&b)) {
			c->err = 1;
			return NULL;
		}
		if (memcmp(b, images[m], FILESZ) || !kstls_all_zero(b + FILESZ, MEMSZ - FILESZ)) {
			c->err = 2;
			return NULL;
		}
		memset(b, 0xee, MEMSZ);
	}
	return NULL;
}

static long read_long(const char *path)
{
	FILE *f = fopen(path, "r");
	long v = -1;

	if (f) {
		if (fscanf(f, "%ld", &v) != 1)
			v = -1;
		fclose(f);
	}
	return v;
}

static int write_long(const char *path, long v)
{
	FILE *f = fopen(path, "w");
	int ok;

	if (!f)
		return -1;
	ok = fprintf(f, "%ld\n", v) > 0;
	return (fclose(f) == 0 && ok) ? 0 : -1;
}

static long slab_kb(void)
{
	char line[128];
	long kb = -1;
	FILE *f = fopen("/proc/meminfo", "r");

	while (f && fgets(line, sizeof(line), f))
		if (sscanf(line, "Slab: %ld kB", &kb) == 1)
			break;
	if (f)
		fclose(f);
	return kb;
}

#define PID_MAX_PATH "/proc/sys/kernel/pid_max"

FIXTURE(churn)
{
};

FIXTURE_SETUP(churn)
{
}

FIXTURE_TEARDOWN(churn)
{
}

/* 100,000 threads take several minutes under TCG with the debug kernel. */
TEST_F_TIMEOUT(churn, thread_churn_reclaims_and_reinitialises, 1800)
{
	const char *env = getenv("KSTLS_CHURN_THREADS");
	long total = env ? atol(env) : 5000;
	long old_pid_max = read_long(PID_MAX_PATH);
	long tid_reuse = 0, tp_reuse = 0, done = 0;
	unsigned char *seen_tid = calloc(1 << 22, 1);
	unsigned long first_tp = 0;
	__u64 ids[NMODULES];
	struct kstls_info info;
	struct kstls_stats st;
	size_t max_mapped = 0;
	unsigned int max_threads = 0;
	long slab0, slab1;
	int fd = kstls_open();

	ASSERT_LE(0, fd);
	ASSERT_NE(NULL, seen_tid);
	/* Make tids wrap quickly so that tid reuse is certain, not luck. */
	if (old_pid_max > 0)
		write_long(PID_MAX_PATH, 4096);
	for (int m = 0; m < NMODULES; m++) {
		kstls_pattern(images[m], FILESZ, 10 + m);
		ASSERT_EQ(0, kstls_reg(fd, images[m], FILESZ, MEMSZ, 32, m, &ids[m]));
	}
	slab0 = slab_kb();
	while (done < total) {
		struct churner c[BATCH];
		pthread_t t[BATCH];
		int n = total - done < BATCH ? (int)(total - done) : BATCH;

		for (int i = 0; i < n; i++) {
			c[i] = (struct churner){ .fd = fd, .ids = ids };
			ASSERT_EQ(0, pthread_create(&t[i], NULL, churn, &c[i]));
		}
		for (int i = 0; i < n; i++) {
			ASSERT_EQ(0, pthread_join(t[i], NULL));
			ASSERT_EQ(0, c[i].err)
				TH_LOG("thread %ld (tid %d) failed check %d", done + i, c[i].tid,
				       c[i].err);
			if (c[i].tid >= 0 && c[i].tid < (1 << 22)) {
				tid_reuse += seen_tid[c[i].tid];
				seen_tid[c[i].tid] = 1;
			}
			if (!first_tp)
				first_tp = c[i].tp;
			else
				tp_reuse += c[i].tp == first_tp;
		}
		done += n;
		if (done % 4096 < BATCH || done == total) {
			ASSERT_EQ(0, kstls_info_get(fd, &info));
			if (info.block_bytes > max_mapped)
				max_mapped = info.block_bytes;
			if (info.nr_threads > max_threads)
				max_threads = info.nr_threads;
		}
	}
	slab1 = slab_kb();
	if (old_pid_max > 0)
		write_long(PID_MAX_PATH, old_pid_max);

	ASSERT_EQ(0, kstls_stats_get(fd, 0, 0, &st));
	ASSERT_EQ(0, kstls_info_get(fd, &info));
	ksft_print_msg("%ld threads x %d modules: %ld tid reuses, %ld thread-pointer reuses\n",
		       total, NMODULES, tid_reuse, tp_reuse);
	ksft_print_msg("reclaimed %llu exited threads; peak %u live tables, peak %zu bytes mapped, "
		       "%llu live blocks now; Slab %ld kB -> %ld kB\n",
		       (unsigned long long)st.thread_exits, max_threads, max_mapped,
		       (unsigned long long)st.blocks, slab0, slab1);
	/* Every thread but the last batch, at most, has been reclaimed. */
	EXPECT_GE(st.thread_exits, (__u64)(total - BATCH));
	EXPECT_EQ((__u64)total * NMODULES, st.allocs);
	/* At most two batches of tables and blocks are alive at a time. */
	EXPECT_LE(max_threads, 2 * BATCH);
	EXPECT_LE(st.blocks, 2 * BATCH * NMODULES);
	/*
	 * The modules are small, so their blocks are packed: one row (a page) per live thread,
	 * and one 64 KiB arena of 16 rows holds every row that is ever live at once.
	 */
	EXPECT_LE(max_mapped, 64 * 1024);
	if (total >= 5000)
		EXPECT_LT(0, tid_reuse);
	free(seen_tid);
	close(fd);
}

TEST_HARNESS_MAIN
