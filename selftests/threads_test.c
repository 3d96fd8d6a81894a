// SPDX-License-Identifier: GPL-2.0
/*
 * threads_test.c - many threads of one process at once: every thread gets its own blocks and
 * keeps its own values, the counters see every access, and threads that register, unregister
 * and look up concurrently (while the process forks) get only valid answers.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/wait.h>

#include "kselftest_harness.h"
#include "kstls_test.h"

#define NTHREADS 8
#define NMODULES 3
#define MEMSZ 48
#define FILESZ 20

static unsigned char images[NMODULES][FILESZ];

struct worker {
	int fd;
	__u64 ids[NMODULES];
	pthread_barrier_t *barrier;
	pid_t tid;
	void *blocks[NMODULES];
	int err;
};

static void *own_values(void *arg)
{
	struct worker *w = arg;

	w->tid = kstls_gettid();
	for (int m = 0; m < NMODULES; m++) {
		unsigned char *b;

		if (kstls_get(w->fd, w->ids[m], 0, (void **)&b)) {
			w->err = 1;
			break;
		}
		if (memcmp(b, images[m], FILESZ) || !kstls_all_zero(b + FILESZ, MEMSZ - FILESZ))
			w->err = 2;
		w->blocks[m] = b;
		/* Stamp the block with this thread's id. */
		memset(b, 0, MEMSZ);
		memcpy(b, &w->tid, sizeof(w->tid));
	}
	pthread_barrier_wait(w->barrier);
	/* Every thread has stamped its blocks: each must still hold its own stamp. */
	for (int m = 0; m < NMODULES && !w->err; m++) {
		void *again;
		pid_t seen;

		if (kstls_get(w->fd, w->ids[m], 0, &again) || again != w->blocks[m])
			w->err = 3;
		memcpy(&seen, w->blocks[m], sizeof(seen));
		if (seen != w->tid)
			w->err = 4;
	}
	pthread_barrier_wait(w->barrier);
	return NULL;
}

FIXTURE(mt)
{
	int fd;
	__u64 ids[NMODULES];
};

FIXTURE_SETUP(mt)
{
	self->fd = kstls_open();
	ASSERT_LE(0, self->fd) TH_LOG("open %s: %s", KSTLS_DEVICE_PATH, strerror(errno));
	for (int m = 0; m < NMODULES; m++) {
		kstls_pattern(images[m], FILESZ, m + 1);
		ASSERT_EQ(0, kstls_reg(self->fd, images[m], FILESZ, MEMSZ, 16, 0, &self->ids[m]));
	}
}

FIXTURE_TEARDOWN(mt)
{
	close(self->fd);
}

TEST_F(mt, eight_threads_keep_their_own_values)
{
	pthread_barrier_t barrier;
	struct worker w[NTHREADS];
	pthread_t t[NTHREADS];

	ASSERT_EQ(0, pthread_barrier_init(&barrier, NULL, NTHREADS));
	for (int i = 0; i < NTHREADS; i++) {
		w[i] = (struct worker){ .fd = self->fd, .barrier = &barrier };
		memcpy(w[i].ids, self->ids, sizeof(self->ids));
		ASSERT_EQ(0, pthread_create(&t[i], NULL, own_values, &w[i]));
	}
	for (int i = 0; i < NTHREADS; i++) {
		ASSERT_EQ(0, pthread_join(t[i], NULL));
		EXPECT_EQ(0, w[i].err) TH_LOG("thread %d failed check %d", i, w[i].err);
	}
	for (int i = 0; i < NTHREADS; i++)
		for (int j = i + 1; j < NTHREADS; j++)
			for (int m = 0; m < NMODULES; m++)
				EXPECT_NE(w[i].blocks[m], w[j].blocks[m]);
}

TEST_F(mt, stats_count_every_access)
{
	struct kstls_stats st;
	pid_t me = kstls_gettid();

	for (int i = 0; i < 10; i++)
		ASSERT_EQ(0, kstls_get(self->fd, self->ids[0], i, NULL));
	ASSERT_EQ(0, kstls_get(self->fd, self->ids[1], 0, NULL));

	ASSERT_EQ(0, kstls_stats_get(self->fd, self->ids[0], (__u32)me, &st));
	EXPECT_EQ(10, st.lookups);
	EXPECT_EQ(1, st.blocks);
	EXPECT_EQ(MEMSZ, st.block_bytes);
	ASSERT_EQ(0, kstls_stats_get(self->fd, 0, (__u32)me, &st));
	EXPECT_EQ(11, st.lookups);
	EXPECT_EQ(2, st.allocs);
	EXPECT_EQ(2, st.blocks);
	ASSERT_EQ(0, kstls_stats_get(self->fd, self->ids[2], 0, &st));
	EXPECT_EQ(0, st.lookups);
	EXPECT_EQ(0, st.blocks);
	ASSERT_EQ(0, kstls_stats_get(self->fd, 0, 0, &st));
	EXPECT_EQ(11, st.lookups);
	EXPECT_EQ(2, st.allocs);
	EXPECT_EQ(2 * MEMSZ, st.block_bytes);
}

/* --- concurrent register / unregister / lookup, with forks ---------------------------------- */

#define STRESS_ROUNDS 300

struct stress {
	int fd;
	int index;
	_Atomic __u64 *shared;	/* module ids other threads may unregister at any time */
	int nshared;
	int err;
	long ops;
};

static void *stress_thread(void *arg)
{
	struct stress *s = arg;
	unsigned int seed = (unsigned int)s->index * 7919 + 1;
	unsigned char img[32];

	kstls_pattern(img, sizeof(img), s->index);
	for (int r = 0; r < STRESS_ROUNDS && !s->err; r++) {
		int slot = rand_r(&seed) % s->nshared;
		__u64 id = atomic_load(&s->shared[slot]);
		unsigned char *b;
		int ret;

		switch (rand_r(&seed) % 4) {
		case 0: {	/* replace a shared module */
			__u64 new_id;

			if (kstls_reg(s->fd, img, sizeof(img), 64, 32, 0, &new_id)) {
				s->err = 1;
				break;
			}
			id = atomic_exchange(&s->shared[slot], new_id);
			ret = id ? kstls_unreg(s->fd, id) : 0;
			/* Only this thread took @id out of the table, so it must still exist. */
			if (ret)
				s->err = 2;
			break;
		}
		case 3:
			if (s->index == 0 && r % 50 == 0) {	/* fork while others run */
				pid_t pid = fork();

				if (pid == 0)
					_exit(kstls_get(s->fd, id, 0, NULL) == -EPERM ? 0 : 1);
				int status;

				if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status) ||
				    WEXITSTATUS(status))
					s->err = 3;
				break;
			}
			/* fall through */
		default:	/* look up: a valid block, or EINVAL when the id just went away */
			ret = kstls_get(s->fd, id, 0, (void **)&b);
			if (ret == 0) {
				/* The block may be unmapped by a concurrent UNREGISTER: don't touch it. */
			} else if (ret != -EINVAL) {
				s->err = 4;
			}
			break;
		}
		s->ops++;
	}
	return NULL;
}

TEST(concurrent_register_unregister_lookup_and_fork)
{
	_Atomic __u64 shared[4] = { 0 };
	struct stress s[NTHREADS];
	pthread_t t[NTHREADS];
	struct kstls_info info;
	long ops = 0;
	int fd = kstls_open();

	ASSERT_LE(0, fd);
	for (int i = 0; i < 4; i++) {
		__u64 id;

		ASSERT_EQ(0, kstls_reg(fd, images[0], 8, 64, 32, 0, &id));
		atomic_store(&shared[i], id);
	}
	for (int i = 0; i < NTHREADS; i++) {
		s[i] = (struct stress){ .fd = fd, .index = i, .shared = shared, .nshared = 4 };
		ASSERT_EQ(0, pthread_create(&t[i], NULL, stress_thread, &s[i]));
	}
	for (int i = 0; i < NTHREADS; i++) {
		ASSERT_EQ(0, pthread_join(t[i], NULL));
		EXPECT_EQ(0, s[i].err) TH_LOG("thread %d failed check %d", i, s[i].err);
		ops += s[i].ops;
	}
	ASSERT_EQ(0, kstls_info_get(fd, &info));
	EXPECT_EQ(4, info.nr_modules);
	ksft_print_msg("%ld operations, %u modules left, %llu bytes mapped\n", ops,
		       info.nr_modules, (unsigned long long)info.block_bytes);
	close(fd);
}

TEST_HARNESS_MAIN
