// SPDX-License-Identifier: GPL-2.0
/*
 * fork_race_test.c - ADOPT gives a forked child exactly the state fork copied, even while other
 * threads of the parent first-touch modules as it forks.
 *
 * A first touch of a pool module whose arena is full maps a new arena (rust/pool.rs, 64 KiB at
 * least; a block of 40000 bytes fills one alone, so every first touch of such a module maps one).
 * One that another thread makes while the main thread forks may wait for the mmap lock that fork
 * holds while it copies the address space, and then map its arena in the parent only, after the
 * copy. The child must never adopt a state with that arena in it: its first touch would be handed
 * a block that is not mapped in the child (EFAULT), or that lies in memory the child has mapped
 * there itself, which the kernel would then overwrite with the module's image.
 *
 * The parent: the main thread registers 8 modules of its own (packed and pooled), touches them
 * and fills its blocks with a pattern per module; then, round after round, it registers a batch
 * of 6 fresh pool modules and wakes 4 worker threads, which first-touch every one of them (and
 * have a short-lived thread each do it too) while it forks 4 children back to back. Each child opens
 * /dev/kstls and ADOPTs (ESTALE is allowed, counted and reported; any other errno fails), maps
 * buffers of its own (where a post-copy arena would be), then touches every module it knows of
 * (those of the two batches registered at the fork and the main thread's), from its main thread
 * and from 4 threads of its own alive at once (enough to take every block the parent's other
 * threads had off each free list): every answer must lie in a mapping of the child, outside its
 * own buffers and every other block, the main thread's blocks must keep its values, new blocks
 * must hold the module's image then zeroes, and its buffers their pattern.
 *
 * Children report through their exit status (0 adopted and checked, 1 ESTALE, 10 and up a
 * failed check, named on a "#" line by the first few). The parent prints the totals.
 * Tuning (environment): KSTLS_RACE_FORKS (4000), KSTLS_RACE_SECONDS (45, of forking),
 * KSTLS_RACE_VMAS (separate mappings added to the address space, so fork copies longer: 64).
 */
#include <limits.h>
#include <stdarg.h>
#include <linux/futex.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>

#include "kselftest_harness.h"
#include "kstls_test.h"

/* rust/pool.rs ARENA_MIN: the smallest arena a pool maps. */
#define ARENA (64 << 10)
/* A block that fills an arena alone: each first touch of a fresh module maps an arena. */
#define BIG_MEMSZ 40000
#define FILESZ 64
#define NR_OWN_PACKED 4
#define NR_OWN_POOL 4
#define NR_OWN (NR_OWN_PACKED + NR_OWN_POOL)
#define OWN_PACKED_MEMSZ 128
#define OWN_POOL_MEMSZ 8192
#define NR_BATCH 6
#define NR_WORKERS 4
#define CHILD_THREADS NR_WORKERS
#define NR_BUFS 8
#define MAX_LIVE 12
#define FORKS_PER_ROUND 4
#define NR_MSGS 12

struct module {
	_Atomic __u64 id;
	size_t memsz;
	unsigned char image[FILESZ];
};

static int fd;
static struct module own[NR_OWN];
static unsigned char *own_blocks[NR_OWN];
/* Round r registers batch[r & 1]; rounds r - 1 and r are registered when round r forks. */
static struct module batch[2][NR_BATCH];
static _Atomic unsigned int round_no;
static atomic_int stopping;
static atomic_int worker_errno;
static atomic_long worker_touches;
/* Shared with every child: how many failure messages have been printed. */
static atomic_int *msgs;

static void own_pattern(int m, unsigned char *buf, size_t len)
{
	for (size_t i = 0; i < len; i++)
		buf[i] = (unsigned char)(m * 37 + i * 11 + 0x55);
}

static int futex(_Atomic unsigned int *word, int op, unsigned int val)
{
	return syscall(SYS_futex, word, op, val, NULL, NULL, 0);
}

static void touch_batch(unsigned int r, int w)
{
	struct module *b = batch[r & 1];

	for (int k = 0; k < NR_BATCH; k++) {
		__u64 id = atomic_load(&b[(k + w) % NR_BATCH].id);
		int ret;

		if (!id)
			continue;
		ret = kstls_get(fd, id, 0, NULL);
		atomic_fetch_add(&worker_touches, 1);
		/* EINVAL: the main thread has unregistered the batch meanwhile. */
		if (ret && ret != -EINVAL)
			atomic_store(&worker_errno, -ret);
		if (atomic_load(&round_no) != r)
			return;
	}
}

struct helper {
	unsigned int r;
	int w;
};

static void *short_lived(void *arg)
{
	struct helper *h = arg;

	touch_batch(h->r, h->w + 1);
	return NULL;
}

/* A worker: on every new round, first-touches the fresh batch, and has a new thread do it. */
static void *worker(void *arg)
{
	int w = (int)(intptr_t)arg;
	unsigned int seen = 0;

	while (!atomic_load(&stopping)) {
		struct helper h;
		pthread_t t;
		unsigned int r;

		r = atomic_load(&round_no);
		if (r == seen) {
			futex(&round_no, FUTEX_WAIT_PRIVATE, seen);
			continue;
		}
		seen = r;
		h = (struct helper){ .r = r, .w = w };
		touch_batch(r, w);
		if (!pthread_create(&t, NULL, short_lived, &h))
			pthread_join(t, NULL);
	}
	return NULL;
}

/* -- The child's side ------------------------------------------------------------------------ */

static unsigned char *bufs[NR_BUFS];

struct range {
	uintptr_t start, end;
	int thread;
};

#define MAX_RANGES ((1 + CHILD_THREADS) * (NR_OWN + 2 * NR_BATCH))
static struct range ranges[MAX_RANGES];
static int nr_ranges;
static pthread_mutex_t ranges_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_barrier_t child_barrier;
static atomic_int child_fail;
static int child_fd;
static unsigned int child_round;
static const unsigned char zeroes[BIG_MEMSZ];

static void child_report(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void child_report(int code, const char *fmt, ...)
{
	char line[256];
	va_list ap;
	int n;

	if (atomic_fetch_add(msgs, 1) < NR_MSGS) {
		va_start(ap, fmt);
		n = vsnprintf(line, sizeof(line), fmt, ap);
		va_end(ap);
		dprintf(STDOUT_FILENO, "# child %d, round %u: check %d failed: %.*s\n", getpid(),
			child_round, code, n, line);
	}
	atomic_store(&child_fail, code);
}

static int in_own_buffer(uintptr_t start, uintptr_t end)
{
	for (int i = 0; i < NR_BUFS; i++) {
		uintptr_t b = (uintptr_t)bufs[i];

		if (start < b + ARENA && b < end)
			return i;
	}
	return -1;
}

/* Records [start, end) as thread @thread's block: 0, or the failure code when it overlaps. */
static int claim(uintptr_t start, uintptr_t end, int thread)
{
	int ret = 0;

	pthread_mutex_lock(&ranges_lock);
	for (int i = 0; i < nr_ranges; i++)
		if (start < ranges[i].end && ranges[i].start < end) {
			child_report(33, "block %#lx-%#lx (thread %d) overlaps %#lx-%#lx (thread %d)",
				     start, end, thread, ranges[i].start, ranges[i].end,
				     ranges[i].thread);
			ret = 33;
		}
	if (nr_ranges < MAX_RANGES)
		ranges[nr_ranges++] = (struct range){ start, end, thread };
	pthread_mutex_unlock(&ranges_lock);
	return ret;
}

/* One module, from thread @thread of the child (0: its first, the copy of the forker). */
static void child_touch(const struct module *m, int own_index, int thread)
{
	__u64 id = atomic_load(&m->id);
	uintptr_t start, end, page;
	unsigned char *p;
	int ret, b;

	if (!id)
		return;
	ret = kstls_get(child_fd, id, 0, (void **)&p);
	if (ret) {
		child_report(30, "GET_ADDR of module %#llx (thread %d): %s",
			     (unsigned long long)id, thread, strerror(-ret));
		return;
	}
	start = (uintptr_t)p;
	end = start + m->memsz;
	b = in_own_buffer(start, end);
	if (b >= 0) {
		child_report(31, "GET_ADDR of module %#llx (thread %d) answers %p, in the child's own buffer %p",
			     (unsigned long long)id, thread, p, bufs[b]);
		return;
	}
	page = start & ~4095UL;
	if (msync((void *)page, end - page, MS_ASYNC)) {
		child_report(34, "GET_ADDR of module %#llx (thread %d) answers %p, not mapped in the child",
			     (unsigned long long)id, thread, p);
		return;
	}
	if (claim(start, end, thread))
		return;
	if (own_index >= 0 && thread == 0) {
		unsigned char want[OWN_POOL_MEMSZ];

		own_pattern(own_index, want, m->memsz);
		if (p != own_blocks[own_index])
			child_report(20, "the forker's block of module %#llx is %p in the child, %p at the fork",
				     (unsigned long long)id, p, own_blocks[own_index]);
		else if (memcmp(p, want, m->memsz))
			child_report(21, "the forker's block of module %#llx lost its values", (unsigned long long)id);
		return;
	}
	if (memcmp(p, m->image, FILESZ) || memcmp(p + FILESZ, zeroes, m->memsz - FILESZ))
		child_report(32, "new block %p of module %#llx (thread %d) is not image then zeroes",
			     p, (unsigned long long)id, thread);
}

static void child_touch_all(int thread)
{
	for (int i = 0; i < NR_OWN; i++)
		child_touch(&own[i], i, thread);
	for (int s = 0; s < 2; s++)
		for (int k = 0; k < NR_BATCH; k++)
			child_touch(&batch[s][k], -1, thread);
}

static void *child_thread(void *arg)
{
	child_touch_all((int)(intptr_t)arg);
	/* Alive together: each takes its own block off every free list. */
	pthread_barrier_wait(&child_barrier);
	return NULL;
}

static int adopt(int child, int parent)
{
	struct kstls_adopt a = { .parent_fd = parent };

	return kstls_ioctl(child, KSTLS_IOC_ADOPT, &a);
}

static void child_main(unsigned int r)
{
	pthread_t t[CHILD_THREADS];
	int ret;

	child_round = r;
	child_fd = kstls_open();
	if (child_fd < 0) {
		child_report(10, "open: %s", strerror(errno));
		_exit(10);
	}
	ret = adopt(child_fd, fd);
	if (ret == -ESTALE)
		_exit(1);
	if (ret) {
		child_report(11, "ADOPT: %s", strerror(-ret));
		_exit(11);
	}
	/* Memory of the child's own, mapped first: it may land where a post-copy arena was. */
	for (int i = 0; i < NR_BUFS; i++) {
		bufs[i] = mmap(NULL, ARENA, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (bufs[i] == MAP_FAILED) {
			child_report(12, "mmap: %s", strerror(errno));
			_exit(12);
		}
		memset(bufs[i], 0xc0 + i, ARENA);
	}
	child_touch_all(0);
	pthread_barrier_init(&child_barrier, NULL, CHILD_THREADS);
	for (int i = 0; i < CHILD_THREADS; i++)
		if (pthread_create(&t[i], NULL, child_thread, (void *)(intptr_t)(i + 1))) {
			child_report(13, "pthread_create");
			_exit(13);
		}
	for (int i = 0; i < CHILD_THREADS; i++)
		pthread_join(t[i], NULL);
	for (int i = 0; i < NR_BUFS; i++)
		for (size_t j = 0; j < ARENA; j++)
			if (bufs[i][j] != (unsigned char)(0xc0 + i)) {
				child_report(40, "its own buffer %p was written at +%zu: %#x", bufs[i],
					     j, bufs[i][j]);
				break;
			}
	_exit(atomic_load(&child_fail));
}

/* -- The parent's side ----------------------------------------------------------------------- */

struct tally {
	long forks, adopted, estale, failed;
	long by_code[256];
};

static void count(struct tally *t, int status)
{
	int code;

	if (WIFSIGNALED(status))
		code = 128 + (WTERMSIG(status) & 127);
	else
		code = WEXITSTATUS(status);
	if (code == 0)
		t->adopted++;
	else if (code == 1)
		t->estale++;
	else
		t->failed++;
	t->by_code[code & 255]++;
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static long env_long(const char *name, long def)
{
	const char *v = getenv(name);

	return v ? atol(v) : def;
}

FIXTURE(race)
{
};

FIXTURE_SETUP(race)
{
}

FIXTURE_TEARDOWN(race)
{
}

TEST_F_TIMEOUT(race, adopt_is_exact_under_racing_first_touches, 300)
{
	long max_forks = env_long("KSTLS_RACE_FORKS", 4000);
	double seconds = env_long("KSTLS_RACE_SECONDS", 45);
	long nr_vmas = env_long("KSTLS_RACE_VMAS", 64);
	pthread_t workers[NR_WORKERS];
	struct tally t = { 0 };
	int live = 0, status, werr;
	double start, elapsed;
	unsigned int r;
	pid_t pid;

	msgs = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	ASSERT_NE(MAP_FAILED, msgs);
	/* Separate mappings (alternate protections keep them from merging): a longer copy. */
	for (long i = 0; i < nr_vmas; i++) {
		char *v = mmap(NULL, 4096, (i & 1) ? PROT_READ : PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);

		ASSERT_NE(MAP_FAILED, v);
	}
	fd = kstls_open();
	ASSERT_LE(0, fd) TH_LOG("open %s: %s", KSTLS_DEVICE_PATH, strerror(errno));
	for (int i = 0; i < NR_OWN; i++) {
		__u64 id;

		own[i].memsz = i < NR_OWN_PACKED ? OWN_PACKED_MEMSZ : OWN_POOL_MEMSZ;
		kstls_pattern(own[i].image, FILESZ, 100 + i);
		ASSERT_EQ(0, kstls_reg(fd, own[i].image, FILESZ, own[i].memsz, 16, 0, &id));
		atomic_store(&own[i].id, id);
		ASSERT_EQ(0, kstls_get(fd, id, 0, (void **)&own_blocks[i]));
		own_pattern(i, own_blocks[i], own[i].memsz);
	}
	for (int w = 0; w < NR_WORKERS; w++)
		ASSERT_EQ(0, pthread_create(&workers[w], NULL, worker, (void *)(intptr_t)w));
	fflush(stdout);
	start = now();
	for (r = 1; t.forks < max_forks && now() - start < seconds; r++) {
		struct module *b = batch[r & 1];

		/* Round r - 2's batch goes; a fresh one comes, which nobody has touched yet. */
		for (int k = 0; k < NR_BATCH; k++) {
			__u64 id = atomic_load(&b[k].id);

			if (id)
				ASSERT_EQ(0, kstls_unreg(fd, id));
			atomic_store(&b[k].id, 0);
			b[k].memsz = BIG_MEMSZ;
			kstls_pattern(b[k].image, FILESZ, r * NR_BATCH + k);
			ASSERT_EQ(0, kstls_reg(fd, b[k].image, FILESZ, BIG_MEMSZ, 16, 0, &id));
			atomic_store(&b[k].id, id);
		}
		atomic_store(&round_no, r);
		futex(&round_no, FUTEX_WAKE_PRIVATE, INT_MAX);
		/* Forks back to back while the workers are first-touching the batch. */
		for (int f = 0; f < FORKS_PER_ROUND && t.forks < max_forks; f++) {
			pid = fork();
			ASSERT_LE(0, pid);
			if (pid == 0)
				child_main(r);
			t.forks++;
			live++;
			while (live > 0 &&
			       waitpid(-1, &status, live >= MAX_LIVE ? 0 : WNOHANG) > 0) {
				count(&t, status);
				live--;
			}
		}
	}
	elapsed = now() - start;
	while (live > 0 && wait(&status) > 0) {
		count(&t, status);
		live--;
	}
	atomic_store(&stopping, 1);
	atomic_fetch_add(&round_no, 1);
	futex(&round_no, FUTEX_WAKE_PRIVATE, INT_MAX);
	for (int w = 0; w < NR_WORKERS; w++)
		pthread_join(workers[w], NULL);
	werr = atomic_load(&worker_errno);

	ksft_print_msg("forks: %ld in %.1f s (%u rounds, %ld first touches by other threads, %ld extra mappings)\n",
		       t.forks, elapsed, r - 1, atomic_load(&worker_touches), nr_vmas);
	ksft_print_msg("adopted: %ld\n", t.adopted);
	ksft_print_msg("ESTALE: %ld (%.2f%% of forks)\n", t.estale,
		       t.forks ? 100.0 * t.estale / t.forks : 0.0);
	ksft_print_msg("failures: %ld\n", t.failed);
	for (int c = 2; c < 256; c++)
		if (t.by_code[c])
			ksft_print_msg("  %ld children %s %d\n", t.by_code[c],
				       c >= 128 ? "killed by signal" : "failed check",
				       c >= 128 ? c - 128 : c);
	EXPECT_EQ(0, werr) TH_LOG("a worker's GET_ADDR failed: %s", strerror(werr));
	EXPECT_EQ(0, t.failed);
	EXPECT_LT(0, t.adopted);
	/* The main thread's own blocks are untouched by all of it. */
	for (int i = 0; i < NR_OWN; i++) {
		unsigned char want[OWN_POOL_MEMSZ];
		void *p = NULL;

		own_pattern(i, want, own[i].memsz);
		EXPECT_EQ(0, memcmp(own_blocks[i], want, own[i].memsz));
		EXPECT_EQ(0, kstls_get(fd, atomic_load(&own[i].id), 0, &p));
		EXPECT_EQ(own_blocks[i], p);
	}
	close(fd);
}

TEST_HARNESS_MAIN
