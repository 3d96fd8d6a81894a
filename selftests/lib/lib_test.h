/* SPDX-License-Identifier: GPL-2.0 */
/*
 * lib_test.h - helpers of the libkstls selftests (glibc and musl programs): run a TLS module's
 * checks on 8 threads at once, read the kernel's counters (KSTLS_IOC_STATS and
 * /proc/self/fdinfo), find the test's shared objects.
 */
#ifndef LIB_TEST_H
#define LIB_TEST_H

#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <kstls.h>

#define NTHREADS 8

/* Where the Makefile put this build's objects, relative to the test program, and the TLS
 * dialect they were compiled with (the test matrix). */
#ifndef TLS_LIBDIR
#define TLS_LIBDIR "lib/"
#endif
#ifndef TLS_DIALECT
#define TLS_DIALECT "gnu"
#endif

/* The functions a test module exports (tlsobj.h, twolibc.c, the Rust cdylib). */
struct tls_ops {
	int (*check_fresh)(void);
	void (*set)(unsigned long v);
	int (*check)(unsigned long v);
	void *(*addr)(int which);
	int naddr;	/* variables tls_ops.addr knows */
	unsigned long align;	/* required alignment of addr(naddr - 1), 0: none */
};

struct tls_job {
	const struct tls_ops *ops;
	pthread_barrier_t *barrier;
	unsigned long v;
	int fresh, own, own_after;
	void *addr[8];
};

static void *tls_job_run(void *arg)
{
	struct tls_job *j = arg;

	j->fresh = j->ops->check_fresh();
	j->ops->set(j->v);
	for (int i = 0; i < j->ops->naddr; i++)
		j->addr[i] = j->ops->addr(i);
	/* Everyone has written their own values: nobody may see another thread's. */
	pthread_barrier_wait(j->barrier);
	j->own = j->ops->check(j->v);
	pthread_barrier_wait(j->barrier);
	j->own_after = j->ops->check(j->v);
	return NULL;
}

/*
 * Runs the module's checks on NTHREADS threads at once: each sees .tdata initialised and .tbss
 * zero, writes values of its own, and reads them back after all others wrote theirs; the
 * addresses of every variable differ between threads. Returns 0 or a description in @why.
 */
static inline int tls_run_threads(const struct tls_ops *ops, char *why, size_t len)
{
	struct tls_job jobs[NTHREADS];
	pthread_t t[NTHREADS];
	pthread_barrier_t b;

	pthread_barrier_init(&b, NULL, NTHREADS);
	for (int i = 0; i < NTHREADS; i++) {
		jobs[i] = (struct tls_job){ .ops = ops, .barrier = &b, .v = 1000 + 17 * i };
		if (pthread_create(&t[i], NULL, tls_job_run, &jobs[i])) {
			snprintf(why, len, "pthread_create failed");
			return -1;
		}
	}
	for (int i = 0; i < NTHREADS; i++)
		pthread_join(t[i], NULL);
	pthread_barrier_destroy(&b);
	for (int i = 0; i < NTHREADS; i++) {
		struct tls_job *j = &jobs[i];

		if (j->fresh || j->own || j->own_after) {
			snprintf(why, len, "thread %d: fresh check %d, own values %d, %d", i, j->fresh,
				 j->own, j->own_after);
			return -1;
		}
		for (int k = 0; k < ops->naddr; k++) {
			if (!j->addr[k]) {
				snprintf(why, len, "thread %d: variable %d has no address", i, k);
				return -1;
			}
			for (int o = 0; o < i; o++)
				if (jobs[o].addr[k] == j->addr[k]) {
					snprintf(why, len, "threads %d and %d share variable %d at %p",
						 o, i, k, j->addr[k]);
					return -1;
				}
		}
		if (ops->align && (unsigned long)j->addr[ops->naddr - 1] % ops->align) {
			snprintf(why, len, "thread %d: %p is not aligned to %lu", i,
				 j->addr[ops->naddr - 1], ops->align);
			return -1;
		}
	}
	return 0;
}

/* The kernel's counters of @fd, narrowed to @module (0: all). 0 or -errno. */
static inline int tls_stats(int fd, uint64_t module, struct kstls_stats *st)
{
	memset(st, 0, sizeof(*st));
	st->module = module;
	return ioctl(fd, KSTLS_IOC_STATS, st) ? -errno : 0;
}

static inline int tls_info(int fd, struct kstls_info *info)
{
	memset(info, 0, sizeof(*info));
	return ioctl(fd, KSTLS_IOC_INFO, info) ? -errno : 0;
}

/* The kernel's counters of @module as /proc/self/fdinfo/@fd shows them (its "module:" line);
 * @module 0: the sum over the context's modules, *nmodules their number. 0, or -1 when no line
 * matched. */
static inline int tls_fdinfo(int fd, uint64_t module, unsigned long long *lookups,
			     unsigned long long *allocs, int *nmodules)
{
	char path[64], line[512];
	int found = 0;
	FILE *f;

	*lookups = *allocs = 0;
	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd);
	f = fopen(path, "r");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		unsigned long long id, l, a;
		char *p, *q;

		if (sscanf(line, "module:\t%llx", &id) != 1 || (module && id != module))
			continue;
		p = strstr(line, " lookups=");
		q = strstr(line, " allocs=");
		if (!p || !q || sscanf(p, " lookups=%llu", &l) != 1 || sscanf(q, " allocs=%llu", &a) != 1)
			continue;
		*lookups += l;
		*allocs += a;
		found++;
	}
	fclose(f);
	if (nmodules)
		*nmodules = found;
	return found ? 0 : -1;
}

/* The fds of this process open on /dev/kstls (each private copy of libkstls has its own), in
 * @fds; their number. */
static inline int tls_kstls_fds(int *fds, int max)
{
	struct dirent *e;
	int n = 0;
	DIR *d = opendir("/proc/self/fd");

	while (d && (e = readdir(d)) && n < max) {
		char path[300], target[64];
		ssize_t len;

		snprintf(path, sizeof(path), "/proc/self/fd/%s", e->d_name);
		len = readlink(path, target, sizeof(target) - 1);
		if (len <= 0)
			continue;
		target[len] = 0;
		if (!strcmp(target, KSTLS_DEVICE_PATH))
			fds[n++] = atoi(e->d_name);
	}
	if (d)
		closedir(d);
	return n;
}

/* @name in the directory of the running test binary's TLS_LIBDIR (where the Makefile puts
 * this dialect's objects). */
static inline const char *tls_lib_path(const char *name)
{
	static char path[PATH_MAX];
	char *slash;
	ssize_t n = readlink("/proc/self/exe", path, sizeof(path) - 1);

	if (n < 0)
		return name;
	path[n] = 0;
	slash = strrchr(path, '/');
	if (!slash)
		return name;
	snprintf(slash + 1, sizeof(path) - (slash + 1 - path), TLS_LIBDIR "%s", name);
	return path;
}

/* Fills @ops from the tlsobj_* functions of @handle (prefix "tlsobj_" or another). */
static inline int tls_ops_dlsym(void *handle, const char *prefix, struct tls_ops *ops)
{
	char name[64];

#define TLS_SYM(field, fn)                                                  \
	do {                                                               \
		snprintf(name, sizeof(name), "%s%s", prefix, fn);          \
		*(void **)&ops->field = dlsym(handle, name);               \
		if (!ops->field)                                           \
			return -1;                                         \
	} while (0)
	TLS_SYM(check_fresh, "check_fresh");
	TLS_SYM(set, "set");
	TLS_SYM(check, "check");
	TLS_SYM(addr, "addr");
#undef TLS_SYM
	return 0;
}

static inline int tls_ops_from(void *h, const char *prefix, struct tls_ops *ops, int (**registered)(uint64_t *), int (**kfd)(void))
{
	ops->naddr = 4;
	char name[64];

	if (tls_ops_dlsym(h, prefix, ops))
		return -1;
	snprintf(name, sizeof(name), "%sregistered", prefix);
	*(void **)registered = dlsym(h, name);
	snprintf(name, sizeof(name), "%skstls_fd", prefix);
	*(void **)kfd = dlsym(h, name);
	return *registered && *kfd ? 0 : -1;
}

/*
 * The checks of a loaded test module whose functions are named @prefix...: registered with a
 * kstls id, NTHREADS threads see their own fresh values (tls_run_threads), the kernel allocated
 * one block per thread and answered at least as many lookups, and the main thread then gets a
 * fresh block too. 0, or the line that failed with a description in @why.
 */
static inline int tls_check_module(void *h, const char *prefix, int naddr, unsigned long align,
				   char *why, size_t len)
{
	unsigned long long fi_lookups, fi_allocs;
	struct kstls_stats before, after;
	int (*registered)(uint64_t *);
	int (*kfd)(void);
	struct tls_ops ops;
	uint64_t id;
	int fd;

	if (tls_ops_from(h, prefix, &ops, &registered, &kfd))
		return snprintf(why, len, "missing symbols: %s", dlerror()), __LINE__;
	ops.naddr = naddr;
	ops.align = align;
	if (registered(&id) || id < KSTLS_MODULE_ID_MIN)
		return snprintf(why, len, "not registered (%d)", registered(NULL)), __LINE__;
	fd = kfd();
	if (fd < 0 || tls_stats(fd, id, &before))
		return snprintf(why, len, "no context: %d", fd), __LINE__;
	if (tls_run_threads(&ops, why, len))
		return __LINE__;
	if (tls_stats(fd, id, &after) || after.allocs != before.allocs + NTHREADS ||
	    after.lookups < after.allocs)
		return snprintf(why, len, "counters: %llu allocs before, %llu after, %llu lookups",
				(unsigned long long)before.allocs, (unsigned long long)after.allocs,
				(unsigned long long)after.lookups), __LINE__;
	if (ops.check_fresh())
		return snprintf(why, len, "main thread not fresh"), __LINE__;
	ops.set(5);
	if (ops.check(5))
		return snprintf(why, len, "main thread values"), __LINE__;
	if (tls_fdinfo(fd, id, &fi_lookups, &fi_allocs, NULL) || fi_allocs < after.allocs ||
	    fi_lookups < fi_allocs)
		return snprintf(why, len, "fdinfo of module %#llx: %llu lookups, %llu allocs",
				(unsigned long long)id, fi_lookups, fi_allocs), __LINE__;
	snprintf(why, len, "%s: module %#llx: %llu lookups, %llu allocs (fdinfo %llu, %llu)",
		 TLS_DIALECT, (unsigned long long)id, (unsigned long long)after.lookups,
		 (unsigned long long)after.allocs, fi_lookups, fi_allocs);
	return 0;
}

#endif /* LIB_TEST_H */
