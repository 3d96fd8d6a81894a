// SPDX-License-Identifier: GPL-2.0
/*
 * lifecycle_test.c - scenario 6 of libkstls, in a glibc program linked with -lkstls (the shared
 * library) whose test objects are linked with -lkstls too, so they all share one context:
 * TLS alignments 16, 64 and 4096 (block addresses congruent to p_vaddr modulo p_align, with an
 * image misaligned on purpose through kstls_register), dlclose then dlopen again giving fresh
 * values and leaving nothing behind (INFO back to where it was), the first access of a process
 * or thread inside a signal handler, access after fork in the child (the forking thread's
 * values, the parent unaffected), threads on a dead thread's thread pointer answered by the
 * kernel first and then by libkstls's fast path, a module id of the host forwarded to glibc's own
 * __tls_get_addr, a forged kstls id ending the process loudly instead of returning garbage, and
 * a module registered after it was used: the registering thread's earlier writes carry over,
 * another thread's do not (it starts from the image), and a first access from a signal handler
 * on an alternate stack of SIGSTKSZ bytes above a guard page (in the gnu2 build the TLS
 * descriptor resolver's slow path, which saves extended state on that stack). Built for both
 * TLS dialects.
 */
#include <cpuid.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/wait.h>

#include "kselftest_harness.h"
#include "lib_test.h"
#include "tlsobj.h"

void *__tls_get_addr(struct kstls_tls_index *ti);

/* The program's own TLS variable that libhostvar.so refers to (exported with -rdynamic). */
__thread unsigned long tlsobj_host_var = 0x600dUL;

/*
 * The program keeps one module of its own registered, so the context outlives the test
 * objects (the library closes it when the last module goes) and INFO compares like with like.
 */
static uint64_t own_module;
static const char own_image[16] = "program module";

static int keep_context(void)
{
	struct kstls_image img = { own_image, sizeof(own_image), 64, 16, 0 };

	return own_module ? 0 : kstls_register(&img, &own_module);
}

FIXTURE(align)
{
	void *h;
};

FIXTURE_VARIANT(align)
{
	const char *lib;
	unsigned long align;
};

FIXTURE_VARIANT_ADD(align, a16) { "libalign16.so", 16 };
FIXTURE_VARIANT_ADD(align, a64) { "libalign64.so", 64 };
FIXTURE_VARIANT_ADD(align, a4096) { "libalign4096.so", 4096 };

FIXTURE_SETUP(align)
{
	ASSERT_EQ(0, keep_context());
	self->h = dlopen(tls_lib_path(variant->lib), RTLD_NOW | RTLD_LOCAL);
	ASSERT_NE(NULL, self->h) TH_LOG("dlopen: %s", dlerror());
}

FIXTURE_TEARDOWN(align)
{
	if (self->h)
		dlclose(self->h);
}

/* 8 threads, the aligned variable (the last of tlsobj_addr's) aligned as asked. */
TEST_F(align, threads_see_aligned_fresh_blocks)
{
	char why[200] = "";

	ASSERT_EQ(0, tls_check_module(self->h, "tlsobj_", 5, variant->align, why, sizeof(why)))
		TH_LOG("%s", why);
	ksft_print_msg("align %lu: %s\n", variant->align, why);
}

struct mis_job {
	uint64_t id;
	uintptr_t addr;
	int ok;
};

static void *mis_thread(void *arg)
{
	struct mis_job *j = arg;
	char *p = kstls_get_tls_addr(j->id, 0);

	j->addr = (uintptr_t)p;
	j->ok = p && !memcmp(p, "misaligned!", 12) && !p[40];
	return NULL;
}

/* p_vaddr % p_align != 0: GNU ld always aligns PT_TLS, so the image is described by hand. */
TEST(misaligned_image_congruent_blocks)
{
	static const char image[12] __attribute__((aligned(64))) = "misaligned!";
	struct kstls_image img = { image, sizeof(image), 48, 64, 24 };
	struct mis_job jobs[NTHREADS];
	pthread_t t[NTHREADS];
	uint64_t id;

	ASSERT_EQ(0, keep_context());
	ASSERT_EQ(0, kstls_register(&img, &id));
	for (int i = 0; i < NTHREADS; i++) {
		jobs[i] = (struct mis_job){ .id = id };
		ASSERT_EQ(0, pthread_create(&t[i], NULL, mis_thread, &jobs[i]));
	}
	for (int i = 0; i < NTHREADS; i++) {
		pthread_join(t[i], NULL);
		EXPECT_TRUE(jobs[i].ok);
		EXPECT_EQ(24, jobs[i].addr % 64) TH_LOG("thread %d: %#lx", i, (unsigned long)jobs[i].addr);
	}
	ASSERT_EQ(0, kstls_unregister(id));
}

/* dlclose, then dlopen again: fresh values, the module count and memory back where they were. */
TEST(dlclose_dlopen_fresh_no_leak)
{
	struct kstls_info base, info;
	struct tls_ops ops = { .naddr = 5 };
	void *h;

	ASSERT_EQ(0, keep_context());
	ASSERT_EQ(0, tls_info(kstls_fd(), &base));
	for (int round = 0; round < 20; round++) {
		char why[200] = "";

		h = dlopen(tls_lib_path("libalign64.so"), RTLD_NOW | RTLD_LOCAL);
		ASSERT_NE(NULL, h) TH_LOG("dlopen: %s", dlerror());
		ASSERT_EQ(0, tls_ops_dlsym(h, "tlsobj_", &ops));
		ASSERT_EQ(0, tls_info(kstls_fd(), &info));
		ASSERT_EQ(base.nr_modules + 1, info.nr_modules);
		ASSERT_EQ(0, ops.check_fresh()) TH_LOG("round %d: stale values after dlopen", round);
		ops.set(round + 100);
		ASSERT_EQ(0, ops.check(round + 100));
		if (round == 0)
			ASSERT_EQ(0, tls_run_threads(&ops, why, sizeof(why))) TH_LOG("%s", why);
		ASSERT_EQ(0, dlclose(h));
		ASSERT_EQ(0, tls_info(kstls_fd(), &info));
		ASSERT_EQ(base.nr_modules, info.nr_modules) TH_LOG("round %d", round);
	}
	EXPECT_EQ(base.image_bytes, info.image_bytes);
	EXPECT_EQ(base.block_bytes, info.block_bytes);
	ksft_print_msg("20 dlopen/dlclose rounds: %u modules, %llu block bytes, %llu image bytes, as before\n",
		       info.nr_modules, (unsigned long long)info.block_bytes,
		       (unsigned long long)info.image_bytes);
}

struct reuse_job {
	struct kstls_tls_index ti;
	unsigned long tp;
	unsigned long long first, second;	/* GET_ADDR calls the 1st and 2nd access made */
	int fresh, same;
};

static unsigned long long lookups_now(void)
{
	struct kstls_stats st;

	/* The totals: a module's own counters lose an exited thread's share. */
	return tls_stats(kstls_fd(), 0, &st) ? ~0ULL : st.lookups;
}

static void *reuse_thread(void *arg)
{
	struct reuse_job *j = arg;
	unsigned long long l0, l1;
	char *p, *q;

	__asm__ volatile("mov %%fs:0, %0" : "=r"(j->tp));
	l0 = lookups_now();
	p = __tls_get_addr(&j->ti);
	l1 = lookups_now();
	j->fresh = !memcmp(p, own_image, sizeof(own_image));
	/* A mark that a later thread answered with this block would see. */
	memset(p, 'x', sizeof(own_image));
	q = __tls_get_addr(&j->ti);
	j->first = l1 - l0;
	j->second = lookups_now() - l1;
	j->same = p == q;
	return NULL;
}

/*
 * libkstls's own assembly fast path (the other cache tests use the C reference lookup): threads
 * started one after another, most on a dead one's stack and thread pointer, each get their first
 * access from the kernel (never from the dead thread's cache entry) and a fresh block, and their
 * second from the cache.
 */
TEST(reused_thread_pointer_reaches_the_kernel_first)
{
	struct kstls_info info;
	unsigned long first_tp = 0;
	int reuses = 0;

	ASSERT_EQ(0, keep_context());
	ASSERT_EQ(0, tls_info(kstls_fd(), &info));
	ASSERT_EQ(0, info.mode) TH_LOG("strict mode: there is no cache to test");
	for (int i = 0; i < 200; i++) {
		struct reuse_job j = { .ti = { own_module, 0 } };
		pthread_t t;

		ASSERT_EQ(0, pthread_create(&t, NULL, reuse_thread, &j));
		ASSERT_EQ(0, pthread_join(t, NULL));
		ASSERT_EQ(1, j.first) TH_LOG("thread %d: first access not from the kernel", i);
		ASSERT_TRUE(j.fresh) TH_LOG("thread %d: a used block", i);
		ASSERT_EQ(0, j.second) TH_LOG("thread %d: second access not from the cache", i);
		ASSERT_TRUE(j.same);
		if (!first_tp)
			first_tp = j.tp;
		else
			reuses += j.tp == first_tp;
	}
	ksft_print_msg("%d of 199 threads reused the first thread's thread pointer\n", reuses);
	ASSERT_LT(0, reuses);
}

static struct tls_ops sig_ops = { .naddr = 4 };
static volatile int sig_result = -1;

static void on_signal(int sig)
{
	(void)sig;
	int r = sig_ops.check_fresh();

	if (!r) {
		sig_ops.set(31337);
		r = sig_ops.check(31337) ? 10 : 0;
	}
	sig_result = r;
}

static void *signalled_thread(void *arg)
{
	(void)arg;
	sig_result = -1;
	raise(SIGUSR1);
	return NULL;
}

/*
 * The first TLS access of a process (a forked child: the inherited context must be adopted) and
 * of a thread (its block allocated) both happen inside a signal handler.
 */
TEST(first_access_in_signal_handler)
{
	int status;
	pid_t pid;
	void *h = dlopen(tls_lib_path("libtlsobj_dl.so"), RTLD_NOW | RTLD_LOCAL);

	ASSERT_NE(NULL, h) TH_LOG("dlopen: %s", dlerror());
	ASSERT_EQ(0, tls_ops_dlsym(h, "tlsobj_", &sig_ops));
	ASSERT_EQ(SIG_ERR != signal(SIGUSR1, on_signal), 1);
	pid = fork();
	ASSERT_LE(0, pid);
	if (pid == 0) {
		pthread_t t;

		raise(SIGUSR1);
		if (sig_result)
			_exit(1 + sig_result);
		if (sig_ops.check(31337))
			_exit(20);
		if (pthread_create(&t, NULL, signalled_thread, NULL) || pthread_join(t, NULL))
			_exit(30);
		_exit(sig_result ? 40 + sig_result : 0);
	}
	ASSERT_EQ(pid, waitpid(pid, &status, 0));
	ASSERT_TRUE(WIFEXITED(status)) TH_LOG("status %#x", status);
	ASSERT_EQ(0, WEXITSTATUS(status));
	dlclose(h);
}

/* SIGSTKSZ as <signal.h> defined it before glibc made it sysconf(_SC_SIGSTKSZ) (with
 * _GNU_SOURCE), and as musl defines it: what programs have long given sigaltstack. */
#define CLASSIC_SIGSTKSZ 8192

static struct tls_ops alt_ops = { .naddr = 4 };
static volatile int alt_result = -1;
static char *volatile alt_lo, *volatile alt_hi;	/* the alternate stack */

static void on_alt_signal(int sig)
{
	char here;
	int r;

	(void)sig;
	if (&here < alt_lo || &here >= alt_hi) {
		alt_result = 20;	/* not on the alternate stack: nothing tested */
		return;
	}
	r = alt_ops.check_fresh();
	if (!r) {
		alt_ops.set(2718);
		r = alt_ops.check(2718) ? 10 : 0;
	}
	alt_result = r;
}

/* The PROT_NONE guard below the alternate stack: larger than any XSAVE area (11008 bytes with
 * AMX), so that an area that does not fit faults instead of landing in the mapping below. */
#define ALT_GUARD (16 << 10)

/* A thread whose first access of the object is in a handler on a CLASSIC_SIGSTKSZ alternate
 * stack with ALT_GUARD PROT_NONE bytes below it: an overflow is a SIGSEGV, not a silent
 * overwrite. */
static void *alt_thread(void *arg)
{
	char *m = mmap(NULL, ALT_GUARD + CLASSIC_SIGSTKSZ, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	stack_t ss;

	(void)arg;
	if (m == MAP_FAILED || mprotect(m, ALT_GUARD, PROT_NONE))
		return (void *)1;
	alt_lo = m + ALT_GUARD;
	alt_hi = alt_lo + CLASSIC_SIGSTKSZ;
	ss = (stack_t){ .ss_sp = alt_lo, .ss_size = CLASSIC_SIGSTKSZ };
	if (sigaltstack(&ss, NULL))
		return (void *)2;
	raise(SIGUSR2);
	ss = (stack_t){ .ss_flags = SS_DISABLE };
	sigaltstack(&ss, NULL);
	if (alt_result)
		return (void *)(long)(10 + alt_result);
	/* The thread's own code sees what the handler wrote. */
	return alt_ops.check(2718) ? (void *)3 : NULL;
}

/* The XSAVE area sizes CPUID gives for XCR0 & @mask (standard format): 0 without OSXSAVE. */
static unsigned int xsave_bytes(unsigned long long mask, unsigned long long *xcr0)
{
	unsigned int a, b, c, d, lo, hi, size = 576;

	__cpuid(1, a, b, c, d);
	if (!(c & (1u << 27)))
		return *xcr0 = 0, 0;
	__asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
	*xcr0 = (unsigned long long)hi << 32 | lo;
	mask &= *xcr0;
	for (unsigned int i = 2; i < 64; i++) {
		if (!(mask & (1ULL << i)))
			continue;
		__cpuid_count(0xd, i, a, b, c, d);
		if (a + b > size)
			size = a + b;
	}
	return size;
}

/*
 * A thread's first TLS access (and, in this forked child, the process's first: the adoption)
 * from a signal handler on a CLASSIC_SIGSTKSZ alternate stack: the value is right and the guard
 * below the stack untouched. In the gnu2 build that is the TLS descriptor resolver's slow
 * path, which saves the extended state its own code can change on that stack: x87 and SSE, 576
 * bytes, where all of XCR0 is over 11 KiB on a CPU with AMX.
 */
TEST(first_access_on_a_sigstksz_altstack)
{
	unsigned long long xcr0;
	unsigned int all = xsave_bytes(~0ULL, &xcr0), sse = xsave_bytes(3, &xcr0);
	struct sigaction sa = { .sa_handler = on_alt_signal, .sa_flags = SA_ONSTACK };
	int status;
	pid_t pid;
	void *h = dlopen(tls_lib_path("libtlsobj_dl.so"), RTLD_NOW | RTLD_LOCAL);

	ksft_print_msg("%s: XCR0 %#llx: XSAVE area for all of it %u bytes, for x87+SSE (the slow path's) %u; alternate stack %d bytes, sysconf(_SC_SIGSTKSZ) %ld\n",
		       TLS_DIALECT, xcr0, all, sse, CLASSIC_SIGSTKSZ, sysconf(_SC_SIGSTKSZ));
	ASSERT_NE(NULL, h) TH_LOG("dlopen: %s", dlerror());
	ASSERT_EQ(0, tls_ops_dlsym(h, "tlsobj_", &alt_ops));
	ASSERT_EQ(0, sigaction(SIGUSR2, &sa, NULL));
	pid = fork();
	ASSERT_LE(0, pid);
	if (pid == 0) {
		pthread_t t;
		void *r;

		if (pthread_create(&t, NULL, alt_thread, NULL) || pthread_join(t, &r))
			_exit(99);
		_exit((int)(long)r);
	}
	ASSERT_EQ(pid, waitpid(pid, &status, 0));
	ASSERT_FALSE(WIFSIGNALED(status) && WTERMSIG(status) == SIGSEGV)
		TH_LOG("SIGSEGV: the handler's first access overflowed the %d-byte alternate stack",
		       CLASSIC_SIGSTKSZ);
	ASSERT_TRUE(WIFEXITED(status)) TH_LOG("status %#x", status);
	ASSERT_EQ(0, WEXITSTATUS(status));
	dlclose(h);
}

/* After fork, the child's thread has the values of the forking thread, in both a private and a
 * shared copy of the library; its new threads start fresh; the parent is unaffected. */
TEST(access_after_fork_in_child)
{
	struct tls_ops priv = { .naddr = 4 }, shared = { .naddr = 5 };
	void *hp = dlopen(tls_lib_path("libtlsobj_dl.so"), RTLD_NOW | RTLD_LOCAL);
	void *hs = dlopen(tls_lib_path("libalign64.so"), RTLD_NOW | RTLD_LOCAL);
	int status;
	pid_t pid;

	ASSERT_EQ(0, keep_context());
	ASSERT_NE(NULL, hp) TH_LOG("dlopen: %s", dlerror());
	ASSERT_NE(NULL, hs) TH_LOG("dlopen: %s", dlerror());
	ASSERT_EQ(0, tls_ops_dlsym(hp, "tlsobj_", &priv));
	ASSERT_EQ(0, tls_ops_dlsym(hs, "tlsobj_", &shared));
	priv.set(11);
	shared.set(12);
	pid = fork();
	ASSERT_LE(0, pid);
	if (pid == 0) {
		char why[200];

		if (priv.check(11) || shared.check(12))
			_exit(1);
		priv.set(21);
		shared.set(22);
		if (priv.check(21) || shared.check(22))
			_exit(2);
		if (tls_run_threads(&priv, why, sizeof(why)) || tls_run_threads(&shared, why, sizeof(why)))
			_exit(3);
		if (priv.check(21) || shared.check(22))
			_exit(4);
		_exit(0);
	}
	ASSERT_EQ(pid, waitpid(pid, &status, 0));
	ASSERT_TRUE(WIFEXITED(status)) TH_LOG("status %#x", status);
	ASSERT_EQ(0, WEXITSTATUS(status));
	ASSERT_EQ(0, priv.check(11));
	ASSERT_EQ(0, shared.check(12));
	dlclose(hs);
	dlclose(hp);
}

static void *host_var_thread(void *arg)
{
	unsigned long *(*addr)(void) = arg;

	return addr() == &tlsobj_host_var && tlsobj_host_var == 0x600dUL ? arg : NULL;
}

/* A DTPMOD64 slot that names the program (not the object) keeps glibc's id: kstls forwards it. */
TEST(host_module_id_forwarded_to_glibc)
{
	unsigned long *(*addr)(void);
	void *h = dlopen(tls_lib_path("libhostvar.so"), RTLD_NOW | RTLD_LOCAL);
	pthread_t t;
	void *r;

	ASSERT_NE(NULL, h) TH_LOG("dlopen: %s", dlerror());
	*(void **)&addr = dlsym(h, "tlsobj_host_var_addr");
	ASSERT_NE(NULL, addr);
	ASSERT_EQ(&tlsobj_host_var, addr());
	ASSERT_EQ(0, pthread_create(&t, NULL, host_var_thread, addr));
	ASSERT_EQ(0, pthread_join(t, &r));
	ASSERT_NE(NULL, r);
	dlclose(h);
}

struct late_job {
	struct tls_ops *ops;
	pthread_barrier_t *b;
	int before, after_fresh;
};

static void *late_thread(void *arg)
{
	struct late_job *j = arg;

	j->ops->set(88);
	j->before = j->ops->check(88);
	pthread_barrier_wait(j->b);	/* the main thread registers the module */
	pthread_barrier_wait(j->b);
	j->after_fresh = j->ops->check_fresh();
	return NULL;
}

/*
 * A module used before it is registered (libtlsobj_late.so links libkstls.so, which registers
 * nobody by itself; the program asks it to register later): the registering thread's block
 * starts as a copy of its host block, so its writes stay; a thread that wrote before the
 * registration finds a fresh kstls block afterwards, its earlier writes left in the host's.
 */
TEST(earlier_writes_carry_over)
{
	struct tls_ops ops = { .naddr = 4 };
	struct kstls_stats st;
	struct late_job j = { .ops = &ops };
	int (*reg)(void), (*registered)(uint64_t *);
	pthread_barrier_t b;
	void *host_addr;
	uint64_t id;
	pthread_t t;
	void *h = dlopen(tls_lib_path("libtlsobj_late.so"), RTLD_NOW | RTLD_LOCAL);

	ASSERT_EQ(0, keep_context());
	ASSERT_NE(NULL, h) TH_LOG("dlopen: %s", dlerror());
	ASSERT_EQ(0, tls_ops_dlsym(h, "tlsobj_", &ops));
	*(void **)&reg = dlsym(h, "tlsobj_register_now");
	*(void **)&registered = dlsym(h, "tlsobj_registered");
	ASSERT_TRUE(reg && registered);
	ASSERT_NE(0, registered(NULL)) TH_LOG("registered by linking alone");
	ops.set(77);
	host_addr = ops.addr(0);
	pthread_barrier_init(&b, NULL, 2);
	j.b = &b;
	ASSERT_EQ(0, pthread_create(&t, NULL, late_thread, &j));
	pthread_barrier_wait(&b);
	ASSERT_EQ(0, reg());
	ASSERT_EQ(0, registered(&id));
	pthread_barrier_wait(&b);
	ASSERT_EQ(0, pthread_join(t, NULL));
	pthread_barrier_destroy(&b);
	EXPECT_NE(host_addr, ops.addr(0)) TH_LOG("still the host's block");
	EXPECT_EQ(0, ops.check(77)) TH_LOG("the registering thread's writes are gone");
	EXPECT_EQ(0, j.before);
	EXPECT_EQ(0, j.after_fresh) TH_LOG("the other thread's block is not fresh");
	ASSERT_EQ(0, tls_stats(kstls_fd(), id, &st));
	EXPECT_EQ(2, st.allocs);
	ksft_print_msg("%s: registered late, module %#llx: the registering thread kept 77, the other thread starts fresh\n",
		       TLS_DIALECT, (unsigned long long)id);
	dlclose(h);
}

/* An id kstls never gave out: the process ends with SIGABRT and a message, never garbage. */
TEST(forged_kstls_id_fails_loudly)
{
	int status, pipefd[2];
	char buf[256] = "";
	pid_t pid;

	ASSERT_EQ(0, keep_context());
	ASSERT_EQ(0, pipe(pipefd));
	pid = fork();
	ASSERT_LE(0, pid);
	if (pid == 0) {
		struct kstls_tls_index ti = { .module = own_module + 0x777, .offset = 0 };

		dup2(pipefd[1], 2);
		__tls_get_addr(&ti);
		_exit(0);
	}
	close(pipefd[1]);
	ASSERT_EQ(pid, waitpid(pid, &status, 0));
	ASSERT_LT(0, read(pipefd[0], buf, sizeof(buf) - 1));
	close(pipefd[0]);
	ASSERT_TRUE(WIFSIGNALED(status)) TH_LOG("status %#x", status);
	ASSERT_EQ(SIGABRT, WTERMSIG(status));
	ASSERT_NE(NULL, strstr(buf, "kstls: __tls_get_addr")) TH_LOG("%s", buf);
	ksft_print_msg("forged id: %s", buf);
}

TEST_HARNESS_MAIN
