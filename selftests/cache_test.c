// SPDX-License-Identifier: GPL-2.0
/*
 * cache_test.c - the fast-path cache as user space sees it: mapped read-only, filled by
 * GET_ADDR, found from the thread pointer with the documented protocol (the slot's thread pointer
 * read last; implemented here in C, independently of libkstls), emptied on thread exit before the thread pointer can be
 * reused, on UNREGISTER while other threads spin on it, and in strict mode, where every access
 * traps and is counted; never inherited by a forked child, never mappable by another process.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>

#include "kselftest_harness.h"
#include "kstls_cache.h"
#include "kstls_test.h"

static unsigned long thread_pointer(void)
{
	unsigned long tp;

	__asm__ volatile("mov %%fs:0, %0" : "=r"(tp));
	return tp;
}

static const char image[32] = "cached image";

FIXTURE(cache)
{
	int fd;
	__u64 id;
	void *map;
	size_t size;
};

FIXTURE_SETUP(cache)
{
	struct kstls_info info;

	self->fd = kstls_open();
	ASSERT_LE(0, self->fd) TH_LOG("open %s: %s", KSTLS_DEVICE_PATH, strerror(errno));
	ASSERT_EQ(0, kstls_info_get(self->fd, &info));
	ASSERT_TRUE(info.features & KSTLS_FEAT_CACHE) TH_LOG("the module offers no cache");
	ASSERT_LT(0, info.cache_size);
	self->size = info.cache_size;
	self->map = mmap(NULL, self->size, PROT_READ, MAP_SHARED, self->fd, 0);
	ASSERT_NE(MAP_FAILED, self->map) TH_LOG("mmap: %s", strerror(errno));
	ASSERT_EQ(0, kstls_reg(self->fd, image, sizeof(image), 64, 16, 0, &self->id));
}

FIXTURE_TEARDOWN(cache)
{
	munmap(self->map, self->size);
	close(self->fd);
}

TEST_F(cache, header_describes_the_layout)
{
	const struct kstls_cache_header *h = self->map;

	ASSERT_EQ(KSTLS_CACHE_MAGIC, h->magic);
	ASSERT_EQ(KSTLS_CACHE_VERSION, h->version);
	ASSERT_EQ(1u << h->nr_slots_log2, h->nr_slots);
	ASSERT_EQ(KSTLS_CACHE_SLOTS_OFFSET, h->slots_offset);
	ASSERT_LE(1, h->nr_probes);
	ASSERT_LE(256, h->dtv_entries);
	ASSERT_EQ(0, h->mode);
	ASSERT_LT(h->slots_offset + h->nr_slots * sizeof(struct kstls_cache_slot), self->size);
}

/*
 * A thread's entries cover every module index modulo dtv_entries: a module of index >=
 * dtv_entries is cached too, in the entry it shares with its index-mate, which holds the module
 * filled last; the id compare keeps the other one a miss, never a wrong answer.
 */
TEST_F(cache, modules_beyond_dtv_entries_share_an_entry)
{
	const struct kstls_cache_header *h = self->map;
	unsigned long tp = thread_pointer();
	__u64 n = h->dtv_entries + 1, *ids = calloc(n, sizeof(*ids)), hi = 0, lo = 0;
	void *p_hi, *p_lo;

	ASSERT_NE(NULL, ids);
	for (__u64 i = 0; i < n; i++) {
		ASSERT_EQ(0, kstls_reg(self->fd, image, 8, 8, 8, 0, &ids[i]));
		if ((__u32)ids[i] == h->dtv_entries + 1)
			hi = ids[i];
		if ((__u32)ids[i] == 1)
			lo = ids[i];
	}
	ASSERT_NE(0, hi) TH_LOG("no module got slot %u", h->dtv_entries + 1);
	ASSERT_NE(0, lo);
	ASSERT_EQ(0, kstls_get(self->fd, hi, 0, &p_hi));
	ASSERT_EQ((unsigned long)p_hi + 4, cache_lookup(self->map, tp, hi, 4));
	ASSERT_EQ(0, kstls_get(self->fd, lo, 0, &p_lo));
	ASSERT_EQ((unsigned long)p_lo, cache_lookup(self->map, tp, lo, 0));
	ASSERT_EQ(0, cache_lookup(self->map, tp, hi, 0));
	/* Unregistering the one that lost the entry leaves the other's. */
	ASSERT_EQ(0, kstls_unreg(self->fd, hi));
	ASSERT_EQ((unsigned long)p_lo, cache_lookup(self->map, tp, lo, 0));
	free(ids);
}

TEST_F(cache, mapping_is_read_only)
{
	void *w;

	/* The fd is O_RDWR, so it is kstls, not the VFS, that refuses a writable mapping. */
	errno = 0;
	w = mmap(NULL, self->size, PROT_READ | PROT_WRITE, MAP_SHARED, self->fd, 0);
	ASSERT_EQ(MAP_FAILED, w);
	ASSERT_EQ(EINVAL, errno);
	ASSERT_EQ(-1, mprotect(self->map, self->size, PROT_READ | PROT_WRITE));
	ASSERT_EQ(EACCES, errno);
	/* The wrong size or offset is refused too. */
	errno = 0;
	ASSERT_EQ(MAP_FAILED, mmap(NULL, 4096, PROT_READ, MAP_SHARED, self->fd, 0));
	ASSERT_EQ(EINVAL, errno);
	errno = 0;
	ASSERT_EQ(MAP_FAILED, mmap(NULL, self->size, PROT_READ, MAP_SHARED, self->fd, 4096));
	ASSERT_EQ(EINVAL, errno);
}

TEST_F(cache, get_addr_fills_and_lookup_hits)
{
	unsigned long tp = thread_pointer();
	void *p;

	ASSERT_EQ(0, cache_lookup(self->map, tp, self->id, 0));
	ASSERT_EQ(0, kstls_get(self->fd, self->id, 5, &p));
	ASSERT_EQ((unsigned long)p, cache_lookup(self->map, tp, self->id, 5));
	ASSERT_STREQ(image, (char *)cache_lookup(self->map, tp, self->id, 0));
	/* Another id of the same index (a later generation) never matches. */
	ASSERT_EQ(0, cache_lookup(self->map, tp, self->id + (1ULL << 32), 0));
	ASSERT_EQ(1, kstls_fdinfo_value(self->fd, "cached-threads"));
}

struct reuse {
	int fd;
	__u64 id;
	const void *map;
	unsigned long tp;
	int hit_before_fill, hit_after_fill;
};

static void *new_thread_probe(void *arg)
{
	struct reuse *r = arg;
	void *p;

	r->tp = thread_pointer();
	r->hit_before_fill = cache_lookup(r->map, r->tp, r->id, 0) != 0;
	if (kstls_get(r->fd, r->id, 0, &p))
		return NULL;
	r->hit_after_fill = cache_lookup(r->map, r->tp, r->id, 0) == (unsigned long)p;
	/* Dirty the block: the next thread must not see this. */
	memset(p, 0x77, 64);
	return NULL;
}

TEST_F(cache, reused_thread_pointer_never_hits_the_dead_threads_entry)
{
	unsigned long first_tp = 0;
	long threads0, exits0;
	int reuses = 0;

	threads0 = kstls_fdinfo_value(self->fd, "\nthreads");
	exits0 = kstls_fdinfo_value(self->fd, "thread-exits");
	ASSERT_LE(0, threads0);
	for (int i = 0; i < 200; i++) {
		struct reuse r = { self->fd, self->id, self->map };
		pthread_t t;

		ASSERT_EQ(0, pthread_create(&t, NULL, new_thread_probe, &r));
		ASSERT_EQ(0, pthread_join(t, NULL));
		ASSERT_EQ(0, r.hit_before_fill) TH_LOG("thread %d hit a dead thread's entry", i);
		ASSERT_EQ(1, r.hit_after_fill) TH_LOG("thread %d: no hit after GET_ADDR", i);
		if (!first_tp)
			first_tp = r.tp;
		else
			reuses += r.tp == first_tp;
	}
	/* glibc reuses thread stacks: the check above was exercised. */
	ksft_print_msg("%d of 199 threads reused the first thread's thread pointer\n", reuses);
	ASSERT_LT(0, reuses);
	ASSERT_EQ(0, kstls_fdinfo_value(self->fd, "cached-threads"));
	/*
	 * INFO reclaims the tables of the joined threads, the last one included (reading fdinfo
	 * changes nothing: it shows what the last command left). pthread_join returns when the
	 * kernel clears the thread's tid, in exit_mm before the task leaves the address space, so
	 * the last thread may not be gone yet for a moment: INFO is asked again, for up to a
	 * second (seen under User-Mode Linux, whose exits are slow).
	 */
	struct kstls_info info;

	for (int i = 0; i < 200; i++) {
		ASSERT_EQ(0, kstls_info_get(self->fd, &info));
		if (kstls_fdinfo_value(self->fd, "\nthreads") == threads0)
			break;
		usleep(5000);
	}
	ASSERT_EQ(threads0, kstls_fdinfo_value(self->fd, "\nthreads"));
	ASSERT_EQ(exits0 + 200, kstls_fdinfo_value(self->fd, "thread-exits"));
}

struct spinner {
	int fd;
	__u64 id;
	const void *map;
	atomic_int *gone;
	atomic_int *stop;
	long hits, stale;
};

static void *spin_lookup(void *arg)
{
	struct spinner *s = arg;
	unsigned long tp = thread_pointer();

	kstls_get(s->fd, s->id, 0, NULL);
	while (!atomic_load(s->stop)) {
		int gone = atomic_load(s->gone);
		unsigned long a = cache_lookup(s->map, tp, s->id, 0);

		if (a)
			s->hits++;
		/* A lookup that began after UNREGISTER returned must not find the block. */
		if (a && gone)
			s->stale++;
	}
	return NULL;
}

TEST_F(cache, unregister_while_threads_spin_never_answers_a_freed_block)
{
	struct spinner s[4];
	pthread_t t[4];
	atomic_int gone = 0, stop = 0;

	for (int i = 0; i < 4; i++) {
		s[i] = (struct spinner){ self->fd, self->id, self->map, &gone, &stop };
		ASSERT_EQ(0, pthread_create(&t[i], NULL, spin_lookup, &s[i]));
	}
	usleep(200 * 1000);
	ASSERT_EQ(0, kstls_unreg(self->fd, self->id));
	atomic_store(&gone, 1);
	usleep(200 * 1000);
	atomic_store(&stop, 1);
	for (int i = 0; i < 4; i++) {
		ASSERT_EQ(0, pthread_join(t[i], NULL));
		EXPECT_LT(0, s[i].hits);
		EXPECT_EQ(0, s[i].stale);
	}
}

struct churn {
	int fd;
	const void *map;
	_Atomic __u64 id;	/* the module the spinners look up now */
	atomic_int stop;
};

struct churn_spinner {
	struct churn *c;
	long hits, refills, wrong;
	unsigned long got, want;
};

static void *churn_spin(void *arg)
{
	struct churn_spinner *s = arg;
	unsigned long tp = thread_pointer(), mine = 0;
	__u64 id = 0;
	void *p;

	while (!atomic_load(&s->c->stop)) {
		__u64 cur = atomic_load(&s->c->id);
		unsigned long a;

		if (cur != id) {
			/* A new module: this thread's block of it, from the kernel. */
			if (kstls_get(s->c->fd, cur, 0, &p))
				continue;	/* already unregistered again */
			id = cur;
			mine = (unsigned long)p;
			s->refills++;
		}
		a = cache_lookup(s->c->map, tp, id, 0);
		if (!a) {
			/* A miss refills; a block never moves, so the answer is the same. */
			if (!kstls_get(s->c->fd, id, 0, &p) && (unsigned long)p != mine) {
				s->wrong++;
				s->got = (unsigned long)p;
				s->want = mine;
			}
			continue;
		}
		s->hits++;
		if (a != mine) {
			s->wrong++;
			s->got = a;
			s->want = mine;
		}
	}
	return NULL;
}

static void *touch_and_exit(void *arg)
{
	struct churn *c = arg;

	kstls_get(c->fd, atomic_load(&c->id), 0, NULL);
	return NULL;
}

/*
 * The reader protocol under everything that takes entries and slots away at once: four threads
 * look their block up without a syscall while other threads come and go (their slots and entry
 * pages are freed and handed out again), strict mode empties the whole cache, and the module is
 * unregistered and replaced (its index reused with a new generation). Every hit must be
 * the spinning thread's own block of the id it asked for.
 */
TEST_F(cache, hits_stay_the_threads_own_under_churn)
{
	struct churn c = { .fd = self->fd, .map = self->map, .id = self->id };
	struct kstls_mode m = { 0 };
	struct churn_spinner s[4];
	pthread_t t[4];
	int rounds = 0;
	time_t end = time(NULL) + 4;

	for (int i = 0; i < 4; i++) {
		s[i] = (struct churn_spinner){ .c = &c };
		ASSERT_EQ(0, pthread_create(&t[i], NULL, churn_spin, &s[i]));
	}
	while (time(NULL) < end || rounds < 30) {
		pthread_t sh[2];
		__u64 next;

		for (int i = 0; i < 2; i++)
			ASSERT_EQ(0, pthread_create(&sh[i], NULL, touch_and_exit, &c));
		for (int i = 0; i < 2; i++)
			ASSERT_EQ(0, pthread_join(sh[i], NULL));
		if (rounds % 3 == 1) {
			m.mode = KSTLS_MODE_STRICT;
			ASSERT_EQ(0, kstls_ioctl(self->fd, KSTLS_IOC_SET_MODE, &m));
			m.mode = 0;
			ASSERT_EQ(0, kstls_ioctl(self->fd, KSTLS_IOC_SET_MODE, &m));
		}
		if (rounds % 5 == 2) {
			ASSERT_EQ(0, kstls_unreg(self->fd, atomic_load(&c.id)));
			ASSERT_EQ(0, kstls_reg(self->fd, image, sizeof(image), 64, 16, 0, &next));
			atomic_store(&c.id, next);
		}
		rounds++;
		usleep(2000);
	}
	atomic_store(&c.stop, 1);
	for (int i = 0; i < 4; i++) {
		ASSERT_EQ(0, pthread_join(t[i], NULL));
		EXPECT_EQ(0, s[i].wrong) TH_LOG("spinner %d: %#lx where its block is %#lx", i,
						s[i].got, s[i].want);
		EXPECT_LT(0, s[i].hits);
		EXPECT_LT(1, s[i].refills);
	}
	self->id = atomic_load(&c.id);
	ksft_print_msg("%d rounds; hits %ld %ld %ld %ld; modules seen %ld %ld %ld %ld\n", rounds,
		       s[0].hits, s[1].hits, s[2].hits, s[3].hits, s[0].refills, s[1].refills,
		       s[2].refills, s[3].refills);
}

TEST_F(cache, strict_mode_empties_the_cache_and_traps_every_access)
{
	struct kstls_mode m = { .mode = KSTLS_MODE_STRICT };
	const struct kstls_cache_header *h = self->map;
	unsigned long tp = thread_pointer();
	long traps0, fills0;

	ASSERT_EQ(0, kstls_get(self->fd, self->id, 0, NULL));
	ASSERT_NE(0, cache_lookup(self->map, tp, self->id, 0));
	ASSERT_EQ(0, kstls_ioctl(self->fd, KSTLS_IOC_SET_MODE, &m));
	ASSERT_EQ(KSTLS_MODE_STRICT, h->mode);
	ASSERT_EQ(0, cache_lookup(self->map, tp, self->id, 0));
	traps0 = kstls_fdinfo_value(self->fd, "traps");
	fills0 = kstls_fdinfo_value(self->fd, "cache-fills");
	for (int i = 0; i < 100; i++)
		ASSERT_EQ(0, kstls_get(self->fd, self->id, 0, NULL));
	ASSERT_EQ(traps0 + 100, kstls_fdinfo_value(self->fd, "traps"));
	ASSERT_EQ(fills0, kstls_fdinfo_value(self->fd, "cache-fills"));
	ASSERT_EQ(0, cache_lookup(self->map, tp, self->id, 0));
	m.mode = 0;
	ASSERT_EQ(0, kstls_ioctl(self->fd, KSTLS_IOC_SET_MODE, &m));
	ASSERT_EQ(0, h->mode);
	ASSERT_EQ(0, kstls_get(self->fd, self->id, 0, NULL));
	ASSERT_NE(0, cache_lookup(self->map, tp, self->id, 0));
	m.mode = 2;
	ASSERT_EQ(-EINVAL, kstls_ioctl(self->fd, KSTLS_IOC_SET_MODE, &m));
}

TEST_F(cache, fork_does_not_copy_the_mapping_and_others_cannot_map)
{
	pid_t pid = fork();
	int status;

	ASSERT_LE(0, pid);
	if (pid == 0) {
		unsigned char vec;
		void *m;

		if (mincore(self->map, 4096, &vec) != -1 || errno != ENOMEM)
			_exit(1);
		m = mmap(NULL, self->size, PROT_READ, MAP_SHARED, self->fd, 0);
		_exit(m == MAP_FAILED && errno == EPERM ? 0 : 2);
	}
	ASSERT_EQ(pid, waitpid(pid, &status, 0));
	ASSERT_TRUE(WIFEXITED(status));
	ASSERT_EQ(0, WEXITSTATUS(status));
}

TEST_HARNESS_MAIN
