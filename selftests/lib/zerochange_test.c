// SPDX-License-Identifier: GPL-2.0
/*
 * zerochange_test.c - a shared object changed in nothing (zerochange.c: thread-local data and a
 * constructor that writes it, no kstls call, no kstls header), built with this libc's compiler
 * and linked with kstls.pc's Libs, is served by kstls: loaded at start-up (DT_NEEDED) and with
 * dlopen, its constructor's writes are what the loading thread reads, another thread starts from
 * the image, and the kernel's fdinfo shows its blocks and lookups. It exports nothing of
 * libkstls's. Built for glibc and musl, in both TLS dialects.
 */
#include "kselftest_harness.h"
#include "lib_test.h"

int zc_get_counter(void);

struct zc {
	int (*counter)(void);
	const char *(*name)(void);
	long (*local)(void);
	void *(*addr)(void);
};

struct seen {
	const struct zc *zc;
	int counter;
	long local;
	char name[32];
	void *addr;
};

static void *look(void *arg)
{
	struct seen *s = arg;

	s->counter = s->zc->counter();
	s->local = s->zc->local();
	snprintf(s->name, sizeof(s->name), "%s", s->zc->name());
	s->addr = s->zc->addr();
	return NULL;
}

static int zc_from(void *h, struct zc *zc)
{
	*(void **)&zc->counter = dlsym(h, "zc_get_counter");
	*(void **)&zc->name = dlsym(h, "zc_get_name");
	*(void **)&zc->local = dlsym(h, "zc_get_local");
	*(void **)&zc->addr = dlsym(h, "zc_addr");
	return zc->counter && zc->name && zc->local && zc->addr ? 0 : -1;
}

/* The module's counters over every kstls context of the process: allocs and lookups. */
static int served(unsigned long long *lookups, unsigned long long *allocs, int *modules)
{
	int fds[16], n = tls_kstls_fds(fds, 16);

	*lookups = *allocs = 0;
	*modules = 0;
	for (int i = 0; i < n; i++) {
		unsigned long long l, a;
		int m;

		if (!tls_fdinfo(fds[i], 0, &l, &a, &m)) {
			*lookups += l;
			*allocs += a;
			*modules += m;
		}
	}
	return n;
}

static void check(struct __test_metadata *_metadata, void *h, const char *how)
{
	unsigned long long l0, a0, l1, a1;
	struct seen main_seen, other;
	struct zc zc;
	pthread_t t;
	int m0, m1;

	ASSERT_EQ(0, zc_from(h, &zc)) TH_LOG("dlsym: %s", dlerror());
	main_seen = (struct seen){ .zc = &zc };
	/* First (in the harness's forked child this adopts the parent's context), then count. */
	look(&main_seen);
	ASSERT_LT(0, served(&l0, &a0, &m0)) TH_LOG("no /dev/kstls fd in the process");
	/* The constructor ran on this thread: its writes, in the block registration gave it. */
	EXPECT_EQ(42, main_seen.counter);
	EXPECT_STREQ("constructed", main_seen.name);
	EXPECT_EQ(15, main_seen.local);
	other = (struct seen){ .zc = &zc };
	ASSERT_EQ(0, pthread_create(&t, NULL, look, &other));
	ASSERT_EQ(0, pthread_join(t, NULL));
	EXPECT_EQ(41, other.counter);
	EXPECT_STREQ("", other.name);
	EXPECT_EQ(5, other.local);
	EXPECT_NE(main_seen.addr, other.addr);
	served(&l1, &a1, &m1);
	/* The new thread's block came from the kernel, and its accesses went there. */
	EXPECT_EQ(a0 + 1, a1);
	EXPECT_LE(l0 + 1, l1);
	EXPECT_LE(a1, l1);
	EXPECT_LE(1, m1);
	/* libkstls stays private to the object. */
	EXPECT_EQ(NULL, dlsym(h, "kstls_register_self"));
	EXPECT_EQ(NULL, dlsym(h, "kstls_tlsdesc"));
	ksft_print_msg("%s, %s, %s: constructor's writes kept, fdinfo: %d module(s), lookups=%llu allocs=%llu\n",
		       ZC_LIBC, TLS_DIALECT, how, m1, l1, a1);
}

TEST(linked_at_startup)
{
	check(_metadata, RTLD_DEFAULT, "DT_NEEDED");
}

TEST(loaded_with_dlopen)
{
	char name[64];
	void *h;

	snprintf(name, sizeof(name), "libzerochange_%s_dl.so", ZC_LIBC);
	h = dlopen(tls_lib_path(name), RTLD_NOW | RTLD_LOCAL);
	ASSERT_NE(NULL, h) TH_LOG("dlopen: %s", dlerror());
	check(_metadata, h, "dlopen");
}

#ifdef __GLIBC__
/*
 * An object that also reaches its TLS the initial-exec way (DF_STATIC_TLS) is not registered:
 * those accesses would keep going to the host's block while the others moved to kstls. It
 * opens no kstls context and its TLS stays the host's, constructor's writes included.
 */
TEST(initial_exec_module_left_to_the_host)
{
	int fds[16], before = tls_kstls_fds(fds, 16);
	int (*ie)(void);
	struct zc zc;
	void *h = dlopen(tls_lib_path("libzerochange_ie.so"), RTLD_NOW | RTLD_LOCAL);

	ASSERT_NE(NULL, h) TH_LOG("dlopen: %s", dlerror());
	ASSERT_EQ(0, zc_from(h, &zc));
	*(void **)&ie = dlsym(h, "zc_get_ie");
	ASSERT_NE(NULL, ie);
	EXPECT_EQ(42, zc.counter());
	EXPECT_EQ(10, ie());
	EXPECT_EQ(before, tls_kstls_fds(fds, 16)) TH_LOG("registered with kstls");
}
#endif

int main(int argc, char **argv)
{
	/* Linked at start-up: referenced, so that the linker keeps the DT_NEEDED entry. */
	if (argc < 0)
		return zc_get_counter();
	return test_harness_run(argc, argv);
}
