// SPDX-License-Identifier: GPL-2.0
/*
 * kstls_bench.c - ns per TLS access through kstls and through glibc, measured side by side.
 *
 * Like tools/perf/bench/syscall.c and rseq's -DBENCHMARK build: each path is a tight loop around
 * one non-inlined operation (bench.h), timed with CLOCK_MONOTONIC, ns/op = elapsed / iterations.
 * The whole process is pinned to one CPU. Each path is calibrated (iterations for about
 * --sample-ms per sample) and warmed up, then the paths are sampled round-robin, --repeats
 * times, the starting path rotating each repeat, so that a disturbance of the shared machine
 * falls on every path alike. The first-touch paths time, in a new thread, the first access to
 * each of N modules and divide by N. The thread-scaling phases run in a thread created after
 * T - 1 others (the main thread included) have touched the module and are parked.
 *
 * The paths come in two sets, each run on the platform that can time it (scripts/bench.sh):
 *   user     the user-side paths: glibc's and kstls's TLS accesses and their baselines, over
 *            the module and thread counts. No system call in a measured loop, and no need for
 *            bench/kmod (User-Mode Linux runs them: user code native, a syscall ~17 us).
 *   syscall  the paths that are system calls: the syscall baselines, kstls_strict over the
 *            module and thread counts, the strict path's breakdown with the kernel primitives
 *            of bench/kmod (kstls_kbench.ko must be loaded), and the first-touch paths (a
 *            GET_ADDR and a block allocation per module). QEMU with a production kernel.
 * Both sets run by default. kstls_cached, kstls_gd and kstls_tlsdesc need libkstls
 * (libkb_kstls*.so, which bench/Makefile only builds with it): without it the run fails.
 *
 * The output is for the host (scripts/bench.sh, bench/report.py): lines starting with "KB:",
 *   KB:env:KEY=VALUE           (platform=NAME and set=user|syscall|user syscall among them)
 *   KB:raw:path,threads,modules,repeat,ns_per_op,iters,misses
 *   KB:slot:threads,distance   (the kstls_cached measuring thread's slot: 0 home, -1 not cached)
 *   KB:error:MESSAGE           (the run fails)
 *   KB:end:rc=N
 * where misses counts the kstls_cached slow-path calls during a sample (0 when the loop stayed
 * on the fast path; the number of modules for a first-touch sample).
 *
 * Usage: kstls_bench [--short] [--set user|syscall] [--platform NAME] [--repeats N]
 *                    [--sample-ms MS] [--cpu N]
 * --platform only names where the run happened (uml, qemu-prod, ...) for bench/report.py.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <gnu/libc-version.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "kbench.h"

#ifndef KB_CFLAGS
#define KB_CFLAGS "?"
#endif

#define MAX_MODS	256
#define MAX_PATHS	40
#define STACK_SIZE	(256 * 1024)

/* ops.c */
extern int kb_strict_fd;
long kb_empty(void *arg);
long kb_fs_le(void *arg);
long kb_getppid(void *arg);
long kb_getuid(void *arg);
long kb_kbench(void *arg);
long kb_null_ioctl(void *arg);
long kb_kstls_strict(void *arg);
long kb_strict_einval(void *arg);

enum kind { LOOP, FIRST_TOUCH };
enum { SET_USER = 1, SET_SYSCALL = 2 };

struct path {
	const char *name;
	int threads, modules;		/* modules: a power of two for LOOP */
	enum kind kind;
	kb_kstls_misses_fn misses;	/* counts the path's slow-path calls, or NULL */
	kb_op_fn ops[MAX_MODS];
	void *args[MAX_MODS];
	long iters;
};

static struct {
	int short_run, repeats, sample_ms, cpu, nmods, set;
	const char *platform;
	int threads[4], nthreads;
	int modules[3], nmodules;
} cfg;

static int errors;
static char dir[PATH_MAX];
static kb_op_fn gd_ops[MAX_MODS];
static kb_op_fn tlsdesc_op, tlsdesc_dyn_op, cached_op, ref_op, gd_kstls_op, tlsdesc_kstls_op;
static kb_kstls_misses_fn cached_misses, ref_misses, gd_misses, tlsdesc_misses;
static int (*slot_distance)(void);
static struct kstls_tls_index ti_cached[MAX_MODS], ti_strict[MAX_MODS], ti_ref[MAX_MODS];
static struct kstls_tls_index ti_badmod, ti_badoff;
static int cached_fd;
static struct kb_kcall kcalls[] = {
	{ KBENCH_NOP }, { KBENCH_COPY_IN }, { KBENCH_COPY_OUT }, { KBENCH_MUTEX },
	{ KBENCH_SPINLOCK }, { KBENCH_RCU }, { KBENCH_SKELETON },
};
static const char *const kcall_names[] = {
	"kmod_nop", "kmod_copy_in16", "kmod_copy_out8", "kmod_mutex", "kmod_spinlock", "kmod_rcu",
	"kmod_skeleton",
};
static volatile long sink;

static void error(const char *fmt, ...)
{
	va_list ap;

	printf("KB:error:");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	fflush(stdout);
	errors++;
}

static void __attribute__((noreturn)) fatal(const char *what)
{
	error("%s: %s", what, strerror(errno));
	printf("KB:end:rc=1\n");
	exit(1);
}

/* A broken setup: the run ends here, failed. */
static void __attribute__((noreturn, format(printf, 1, 2))) die_run(const char *fmt, ...)
{
	va_list ap;

	printf("KB:error:");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\nKB:end:rc=1\n");
	fflush(stdout);
	exit(1);
}

static unsigned long long now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000ULL + ts.tv_nsec;
}

static void *open_dso(const char *name, const char *sym, kb_op_fn *op)
{
	char path[PATH_MAX + 64];
	void *h;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (!h)
		die_run("dlopen %s: %s", path, dlerror());
	if (op) {
		*op = (kb_op_fn)dlsym(h, sym);
		if (!*op)
			die_run("dlsym %s in %s", sym, path);
	}
	return h;
}

static const char *block_kind(void *h)
{
	void *(*addr)(void) = (void *(*)(void))dlsym(h, "kb_gd_addr");
	long d;

	if (!addr)
		return "?";
	/* glibc's static TLS block lies just below the thread pointer; dynamic blocks are malloc'd. */
	d = (long)kb_thread_pointer() - (long)addr();
	return d > 0 && d < (1L << 20) ? "static" : "dynamic";
}

static int kstls_register(int fd, __u64 *id)
{
	static const long image[1] = { 1 };
	struct kstls_register r = {
		.image = (unsigned long)image,
		.filesz = sizeof(image),
		.memsz = sizeof(image),
		.align = sizeof(image),
	};

	if (ioctl(fd, KSTLS_IOC_REGISTER, &r))
		return -1;
	*id = r.module;
	return 0;
}

static void setup(void)
{
	struct kstls_mode strict = { .mode = KSTLS_MODE_STRICT };
	struct kstls_info info = { 0 };
	kb_kstls_setup_fn kstls_setup;
	int (*lib_register)(unsigned long long *id);
	int (*self_error)(void);
	const struct kstls_cache_header *h;
	void *cache, *kh, *gh;
	const char *kind;
	char name[64];

	/* glibc_gd (user) and glibc_first_touch (syscall) share the modules. */
	for (int m = 0; m < cfg.nmods; m++) {
		snprintf(name, sizeof(name), "mods/gd-%03d.so", m);
		gh = open_dso(name, "kb_gd", &gd_ops[m]);
		if (m == 0)
			printf("KB:env:glibc_gd_block=%s\n", block_kind(gh));
	}
	if (cfg.set & SET_USER) {
		/* glibc's two TLSDESC resolvers: _dl_tlsdesc_return for a module in static TLS,
		 * the other when the module's TLS is too big for the static area's surplus. */
		kind = block_kind(open_dso("libkb_tlsdesc.so", "kb_gd", &tlsdesc_op));
		printf("KB:env:tlsdesc_block=%s\n", kind);
		if (strcmp(kind, "static"))
			error("libkb_tlsdesc.so has a %s block: its row is not _dl_tlsdesc_return's",
			      kind);
		kind = block_kind(open_dso("libkb_tlsdesc_dyn.so", "kb_gd", &tlsdesc_dyn_op));
		printf("KB:env:tlsdesc_dyn_block=%s\n", kind);
		if (strcmp(kind, "dynamic"))
			error("libkb_tlsdesc_dyn.so has a %s block: its row is not "
			      "_dl_tlsdesc_dynamic's", kind);
	}

	/* kstls_cached (user) and kstls_first_touch (syscall): libkstls, in a context of its
	 * own. Nothing stands in for it: a libkb_kstls.so without libkstls fails the run,
	 * before the device is even opened. */
	kh = open_dso("libkb_kstls.so", "kb_kstls_cached", &cached_op);
	lib_register = (int (*)(unsigned long long *))dlsym(kh, "kb_kstls_lib_register");
	cached_misses = (kb_kstls_misses_fn)dlsym(kh, "kb_kstls_misses");
	slot_distance = (int (*)(void))dlsym(kh, "kb_kstls_slot_distance");
	if (!lib_register || !cached_misses || !slot_distance)
		die_run("%s/libkb_kstls.so has no kb_kstls_lib_register, kb_kstls_misses or "
			"kb_kstls_slot_distance: it was not built from kstls_lib.c with libkstls "
			"(make -C userspace-lib, then make -C bench)", dir);

	/* The cached context: its fast-path cache is what kstls_cached and first touch use. */
	cached_fd = open(KSTLS_DEVICE_PATH, O_RDWR | O_CLOEXEC);
	if (cached_fd < 0)
		fatal("open " KSTLS_DEVICE_PATH " (kstls.ko loaded?)");
	if (ioctl(cached_fd, KSTLS_IOC_INFO, &info))
		fatal("KSTLS_IOC_INFO");
	if (!(info.features & KSTLS_FEAT_CACHE) || !info.cache_size) {
		errno = ENOTSUP;
		fatal("the fast-path cache");
	}
	cache = mmap(NULL, info.cache_size, PROT_READ, MAP_SHARED, cached_fd, 0);
	if (cache == MAP_FAILED)
		fatal("mmap the cache");
	h = cache;
	printf("KB:env:kstls_cache=%u slots, %u probes, %u modules per thread, %u bytes, mode %u\n",
	       h->nr_slots, h->nr_probes, h->dtv_entries, info.cache_size, h->mode);
	if (h->mode) {
		errno = EPERM;
		fatal("the cache is in strict mode (kstls.ko strict=1?)");
	}

	if (cfg.set & SET_SYSCALL) {
		/* The strict context (kstls_strict, null_ioctl, the breakdown) and bench/kmod. */
		kb_strict_fd = open(KSTLS_DEVICE_PATH, O_RDWR | O_CLOEXEC);
		if (kb_strict_fd < 0)
			fatal("open " KSTLS_DEVICE_PATH);
		if (ioctl(kb_strict_fd, KSTLS_IOC_SET_MODE, &strict))
			fatal("KSTLS_IOC_SET_MODE strict");
		for (int m = 0; m < cfg.nmods; m++) {
			if (kstls_register(kb_strict_fd, &ti_strict[m].module))
				fatal("KSTLS_IOC_REGISTER");
		}
		/* A live slot with a stale generation; a valid module and offset == memsz. */
		ti_badmod.module = ti_strict[0].module + (1ULL << 32);
		ti_badoff = (struct kstls_tls_index){ ti_strict[0].module, sizeof(long) };

		kb_kbench_fd = open(KBENCH_DEVICE, O_RDWR | O_CLOEXEC);
		if (kb_kbench_fd < 0)
			fatal("open " KBENCH_DEVICE " (bench/kmod/kstls_kbench.ko loaded?)");
	}

	/* kstls_cached and kstls_first_touch: libkstls's modules, in its own context. */
	for (int m = 0; m < cfg.nmods; m++) {
		int ret = lib_register(&ti_cached[m].module);

		if (ret) {
			errno = -ret;
			fatal("kstls_register");
		}
	}
	printf("KB:env:kstls_cached_impl=libkstls __tls_get_addr (libkstls.a linked privately into "
	       "libkb_kstls.so), modules registered with kstls_register\n");
	if (!(cfg.set & SET_USER))
		return;

	/* kstls_ref: the reference lookup, on the cached context opened above. */
	kh = open_dso("libkb_kstls_ref.so", "kb_kstls_cached", &ref_op);
	kstls_setup = (kb_kstls_setup_fn)dlsym(kh, "kb_kstls_setup");
	ref_misses = (kb_kstls_misses_fn)dlsym(kh, "kb_kstls_misses");
	if (!kstls_setup || !ref_misses || kstls_setup(cached_fd, cache))
		die_run("libkb_kstls_ref.so: no kb_kstls_setup/kb_kstls_misses or a bad cache header");
	for (int m = 0; m < cfg.nmods; m++) {
		if (kstls_register(cached_fd, &ti_ref[m].module))
			fatal("KSTLS_IOC_REGISTER");
	}
	/* kstls_gd: a module that registered itself, in a copy of libkstls of its own. */
	gh = open_dso("libkb_kstls_gd.so", "kb_gd", &gd_kstls_op);
	self_error = (int (*)(void))dlsym(gh, "kb_kstls_self_error");
	gd_misses = (kb_kstls_misses_fn)dlsym(gh, "kb_kstls_misses");
	if (!self_error || self_error() || !gd_misses)
		die_run("libkb_kstls_gd.so: kstls_register_self() in its constructor failed: %d",
			self_error ? self_error() : 0);
	/* kstls_tlsdesc: the same module built with TLS descriptors, registered by linking. */
	gh = open_dso("libkb_kstls_tlsdesc.so", "kb_gd", &tlsdesc_kstls_op);
	self_error = (int (*)(void))dlsym(gh, "kb_kstls_self_error");
	tlsdesc_misses = (kb_kstls_misses_fn)dlsym(gh, "kb_kstls_misses");
	if (!self_error || self_error() || !tlsdesc_misses)
		die_run("libkb_kstls_tlsdesc.so: not registered: %d", self_error ? self_error() : 0);
}

/* The first access of this thread to every path that scales: afterwards all of them hit.
 * (Not measured: in the user set, too, the cached path's first access is a GET_ADDR.) */
static void touch(void)
{
	long s = gd_ops[0](NULL) + cached_op(&ti_cached[0]), want = 2;

	if (cfg.set & SET_SYSCALL) {
		s += kb_kstls_strict(&ti_strict[0]);
		want++;
	}
	if (s != want)
		error("first access of thread %d: checksum %ld, not %ld", gettid(), s, want);
}

static void path_loop(struct path *p, const char *name, int threads, int modules, kb_op_fn op,
		      struct kstls_tls_index *ti)
{
	*p = (struct path){ .name = name, .threads = threads, .modules = modules, .kind = LOOP };
	for (int m = 0; m < modules; m++) {
		p->ops[m] = op ? op : gd_ops[m];
		p->args[m] = ti ? &ti[m] : NULL;
	}
	p->misses = op == cached_op ? cached_misses
		    : op && op == gd_kstls_op ? gd_misses
		    : op && op == tlsdesc_kstls_op ? tlsdesc_misses
		    : op == ref_op ? ref_misses : NULL;
}

/* One sample of a loop path: ns/op over p->iters iterations, every result checked. */
static double sample_loop(struct path *p, long iters, unsigned long *misses)
{
	kb_op_fn *ops = p->ops;
	void **args = p->args;
	unsigned long mask = p->modules - 1, m0 = p->misses ? p->misses() : 0;
	unsigned long long t0, t1;
	long sum = 0;

	t0 = now_ns();
	for (long i = 0; i < iters; i++) {
		unsigned long k = i & mask;

		sum += ops[k](args[k]);
	}
	t1 = now_ns();
	sink = sum;
	if (sum != iters)
		error("%s threads=%d modules=%d: %ld of %ld accesses failed", p->name, p->threads,
		      p->modules, iters - sum, iters);
	*misses = p->misses ? p->misses() - m0 : 0;
	return (double)(t1 - t0) / iters;
}

struct ft {
	struct path *p;
	double ns;
	unsigned long misses;
	long sum;
};

static void *first_touch_thread(void *arg)
{
	struct ft *f = arg;
	struct path *p = f->p;
	unsigned long m0 = p->misses ? p->misses() : 0;
	unsigned long long t0, t1;

	t0 = now_ns();
	for (int m = 0; m < p->modules; m++)
		f->sum += p->ops[m](p->args[m]);
	t1 = now_ns();
	f->ns = (double)(t1 - t0) / p->modules;
	f->misses = p->misses ? p->misses() - m0 : 0;
	return NULL;
}

static pthread_attr_t attr;

/* One sample of a first-touch path: a new thread touches each module once. */
static double sample_first_touch(struct path *p, unsigned long *misses)
{
	struct ft f = { .p = p };
	pthread_t t;

	if (pthread_create(&t, &attr, first_touch_thread, &f) || pthread_join(t, NULL))
		fatal("pthread_create");
	if (f.sum != p->modules)
		error("%s: %ld of %d first accesses failed", p->name, p->modules - f.sum, p->modules);
	if (p->misses && f.misses != (unsigned long)p->modules)
		error("%s: %lu slow-path calls for %d first accesses", p->name, f.misses,
		      p->modules);
	*misses = f.misses;
	return f.ns;
}

static double sample(struct path *p, long iters, unsigned long *misses)
{
	return p->kind == LOOP ? sample_loop(p, iters, misses) : sample_first_touch(p, misses);
}

/* Iterations for one sample of about cfg.sample_ms, found by doubling (this also warms up). */
static void calibrate(struct path *p)
{
	double target = cfg.sample_ms * 1e6;
	unsigned long misses;
	long n = p->modules;

	if (p->kind == FIRST_TOUCH) {
		p->iters = 1;
		return;
	}
	/* The first pass pays for cold caches (and, under TCG, for translating the code). */
	sample(p, n, &misses);
	for (;;) {
		double ns = sample(p, n, &misses) * n;

		if (ns >= target / 4 || n >= (1L << 40)) {
			/* A whole number of rounds over the modules, so each is accessed alike. */
			long rounds = n * target / (ns > 0 ? ns : 1) / p->modules;

			p->iters = (rounds > 1 ? rounds : 1) * p->modules;
			return;
		}
		n *= 2;
	}
}

/* Calibrate and warm every path up, then sample them round-robin; print the raw numbers. */
static void run_phase(struct path *paths, int n)
{
	unsigned long misses;

	for (int i = 0; i < n; i++) {
		calibrate(&paths[i]);
		sample(&paths[i], paths[i].iters, &misses);
	}
	for (int r = 0; r < cfg.repeats; r++) {
		for (int j = 0; j < n; j++) {
			struct path *p = &paths[(j + r) % n];
			double ns = sample(p, p->iters, &misses);

			printf("KB:raw:%s,%d,%d,%d,%.3f,%ld,%lu\n", p->name, p->threads, p->modules, r,
			       ns, p->iters, misses);
		}
		fflush(stdout);
	}
}

/* Where the measuring thread's kstls_cached slot was: off its home slot, every access probes. */
static void print_slot_distance(int threads)
{
	if (cfg.set & SET_USER)
		printf("KB:slot:%d,%d\n", threads, slot_distance());
}

/* Phase 1: one thread, the set's paths, the module counts; the syscall set's breakdown and
 * first touch. */
static void phase_one_thread(void)
{
	static struct path paths[MAX_PATHS];
	int n = 0, ft_mods = cfg.modules[cfg.nmodules - 1], user = cfg.set & SET_USER,
	    sys = cfg.set & SET_SYSCALL;

	path_loop(&paths[n++], "empty", 1, 1, kb_empty, NULL);
	if (user) {
		path_loop(&paths[n++], "fs_le", 1, 1, kb_fs_le, NULL);
		path_loop(&paths[n++], "ie", 1, 1, kb_ie, NULL);
		path_loop(&paths[n++], "glibc_tlsdesc_return", 1, 1, tlsdesc_op, NULL);
		path_loop(&paths[n++], "glibc_tlsdesc_dynamic", 1, 1, tlsdesc_dyn_op, NULL);
	}
	if (sys)
		path_loop(&paths[n++], "null_ioctl", 1, 1, kb_null_ioctl, NULL);
	for (int i = 0; i < cfg.nmodules; i++) {
		int m = cfg.modules[i];

		if (user) {
			path_loop(&paths[n++], "glibc_gd", 1, m, NULL, NULL);
			path_loop(&paths[n++], "kstls_cached", 1, m, cached_op, ti_cached);
		}
		if (sys)
			path_loop(&paths[n++], "kstls_strict", 1, m, kb_kstls_strict, ti_strict);
	}
	if (user) {
		path_loop(&paths[n++], "kstls_ref", 1, 1, ref_op, ti_ref);
		path_loop(&paths[n++], "kstls_gd", 1, 1, gd_kstls_op, NULL);
		path_loop(&paths[n++], "kstls_tlsdesc", 1, 1, tlsdesc_kstls_op, NULL);
	}
	if (sys) {
		path_loop(&paths[n++], "getuid", 1, 1, kb_getuid, NULL);
		path_loop(&paths[n++], "getppid", 1, 1, kb_getppid, NULL);
		for (int i = 0; i < (int)(sizeof(kcalls) / sizeof(kcalls[0])); i++) {
			path_loop(&paths[n], kcall_names[i], 1, 1, kb_kbench, NULL);
			paths[n++].args[0] = &kcalls[i];
		}
		path_loop(&paths[n++], "strict_badmod", 1, 1, kb_strict_einval, &ti_badmod);
		path_loop(&paths[n++], "strict_badoff", 1, 1, kb_strict_einval, &ti_badoff);
		path_loop(&paths[n], "glibc_first_touch", 1, ft_mods, NULL, NULL);
		paths[n++].kind = FIRST_TOUCH;
		path_loop(&paths[n], "kstls_first_touch", 1, ft_mods, cached_op, ti_cached);
		paths[n++].kind = FIRST_TOUCH;
	}

	touch();
	run_phase(paths, n);
	print_slot_distance(1);
}

/* The thread-scaling phases: parked threads that touched the module, and a measuring thread. */
static pthread_mutex_t park_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t park_cond = PTHREAD_COND_INITIALIZER;
static int parked, released;

static void *parked_thread(void *arg)
{
	(void)arg;
	touch();
	pthread_mutex_lock(&park_lock);
	parked++;
	pthread_cond_broadcast(&park_cond);
	while (!released)
		pthread_cond_wait(&park_cond, &park_lock);
	pthread_mutex_unlock(&park_lock);
	return NULL;
}

static void *measure_thread(void *arg)
{
	int threads = *(int *)arg, n = 0;
	struct path paths[5];

	touch();
	path_loop(&paths[n++], "empty", threads, 1, kb_empty, NULL);
	if (cfg.set & SET_USER) {
		path_loop(&paths[n++], "fs_le", threads, 1, kb_fs_le, NULL);
		path_loop(&paths[n++], "glibc_gd", threads, 1, NULL, NULL);
		path_loop(&paths[n++], "kstls_cached", threads, 1, cached_op, ti_cached);
	}
	if (cfg.set & SET_SYSCALL)
		path_loop(&paths[n++], "kstls_strict", threads, 1, kb_kstls_strict, ti_strict);
	run_phase(paths, n);
	print_slot_distance(threads);
	return NULL;
}

static void phase_threads(void)
{
	static pthread_t workers[1024];
	int nworkers = 0;

	for (int i = 0; i < cfg.nthreads; i++) {
		int threads = cfg.threads[i];
		pthread_t t;

		if (threads < 2)
			continue;
		/* The main thread, threads - 2 parked ones, and the measuring thread. */
		for (; nworkers < threads - 2; nworkers++) {
			if (pthread_create(&workers[nworkers], &attr, parked_thread, NULL))
				fatal("pthread_create");
		}
		pthread_mutex_lock(&park_lock);
		while (parked < nworkers)
			pthread_cond_wait(&park_cond, &park_lock);
		pthread_mutex_unlock(&park_lock);
		if (pthread_create(&t, &attr, measure_thread, &threads) || pthread_join(t, NULL))
			fatal("pthread_create");
	}
	pthread_mutex_lock(&park_lock);
	released = 1;
	pthread_cond_broadcast(&park_cond);
	pthread_mutex_unlock(&park_lock);
	for (int i = 0; i < nworkers; i++)
		pthread_join(workers[i], NULL);
}

static void print_env(void)
{
	char line[256], model[256] = "?", cs[64] = "?";
	struct utsname u;
	FILE *f;

	f = fopen("/proc/cpuinfo", "r");
	while (f && fgets(line, sizeof(line), f)) {
		if (!strncmp(line, "model name", 10) && strchr(line, ':')) {
			snprintf(model, sizeof(model), "%s", strchr(line, ':') + 2);
			model[strcspn(model, "\n")] = 0;
			break;
		}
	}
	if (f)
		fclose(f);
	f = fopen("/sys/devices/system/clocksource/clocksource0/current_clocksource", "r");
	if (f && fgets(cs, sizeof(cs), f))
		cs[strcspn(cs, "\n")] = 0;
	if (f)
		fclose(f);
	uname(&u);
	printf("KB:env:platform=%s\n", cfg.platform);
	printf("KB:env:set=%s\n", cfg.set == SET_USER ? "user"
				  : cfg.set == SET_SYSCALL ? "syscall" : "user syscall");
	printf("KB:env:guest_cpu=%s\n", model);
	printf("KB:env:guest_cpus=%ld\n", sysconf(_SC_NPROCESSORS_ONLN));
	printf("KB:env:kernel=%s %s\n", u.release, u.version);
	printf("KB:env:clocksource=%s\n", cs);
	printf("KB:env:glibc=%s\n", gnu_get_libc_version());
	printf("KB:env:compiler=gcc %s\n", __VERSION__);
	printf("KB:env:cflags=%s\n", KB_CFLAGS);
	printf("KB:env:pinned_cpu=%d\n", cfg.cpu);
	printf("KB:env:repeats=%d\n", cfg.repeats);
	printf("KB:env:sample_ms=%d\n", cfg.sample_ms);
	printf("KB:env:threads=");
	for (int i = 0; i < cfg.nthreads; i++)
		printf("%s%d", i ? " " : "", cfg.threads[i]);
	printf("\nKB:env:modules=");
	for (int i = 0; i < cfg.nmodules; i++)
		printf("%s%d", i ? " " : "", cfg.modules[i]);
	printf("\n");
}

int main(int argc, char **argv)
{
	cpu_set_t set;
	char *slash;

	cfg = (typeof(cfg)){ .repeats = 31, .sample_ms = 10, .cpu = -1,
			     .set = SET_USER | SET_SYSCALL, .platform = "unknown",
			     .threads = { 1, 16, 256, 1024 }, .nthreads = 4,
			     .modules = { 1, 16, 256 }, .nmodules = 3 };
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--short")) {
			cfg.short_run = 1;
			cfg.repeats = 3;
			cfg.sample_ms = 1;
			cfg.nthreads = 2;
			cfg.nmodules = 2;
		} else if (!strcmp(argv[i], "--set") && i + 1 < argc &&
			   (!strcmp(argv[i + 1], "user") || !strcmp(argv[i + 1], "syscall"))) {
			cfg.set = !strcmp(argv[++i], "user") ? SET_USER : SET_SYSCALL;
		} else if (!strcmp(argv[i], "--platform") && i + 1 < argc && *argv[i + 1] &&
			   !strpbrk(argv[i + 1], ",\n")) {
			cfg.platform = argv[++i];
		} else if (!strcmp(argv[i], "--repeats") && i + 1 < argc) {
			cfg.repeats = atoi(argv[++i]);
		} else if (!strcmp(argv[i], "--sample-ms") && i + 1 < argc) {
			cfg.sample_ms = atoi(argv[++i]);
		} else if (!strcmp(argv[i], "--cpu") && i + 1 < argc) {
			cfg.cpu = atoi(argv[++i]);
		} else {
			fprintf(stderr, "usage: %s [--short] [--set user|syscall] [--platform NAME] "
				"[--repeats N] [--sample-ms MS] [--cpu N]\n", argv[0]);
			return 2;
		}
	}
	if (cfg.repeats < 1 || cfg.sample_ms < 1)
		return 2;
	cfg.nmods = cfg.modules[cfg.nmodules - 1];
	setvbuf(stdout, NULL, _IOLBF, 0);

	/* Pinned: the last CPU unless told otherwise; every thread inherits it. */
	if (cfg.cpu < 0)
		cfg.cpu = sysconf(_SC_NPROCESSORS_ONLN) - 1;
	CPU_ZERO(&set);
	CPU_SET(cfg.cpu, &set);
	if (sched_setaffinity(0, sizeof(set), &set))
		fatal("sched_setaffinity");
	if (!realpath("/proc/self/exe", dir))
		fatal("/proc/self/exe");
	slash = strrchr(dir, '/');
	*slash = 0;
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, STACK_SIZE);

	print_env();
	setup();
	phase_one_thread();
	phase_threads();
	printf("KB:end:rc=%d\n", errors ? 1 : 0);
	return errors ? 1 : 0;
}
