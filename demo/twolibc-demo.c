// SPDX-License-Identifier: GPL-2.0
/*
 * twolibc-demo.c - the story `make demo` tells first: a shared object that brings its own libc
 * (musl's libc.a, linked in and hidden) loaded into this glibc program. Its TLS code is the same
 * in both builds (selftests/lib/twolibc.c); only its runtime differs:
 *
 *   libtwolibc_nokstls.so  musl's libc.a alone: its TLS accesses reach musl's __tls_get_addr,
 *                          which reads a musl thread descriptor that glibc never made
 *   libtwolibc.so          + libkstls.a: the same accesses are served by /dev/kstls
 *
 * For each, two threads touch the object's TLS: what each sees at first touch (.tdata must read
 * "two libcs, one TLS"), where its variable lives, and whether its own write stays its own. The
 * build without kstls runs in a child, since it may crash. Then the kernel's view of the kstls
 * build: /proc/self/fdinfo of the object's context. Exit status 0 when the kstls build worked.
 */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "demo.h"

#define TDATA_INIT "two libcs, one TLS"
#define NTHREADS 2

/* The object's functions (twolibc.c). */
struct twolibc {
	int (*check_fresh)(void);
	void (*set)(unsigned long v);
	int (*check)(unsigned long v);
	void *(*addr)(int which);
	int (*registered)(uint64_t *id);
	int (*kstls_fd)(void);
};

struct seen {
	const struct twolibc *obj;
	unsigned long value;
	void *name_addr;
	char first[40];
	int fresh;
	int own;
};

/* The object's libraries sit in build/selftests/lib; this program in build/demo. */
static const char *lib_path(const char *name)
{
	static char path[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", path, sizeof(path) - 1);
	char *slash;

	if (n < 0)
		return name;
	path[n] = 0;
	slash = strrchr(path, '/');
	snprintf(slash + 1, sizeof(path) - (size_t)(slash + 1 - path), "../selftests/lib/%s", name);
	return path;
}

static int load(const char *name, struct twolibc *o)
{
	void *h = dlopen(lib_path(name), RTLD_NOW | RTLD_LOCAL);

	if (!h) {
		printf("  dlopen %s: %s\n", name, dlerror());
		return -1;
	}
	*(void **)&o->check_fresh = dlsym(h, "twolibc_check_fresh");
	*(void **)&o->set = dlsym(h, "twolibc_set");
	*(void **)&o->check = dlsym(h, "twolibc_check");
	*(void **)&o->addr = dlsym(h, "twolibc_addr");
	*(void **)&o->registered = dlsym(h, "twolibc_registered");
	*(void **)&o->kstls_fd = dlsym(h, "twolibc_kstls_fd");
	return o->check_fresh && o->set && o->check && o->addr ? 0 : -1;
}

/* Printable copy of what the variable holds: its bytes, escaped. */
static void printable(char *dst, size_t size, const char *src)
{
	size_t j = 0;

	for (size_t i = 0; i < 24 && j + 5 < size; i++) {
		unsigned char c = (unsigned char)src[i];

		if (!c)
			break;
		j += (size_t)snprintf(dst + j, size - j, c >= ' ' && c < 127 ? "%c" : "\\x%02x", c);
	}
	dst[j] = 0;
}

static void *touch(void *arg)
{
	struct seen *s = arg;

	s->name_addr = s->obj->addr(0);
	printable(s->first, sizeof(s->first), s->name_addr);
	s->fresh = s->obj->check_fresh() == 0;
	s->obj->set(s->value);
	/* Give the other thread time to write its own value. */
	usleep(100 * 1000);
	s->own = s->obj->check(s->value) == 0;
	return NULL;
}

/* Two threads through the object's TLS; 1 when both saw fresh, private values. */
static int run_threads(const struct twolibc *o)
{
	struct seen s[NTHREADS];
	pthread_t t[NTHREADS];
	int good = 1;

	for (int i = 0; i < NTHREADS; i++) {
		s[i] = (struct seen){ .obj = o, .value = 1000 + (unsigned long)i };
		pthread_create(&t[i], NULL, touch, &s[i]);
	}
	for (int i = 0; i < NTHREADS; i++) {
		pthread_join(t[i], NULL);
		printf("  thread %d: twolibc_name at %p, first read \"%s\" (%s), own value %s\n", i,
		       s[i].name_addr, s[i].first, s[i].fresh ? ".tdata as linked" : "NOT the .tdata",
		       s[i].own ? "kept" : "LOST");
		good &= s[i].fresh && s[i].own;
	}
	if (s[0].name_addr == s[1].name_addr) {
		printf("  both threads got the same address: the variable is not thread-local\n");
		good = 0;
	}
	fflush(stdout);
	return good;
}

static void without_kstls(void)
{
	int status;
	pid_t pid;

	printf("\n== 1. libtwolibc_nokstls.so: twolibc.c + musl's libc.a, in a glibc process ==\n");
	fflush(stdout);
	pid = fork();
	if (pid == 0) {
		struct twolibc o = { 0 };

		if (load("libtwolibc_nokstls.so", &o))
			_exit(2);
		_exit(run_threads(&o) ? 0 : 1);
	}
	if (pid < 0 || waitpid(pid, &status, 0) != pid) {
		printf("  fork: %s\n", strerror(errno));
		return;
	}
	if (WIFSIGNALED(status))
		printf("  => the process died of signal %d (%s) in the object's TLS access\n",
		       WTERMSIG(status), strsignal(WTERMSIG(status)));
	else if (WEXITSTATUS(status) == 1)
		printf("  => broken: musl's __tls_get_addr read a thread descriptor that glibc never made\n");
	else if (WEXITSTATUS(status) == 0)
		printf("  => it happened to work this time\n");
	else
		printf("  => the object could not be loaded\n");
}

int main(void)
{
	struct twolibc o = { 0 };
	uint64_t id = 0;
	int good, r;

	setvbuf(stdout, NULL, _IOLBF, 0);
	printf("One shared object with its own libc (musl), dlopen()ed by this glibc program.\n"
	       "Its TLS code is the same in both builds; .tdata of twolibc_name is \"%s\".\n",
	       TDATA_INIT);
	without_kstls();

	printf("\n== 2. libtwolibc.so: the same object + libkstls.a, TLS served by /dev/kstls ==\n");
	if (load("libtwolibc.so", &o) || !o.registered || !o.kstls_fd)
		return 1;
	r = o.registered(&id);
	if (r) {
		printf("  the object's constructor could not register it: %s\n", strerror(-r));
		return 1;
	}
	printf("  the constructor registered the object's PT_TLS: kstls module id %#llx\n",
	       (unsigned long long)id);
	good = run_threads(&o);
	printf("  => %s\n", good ? "every thread sees its own, initialised variables"
				 : "BROKEN even with kstls");

	printf("\n== 3. What the kernel saw: the object's kstls context ==\n");
	show_fdinfo(o.kstls_fd());
	printf("(lookups = accesses that went to the kernel: first touches and cache misses; the\n"
	       " others were answered from the read-only cache page without a system call.)\n");
	return good ? 0 : 1;
}
