// SPDX-License-Identifier: GPL-2.0
/*
 * nolibc_test.c - scenario 3 of libkstls: a static program with no libc at all (the kernel
 * tree's tools/include/nolibc, -nostdlib) that links libkstls.a and uses the kstls C API, with
 * threads made by raw clone(). Each thread gets a thread control block whose first word points
 * to itself (the x86-64 psABI self-pointer, CLONE_SETTLS), as the library's fast path expects.
 *
 * It is also a loader that fills TLS descriptors itself: descriptors { kstls_tlsdesc, &tls_index }
 * called with every register holding a pattern (clobber_call, clobber.h) on a thread's first
 * touch, on a hit, on a miss (strict mode) and on a hit found by probing (threads sharing a home
 * slot), which must return the right offset and leave every other register as it was.
 *
 * The kselftest harness needs a libc, so this prints TAP itself.
 */
#include <linux/futex.h>
#include <linux/sched.h>

#include <kstls.h>

#include "clobber.h"

#define NTHREADS 8
#define STACK_SIZE (64 * 1024)
#define ARCH_SET_FS 0x1002

/* __tls_get_addr is the library's too: call it the way compiled TLS code does. */
void *__tls_get_addr(struct kstls_tls_index *ti);

struct tcb {
	struct tcb *self;
	unsigned long pad[7];
};

/* Module A: 40 bytes of .tdata, 88 of .tbss, aligned to 64. Module B: misaligned, p_vaddr %
 * p_align == 8 with an alignment of 32. */
static const char image_a[40] = "nolibc module A, .tdata initial image";
static const char image_b[8] = "B-image";
static uint64_t id_a, id_b;

static struct tcb tcbs[NTHREADS + 1];
static char stacks[NTHREADS][STACK_SIZE] __attribute__((aligned(16)));
static volatile int child_tid[NTHREADS];
static volatile int arrived;

struct job {
	int idx;
	int result;
	char *a;
	char *b;
};
static struct job jobs[NTHREADS];

static int tests_run, tests_failed, tests_skipped;

static void tap(int ok, const char *what)
{
	tests_run++;
	if (!ok)
		tests_failed++;
	printf("%sok %d %s\n", ok ? "" : "not ", tests_run, what);
}

static long raw_syscall6(long nr, long a, long b, long c, long d, long e, long f);

static void skip(const char *why)
{
	tests_run++;
	tests_skipped++;
	printf("ok %d # SKIP %s\n", tests_run, why);
}

/* Whether madvise(MADV_WIPEONFORK) works here (the library needs it for its fast path). */
static int wipeonfork_available(void)
{
	void *page = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	long r;

	if (page == MAP_FAILED)
		return 0;
	r = raw_syscall6(28 /* madvise */, (long)page, 4096, 18 /* MADV_WIPEONFORK */, 0, 0, 0);
	munmap(page, 4096);
	return r == 0;
}

static long raw_syscall6(long nr, long a, long b, long c, long d, long e, long f)
{
	register long r10 __asm__("r10") = d;
	register long r8 __asm__("r8") = e;
	register long r9 __asm__("r9") = f;
	long ret;

	__asm__ volatile("syscall"
			 : "=a"(ret)
			 : "a"(nr), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
			 : "rcx", "r11", "memory");
	return ret;
}

/*
 * clone() a thread running fn(arg) on @stack_top with @tls as its FS base. The child never
 * returns into C code of the parent's frame: it pops its function and argument from its own
 * stack and exits with SYS_exit.
 */
static long spawn(int (*fn)(void *), void *arg, char *stack_top, void *tls, volatile int *ctid)
{
	unsigned long flags = CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND | CLONE_THREAD |
			      CLONE_SYSVSEM | CLONE_SETTLS | CLONE_PARENT_SETTID |
			      CLONE_CHILD_CLEARTID;
	void **sp = (void **)stack_top;
	register long r10 __asm__("r10") = (long)ctid;
	register long r8 __asm__("r8") = (long)tls;
	long ret;

	*--sp = arg;
	*--sp = (void *)fn;
	__asm__ volatile("syscall\n\t"
			 "test %%rax, %%rax\n\t"
			 "jnz 1f\n\t"
			 "xor %%ebp, %%ebp\n\t"
			 "pop %%rax\n\t"
			 "pop %%rdi\n\t"
			 "and $-16, %%rsp\n\t"
			 "call *%%rax\n\t"
			 "mov %%eax, %%edi\n\t"
			 "mov $60, %%eax\n\t"
			 "syscall\n\t"
			 "hlt\n"
			 "1:"
			 : "=a"(ret)
			 : "a"(56L), "D"(flags), "S"(sp), "d"(ctid), "r"(r10), "r"(r8)
			 : "rcx", "r11", "memory");
	return ret;
}

static int vec_level;

/*
 * A TLS descriptor call for (@module, @offset) through a descriptor filled by hand, with every
 * register holding a pattern: 0 when it returned the address @expect (or, @expect NULL, any
 * address, given in *@got) and kept every other register.
 */
static int desc_call(uint64_t module, uint64_t offset, char *expect, char **got)
{
	static const struct clobber_regs zero_regs;
	struct kstls_tls_index ti = { .module = module, .offset = offset };
	void *desc[2] = { (void *)kstls_tlsdesc, &ti };
	struct clobber_regs in = zero_regs, out = zero_regs;
	unsigned long tp;
	int which;

	clobber_fill(&in, (unsigned int)offset + 3);
	clobber_call(&in, &out, vec_level, desc);
	__asm__ volatile("mov %%fs:0, %0" : "=r"(tp));
	if (got)
		*got = (char *)(tp + out.gpr[0]);
	if (clobber_compare(&in, &out, vec_level, &which))
		return 1;
	return expect && (char *)(tp + out.gpr[0]) != expect ? 2 : 0;
}

static int all_zero(const char *p, int n)
{
	for (int i = 0; i < n; i++)
		if (p[i])
			return 0;
	return 1;
}

static int thread_main(void *arg)
{
	struct job *j = arg;
	struct kstls_tls_index ti = { .module = id_a, .offset = 0 };
	char *first;
	/* The thread's first touch of module A: through a descriptor, the resolver's slow path. */
	int bad = desc_call(id_a, 5, NULL, &first);
	char *a = kstls_get_tls_addr(id_a, 0);
	char *a2 = __tls_get_addr(&ti);
	char *b = kstls_get_tls_addr(id_b, 0);

	j->a = a;
	j->b = b;
	if (bad || first != a + 5)
		return j->result = 7;
	if (!a || a != a2 || !b)
		return j->result = 1;
	if (memcmp(a, image_a, sizeof(image_a)) || !all_zero(a + 40, 88))
		return j->result = 2;
	if (memcmp(b, image_b, sizeof(image_b)) || !all_zero(b + 8, 8))
		return j->result = 3;
	if ((uintptr_t)a % 64 || (uintptr_t)b % 32 != 8)
		return j->result = 4;
	memset(a, 'a' + j->idx, 128);
	memset(b, 'A' + j->idx, 16);
	__atomic_add_fetch(&arrived, 1, __ATOMIC_SEQ_CST);
	while (__atomic_load_n(&arrived, __ATOMIC_SEQ_CST) < NTHREADS)
		raw_syscall6(24 /* sched_yield */, 0, 0, 0, 0, 0, 0);
	/* Everyone wrote: each still sees its own, through both entry points. */
	ti.offset = 127;
	if (*(char *)__tls_get_addr(&ti) != 'a' + j->idx || kstls_get_tls_addr(id_b, 15) != b + 15)
		return j->result = 5;
	for (int i = 0; i < 128; i++)
		if (a[i] != 'a' + j->idx)
			return j->result = 6;
	return j->result = 0;
}

static int stats(uint64_t module, struct kstls_stats *st)
{
	memset(st, 0, sizeof(*st));
	st->module = module;
	return ioctl(kstls_fd(), KSTLS_IOC_STATS, st);
}

/*
 * Threads whose thread pointers share one home slot of the cache: the kernel places them in
 * the following slots, and the assembly __tls_get_addr must find them by probing. Their TCBs
 * are picked from a pool by the hash of uapi/linux/kstls.h.
 */
#define NCOLLIDE 4
/* Four candidate TCBs per slot on average: some slot has NCOLLIDE. */
static char tcb_pool[64 << KSTLS_CACHE_SLOTS_LOG2 << 2] __attribute__((aligned(64)));
static unsigned short pool_count[1 << KSTLS_CACHE_SLOTS_LOG2];
static struct tcb *colliding[NCOLLIDE];
static char *collide_addr[NCOLLIDE];
static volatile int collide_ready, collide_go;
static int collide_bad;

static unsigned int home_slot(const void *tp)
{
	return (unsigned int)(((uint64_t)(uintptr_t)tp * KSTLS_CACHE_HASH_MUL) >>
			      (64 - KSTLS_CACHE_SLOTS_LOG2));
}

/* NCOLLIDE TCB addresses in tcb_pool with the same home slot; 0 or -1. */
static int pick_colliding_tcbs(void)
{
	unsigned int best = 0, n = 0;

	for (size_t off = 0; off < sizeof(tcb_pool); off += 64)
		pool_count[home_slot(tcb_pool + off)]++;
	for (unsigned int h = 0; h < (1 << KSTLS_CACHE_SLOTS_LOG2); h++)
		if (pool_count[h] > pool_count[best])
			best = h;
	if (pool_count[best] < NCOLLIDE)
		return -1;
	for (size_t off = 0; off < sizeof(tcb_pool) && n < NCOLLIDE; off += 64)
		if (home_slot(tcb_pool + off) == best)
			colliding[n++] = (struct tcb *)(tcb_pool + off);
	return 0;
}

static int collide_main(void *arg)
{
	long i = (long)arg;
	struct kstls_tls_index ti = { .module = id_a, .offset = 0 };
	char *a = __tls_get_addr(&ti);

	collide_addr[i] = a;
	__atomic_add_fetch(&collide_ready, 1, __ATOMIC_SEQ_CST);
	/* All are cached (each has its slot) before anyone measures. */
	while (!__atomic_load_n(&collide_go, __ATOMIC_SEQ_CST))
		raw_syscall6(24 /* sched_yield */, 0, 0, 0, 0, 0, 0);
	for (int k = 0; k < 1000; k++) {
		ti.offset = (uint64_t)(k % 128);
		if ((char *)__tls_get_addr(&ti) != a + k % 128)
			__atomic_add_fetch(&collide_bad, 1, __ATOMIC_SEQ_CST);
	}
	/* The resolver too: all but one of these threads are found past their home slot. */
	if (desc_call(id_a, 9, a + 9, NULL))
		__atomic_add_fetch(&collide_bad, 1, __ATOMIC_SEQ_CST);
	return 0;
}

/* 0 when NCOLLIDE threads sharing a home slot each got their own block from the cache. */
static int colliding_threads(unsigned long long *lookups)
{
	struct kstls_stats st0, st1;
	int ok = 1;

	for (long i = 0; i < NCOLLIDE; i++) {
		colliding[i]->self = colliding[i];
		if (spawn(collide_main, (void *)i, stacks[i] + STACK_SIZE, colliding[i],
			  &child_tid[i]) <= 0)
			return -1;
	}
	while (__atomic_load_n(&collide_ready, __ATOMIC_SEQ_CST) < NCOLLIDE)
		raw_syscall6(24 /* sched_yield */, 0, 0, 0, 0, 0, 0);
	stats(id_a, &st0);
	__atomic_store_n(&collide_go, 1, __ATOMIC_SEQ_CST);
	for (int i = 0; i < NCOLLIDE; i++) {
		int t;

		while ((t = child_tid[i]) != 0)
			raw_syscall6(202 /* futex */, (long)&child_tid[i], FUTEX_WAIT, t, 0, 0, 0);
	}
	stats(id_a, &st1);
	*lookups = st1.lookups - st0.lookups;
	for (int i = 0; i < NCOLLIDE; i++)
		for (int k = 0; k < i; k++)
			if (!collide_addr[i] || collide_addr[i] == collide_addr[k])
				ok = 0;
	return ok && !collide_bad ? 0 : -1;
}

int main(void)
{
	struct kstls_image a = { image_a, sizeof(image_a), 128, 64, 0 };
	struct kstls_image b = { image_b, sizeof(image_b), 16, 32, 8 };
	struct kstls_stats st_a, st_b;
	struct kstls_info info;
	char msg[160];
	int ok;

	printf("TAP version 13\n1..14\n");
	printf("# TLS dialect of this build: %s (a static program: its own accesses are local-exec)\n",
	       TLS_DIALECT);
	vec_level = clobber_level();
	/* The main thread's thread pointer, as a libc would have set it up. */
	tcbs[NTHREADS].self = &tcbs[NTHREADS];
	raw_syscall6(158 /* arch_prctl */, ARCH_SET_FS, (long)&tcbs[NTHREADS], 0, 0, 0, 0);

	tap(kstls_init() == 0, "kstls_init opens /dev/kstls without libc");
	tap(kstls_register(&a, &id_a) == 0 && kstls_register(&b, &id_b) == 0 &&
	    id_a >= KSTLS_MODULE_ID_MIN && id_b >= KSTLS_MODULE_ID_MIN && id_a != id_b,
	    "kstls_register: two modules, ids >= KSTLS_MODULE_ID_MIN");

	for (int i = 0; i < NTHREADS; i++) {
		jobs[i].idx = i;
		jobs[i].result = -1;
		tcbs[i].self = &tcbs[i];
		if (spawn(thread_main, &jobs[i], stacks[i] + STACK_SIZE, &tcbs[i], &child_tid[i]) <= 0)
			jobs[i].result = -2;
	}
	for (int i = 0; i < NTHREADS; i++) {
		int t;

		/* CLONE_CHILD_CLEARTID: the kernel zeroes child_tid and wakes us at exit. */
		while ((t = child_tid[i]) != 0)
			raw_syscall6(202 /* futex */, (long)&child_tid[i], FUTEX_WAIT, t, 0, 0, 0);
	}
	ok = 1;
	for (int i = 0; i < NTHREADS; i++) {
		if (jobs[i].result) {
			printf("# thread %d failed with %d\n", i, jobs[i].result);
			ok = 0;
		}
		for (int k = 0; k < i; k++)
			if (jobs[k].a == jobs[i].a || jobs[k].b == jobs[i].b)
				ok = 0;
	}
	tap(ok, "8 raw clone() threads: .tdata initialised, .tbss zero, own values, alignment 64 and 8 mod 32; "
	    "first touch through kstls_tlsdesc, every register kept");

	ok = !stats(id_a, &st_a) && !stats(id_b, &st_b);
	snprintf(msg, sizeof(msg), "# module A: %llu lookups %llu allocs; B: %llu lookups %llu allocs\n",
		 (unsigned long long)st_a.lookups, (unsigned long long)st_a.allocs,
		 (unsigned long long)st_b.lookups, (unsigned long long)st_b.allocs);
	printf("%s", msg);
	tap(ok && st_a.allocs == NTHREADS && st_b.allocs == NTHREADS &&
	    st_a.lookups >= NTHREADS && st_b.lookups >= NTHREADS,
	    "KSTLS_IOC_STATS: the kernel allocated one block per thread and module");

	/* The main thread: fresh values, then many accesses. */
	char *m = kstls_get_tls_addr(id_a, 0);

	tap(m && !memcmp(m, image_a, sizeof(image_a)) && all_zero(m + 40, 88),
	    "main thread: its own fresh block");

	ok = !ioctl(kstls_fd(), KSTLS_IOC_INFO, &info) && info.nr_modules == 2;
	tap(ok, "KSTLS_IOC_INFO: two modules registered");
	stats(id_a, &st_a);
	for (int i = 0; i < 1000; i++)
		if (kstls_get_tls_addr(id_a, i % 128) != m + i % 128)
			ok = 0;
	stats(id_a, &st_b);
	printf("# 1000 accesses cost %llu kernel lookups (cache %s, %u bytes)\n",
	       (unsigned long long)(st_b.lookups - st_a.lookups),
	       info.features & KSTLS_FEAT_CACHE ? "offered" : "not offered", info.cache_size);
	tap(ok, "1000 accesses from the main thread: the same address every time");
	if (!(info.features & KSTLS_FEAT_CACHE) || !info.cache_size)
		tap(st_b.lookups - st_a.lookups == 1000, "no cache offered: every access is a kernel lookup");
	else if (!wipeonfork_available())
		skip("fast path: the kernel has no madvise (CONFIG_ADVISE_SYSCALLS), so no "
		     "MADV_WIPEONFORK: libkstls keeps the cache off (a forked child could not tell it "
		     "is not its own)");
	else
		tap(st_b.lookups - st_a.lookups < 10,
		    "fast path: repeated accesses hit the cache, not the kernel");

	/*
	 * An offset past memsz is refused by the kernel (errors_test), but a cache hit, like
	 * glibc's __tls_get_addr, does not bound-check the offset: only ids are checked here.
	 */
	tap(kstls_get_tls_addr(id_a + 77, 0) == NULL && kstls_get_tls_addr(5, 0) == NULL,
	    "kstls_get_tls_addr: NULL for an unknown id and a host id");

	/* The main thread's block of A through a descriptor: a hit, then a miss in strict mode. */
	stats(id_a, &st_a);
	ok = !desc_call(id_a, 17, m + 17, NULL);
	stats(id_a, &st_b);
	printf("# TLS descriptor calls keep 15 GPRs, %s and MXCSR\n", clobber_level_name(vec_level));
	tap(ok && (st_b.lookups == st_a.lookups || !(info.features & KSTLS_FEAT_CACHE) ||
		   !wipeonfork_available()),
	    "kstls_tlsdesc, hit: the offset from %fs:0, every other register kept");
	{
		struct kstls_mode strict = { .mode = KSTLS_MODE_STRICT }, normal = { .mode = 0 };

		ok = !ioctl(kstls_fd(), KSTLS_IOC_SET_MODE, &strict);
		stats(id_a, &st_a);
		ok = ok && !desc_call(id_a, 33, m + 33, NULL);
		stats(id_a, &st_b);
		ok = ok && !ioctl(kstls_fd(), KSTLS_IOC_SET_MODE, &normal);
		tap(ok && st_b.lookups == st_a.lookups + 1 && st_b.allocs == st_a.allocs,
		    "kstls_tlsdesc, miss (strict mode): the kernel answers, every register kept");
	}

	if (!(info.features & KSTLS_FEAT_CACHE) || !info.cache_size || !wipeonfork_available()) {
		skip("colliding thread pointers: no fast path here (see above)");
	} else {
		unsigned long long lookups = ~0ULL;

		ok = !pick_colliding_tcbs() && !colliding_threads(&lookups);
		printf("# %d threads sharing home slot %u: 4000 accesses through __tls_get_addr cost %llu kernel lookups\n",
		       NCOLLIDE, colliding[0] ? home_slot(colliding[0]) : 0, lookups);
		tap(ok && lookups < 40,
		    "threads whose thread pointers share a home slot: found by probing, own blocks, "
		    "also by kstls_tlsdesc with every register kept");
	}

	ok = kstls_unregister(id_b) == 0 && !ioctl(kstls_fd(), KSTLS_IOC_INFO, &info) &&
	     info.nr_modules == 1 && kstls_get_tls_addr(id_b, 0) == NULL;
	tap(ok, "kstls_unregister: module B gone, INFO shows one module");

	int fd = kstls_fd();

	ok = kstls_unregister(id_a) == 0 && raw_syscall6(72 /* fcntl */, fd, 1 /* F_GETFD */, 0, 0, 0, 0) == -9;
	tap(ok, "the last kstls_unregister closes the context");
	printf("# Totals: pass:%d fail:%d xfail:0 xpass:0 skip:%d error:0\n",
	       tests_run - tests_failed - tests_skipped, tests_failed, tests_skipped);
	return tests_failed ? 1 : 0;
}
