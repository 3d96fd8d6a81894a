// SPDX-License-Identifier: GPL-2.0
/*
 * dso_test.c - scenarios 1 and 2 of libkstls: a libc-free shared object with general- and
 * local-dynamic TLS (tlsobj.c, libkstls.a linked in privately, registering itself from its
 * constructor) in a dynamically linked program, loaded at start-up (DT_NEEDED) and with dlopen.
 * Built twice: glibc_dso_test (gcc) and musl_dso_test (musl-gcc), the same shared objects.
 * After each run the kernel's counters (KSTLS_IOC_STATS on the object's own context) must show
 * that the kernel served the accesses: one block per thread, at least as many lookups.
 *
 * The kselftest harness runs each test in a forked child: every test starts with the library's
 * fork adoption (the inherited fd answers EPERM, the child adopts the parent's context).
 */
#include "kselftest_harness.h"
#include "lib_test.h"
#include "tlsobj.h"

#ifdef __GLIBC__
#define LIBC "glibc"
#else
#define LIBC "musl"
#endif

static void check_served(struct __test_metadata *_metadata, const struct tls_ops *ops,
			 int (*registered)(uint64_t *), int (*kfd)(void))
{
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
	ksft_print_msg("%s: module %#llx: %llu lookups, %llu allocs, %llu live blocks\n", LIBC,
		       (unsigned long long)id, (unsigned long long)after.lookups,
		       (unsigned long long)after.allocs, (unsigned long long)after.blocks);
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

TEST_HARNESS_MAIN
