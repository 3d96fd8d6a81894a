// SPDX-License-Identifier: GPL-2.0
/*
 * dso_test.c - scenarios 1 and 2 of libkstls: a libc-free shared object with general- and
 * local-dynamic TLS, or TLS descriptors in the gnu2 build (tlsobj.c, libkstls.a linked in
 * privately, registered before its constructors, which call KSTLS_REGISTER_SELF too) in a
 * dynamically linked program, loaded at start-up (DT_NEEDED) and with dlopen. Built for glibc
 * (gcc) and musl (musl-gcc), the same shared objects. After each run the kernel's counters
 * (KSTLS_IOC_STATS on the object's own context, and its fdinfo) must show that the kernel served
 * the accesses: one block per thread, at least as many lookups. Also the constructor order
 * (ctororder.c): registration before the object's first constructor, unregistration after its
 * destructor, the constructors' writes kept.
 *
 * The kselftest harness runs each test in a forked child: every test starts with the library's
 * fork adoption (the inherited fd answers EPERM, the child adopts the parent's context).
 */
#include <stdlib.h>
#include <sys/wait.h>

#include "kselftest_harness.h"
#include "lib_test.h"
#include "tlsobj.h"
#include "ctororder.h"

#ifdef __GLIBC__
#define LIBC "glibc"
#else
#define LIBC "musl"
#endif

static void check_served(struct __test_metadata *_metadata, const struct tls_ops *ops,
			 int (*registered)(uint64_t *), int (*kfd)(void))
{
	unsigned long long fi_lookups, fi_allocs;
	struct kstls_stats before, after;
	char why[160] = "";
	uint64_t id = 0;
	int fd;

	ASSERT_EQ(0, registered(&id));
	ASSERT_LE(KSTLS_MODULE_ID_MIN, id);
	fd = kfd();
	ASSERT_LE(0, fd) TH_LOG("kstls_fd: %s", strerror(-fd));
	ASSERT_EQ(0, tls_stats(fd, id, &before));

	ASSERT_EQ(0, tls_run_threads(ops, why, sizeof(why))) TH_LOG("%s", why);
	ASSERT_EQ(0, tls_stats(fd, id, &after));
	/* One block per thread and module, every access a kernel lookup or a cache hit. */
	EXPECT_EQ(before.allocs + NTHREADS, after.allocs);
	EXPECT_LE(after.allocs, after.lookups);
	EXPECT_LE(before.lookups + NTHREADS, after.lookups);

	/* The main thread registered the module: its block was made then, from its host block
	 * (the module's constructor wrote nothing), so it is fresh and no new one is made now. */
	ASSERT_EQ(0, ops->check_fresh());
	ops->set(42);
	ASSERT_EQ(0, ops->check(42));
	ASSERT_EQ(0, tls_stats(fd, id, &after));
	EXPECT_EQ(before.allocs + NTHREADS, after.allocs);
	ASSERT_EQ(0, tls_fdinfo(fd, id, &fi_lookups, &fi_allocs, NULL));
	EXPECT_LE(after.allocs, fi_allocs);
	EXPECT_LE(fi_allocs, fi_lookups);
	ksft_print_msg("%s, %s: module %#llx: %llu lookups, %llu allocs, %llu live blocks; fdinfo: lookups=%llu allocs=%llu\n",
		       LIBC, TLS_DIALECT, (unsigned long long)id, (unsigned long long)after.lookups,
		       (unsigned long long)after.allocs, (unsigned long long)after.blocks, fi_lookups,
		       fi_allocs);
}

TEST(linked_at_startup)
{
	static const struct tls_ops ops = {
		tlsobj_check_fresh, tlsobj_set, tlsobj_check, tlsobj_addr, 4, 0,
	};

	check_served(_metadata, &ops, tlsobj_registered, tlsobj_kstls_fd);
}

TEST(loaded_with_dlopen)
{
	struct tls_ops ops = { .naddr = 4 };
	int (*registered)(uint64_t *);
	int (*kfd)(void);
	void *h = dlopen(tls_lib_path("libtlsobj_dl.so"), RTLD_NOW | RTLD_LOCAL);

	ASSERT_NE(NULL, h) TH_LOG("dlopen: %s", dlerror());
	ASSERT_EQ(0, tls_ops_dlsym(h, "tlsobj_", &ops));
	*(void **)&registered = dlsym(h, "tlsobj_registered");
	*(void **)&kfd = dlsym(h, "tlsobj_kstls_fd");
	ASSERT_NE(NULL, registered);
	ASSERT_NE(NULL, kfd);
	check_served(_metadata, &ops, registered, kfd);
	/* Its own module, not the one linked at start-up. */
	ASSERT_NE((void *)tlsobj_addr(0), ops.addr(0));
	ASSERT_EQ(0, dlclose(h));
}

TEST(both_objects_on_every_thread)
{
	static const struct tls_ops linked = {
		tlsobj_check_fresh, tlsobj_set, tlsobj_check, tlsobj_addr, 4, 0,
	};
	struct tls_ops dl = { .naddr = 4 };
	char why[160] = "";
	void *h = dlopen(tls_lib_path("libtlsobj_dl.so"), RTLD_NOW | RTLD_LOCAL);

	ASSERT_NE(NULL, h) TH_LOG("dlopen: %s", dlerror());
	ASSERT_EQ(0, tls_ops_dlsym(h, "tlsobj_", &dl));
	ASSERT_EQ(0, tls_run_threads(&linked, why, sizeof(why))) TH_LOG("start-up: %s", why);
	ASSERT_EQ(0, tls_run_threads(&dl, why, sizeof(why))) TH_LOG("dlopen: %s", why);
	/* The two objects' variables are distinct. */
	linked.set(7);
	dl.set(9);
	ASSERT_EQ(0, linked.check(7));
	ASSERT_EQ(0, dl.check(9));
	ASSERT_EQ(0, dlclose(h));
}

/* What the object's destructor reported, written to a pipe (it may run in a child at exit). */
struct unload {
	void *addr;
	unsigned long value;
	int modules;
};
static int unload_pipe = -1;

static void on_unload(void *addr, unsigned long value, int modules)
{
	struct unload u = { addr, value, modules };

	if (write(unload_pipe, &u, sizeof(u)) != sizeof(u))
		_exit(99);
}

/* The destructor's report: 0, or -1 when it did not run. */
static int read_unload(int fd, struct unload *u)
{
	return read(fd, u, sizeof(*u)) == sizeof(*u) ? 0 : -1;
}

static void *fresh_thread(void *arg)
{
	unsigned long (*get)(void) = arg;

	return (void *)get();
}

/*
 * The object's first constructor (priority 101) finds it registered already, with the block the
 * registration made for this thread; KSTLS_REGISTER_SELF there returns the same id and registers
 * nothing more; both constructors see one block, whose values stay afterwards; its destructor
 * still runs on that block, registered; another thread starts from the image.
 */
TEST(constructors_run_after_registration)
{
	unsigned long long fi_lookups, fi_allocs;
	const struct co_report *(*report)(void);
	void (*hook)(void (*)(void *, unsigned long, int));
	unsigned long (*get)(void);
	void *(*addr)(void);
	const struct co_report *r;
	int fd, p[2], status;
	struct unload u;
	void *fresh, *early;
	pthread_t t;
	pid_t pid;
	void *h = dlopen(tls_lib_path("libctororder.so"), RTLD_NOW | RTLD_LOCAL);

	ASSERT_NE(NULL, h) TH_LOG("dlopen: %s", dlerror());
	*(void **)&report = dlsym(h, "co_report");
	*(void **)&hook = dlsym(h, "co_on_unload");
	*(void **)&get = dlsym(h, "co_value_get");
	*(void **)&addr = dlsym(h, "co_value_addr");
	ASSERT_TRUE(report && hook && get && addr);
	r = report();
	ASSERT_EQ(1, r->early_modules) TH_LOG("not registered before the first constructor");
	EXPECT_EQ(1, r->early_allocs) TH_LOG("the registering thread's block");
	ASSERT_EQ(0, r->explicit_ret);
	EXPECT_LE(KSTLS_MODULE_ID_MIN, r->id);
	EXPECT_EQ(1, r->after_explicit_modules) TH_LOG("KSTLS_REGISTER_SELF registered again");
	EXPECT_EQ(r->early_addr, r->late_addr);
	EXPECT_EQ(r->early_addr, addr());
	EXPECT_TRUE((char *)r->block <= (char *)addr() && (char *)addr() < (char *)r->block + 4096)
		TH_LOG("co_value at %p, the kstls block at %p", addr(), r->block);
	EXPECT_EQ(1105, r->after_ctors);
	EXPECT_EQ(1100, get()) TH_LOG("the constructors' writes are gone");
	ASSERT_EQ(0, pthread_create(&t, NULL, fresh_thread, get));
	ASSERT_EQ(0, pthread_join(t, &fresh));
	EXPECT_EQ(CO_VALUE_INIT, (unsigned long)fresh);
	fd = -1;
	for (int i = 0, fds[16], n = tls_kstls_fds(fds, 16); i < n; i++)
		if (!tls_fdinfo(fds[i], r->id, &fi_lookups, &fi_allocs, NULL))
			fd = fds[i];
	ASSERT_LE(0, fd) TH_LOG("no fdinfo shows module %#llx", (unsigned long long)r->id);
	EXPECT_EQ(2, fi_allocs);
	EXPECT_LE(fi_allocs, fi_lookups);
	ksft_print_msg("%s, %s: registered before the constructors (module %#llx, fdinfo: lookups=%llu allocs=%llu)\n",
		       LIBC, TLS_DIALECT, (unsigned long long)r->id, fi_lookups, fi_allocs);

	/* At exit (a child, both libcs) and, where the libc unloads, at dlclose. */
	early = r->early_addr;
	hook(on_unload);
	ASSERT_EQ(0, pipe(p));
	unload_pipe = p[1];
	pid = fork();
	ASSERT_LE(0, pid);
	if (pid == 0)
		exit(0);
	ASSERT_EQ(pid, waitpid(pid, &status, 0));
	ASSERT_EQ(0, status);
	ASSERT_EQ(0, read_unload(p[0], &u)) TH_LOG("the destructor did not run at exit");
	EXPECT_EQ(early, u.addr);
	EXPECT_EQ(1100, u.value) TH_LOG("the destructor saw another block");
	EXPECT_EQ(1, u.modules) TH_LOG("unregistered before the destructor");
#ifdef __GLIBC__
	ASSERT_EQ(0, dlclose(h));
	ASSERT_EQ(0, read_unload(p[0], &u)) TH_LOG("the destructor did not run at dlclose");
	EXPECT_EQ(early, u.addr);
	EXPECT_EQ(1100, u.value);
	EXPECT_EQ(1, u.modules);
#else
	(void)h;	/* musl never unloads an object: dlclose runs no destructor */
#endif
	close(p[0]);
	close(p[1]);
}

TEST_HARNESS_MAIN
