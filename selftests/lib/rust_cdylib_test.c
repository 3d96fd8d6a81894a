// SPDX-License-Identifier: GPL-2.0
/*
 * rust_cdylib_test.c - scenario 5 of libkstls: a Rust cdylib (rust_cdylib/) whose thread_local!
 * variables go through __tls_get_addr to its private libkstls, registering itself from an
 * .init_array constructor, loaded by a glibc program with dlopen and used on 8 threads; the
 * kernel's counters show it served them. dlclose runs its .fini_array (unregister) and a second
 * dlopen starts fresh.
 */
#include "kselftest_harness.h"
#include "lib_test.h"

TEST(rust_cdylib_thread_local)
{
	char why[200] = "";
	void *h = dlopen(tls_lib_path("librusttls.so"), RTLD_NOW | RTLD_LOCAL);

	ASSERT_NE(NULL, h) TH_LOG("dlopen: %s", dlerror());
	ASSERT_EQ(0, tls_check_module(h, "rusttls_", 4, 0, why, sizeof(why))) TH_LOG("%s", why);
	ksft_print_msg("Rust cdylib: %s\n", why);
	ASSERT_EQ(0, dlclose(h));

	/* Loaded again: registered again, fresh values on every thread. */
	h = dlopen(tls_lib_path("librusttls.so"), RTLD_NOW | RTLD_LOCAL);
	ASSERT_NE(NULL, h) TH_LOG("dlopen: %s", dlerror());
	ASSERT_EQ(0, tls_check_module(h, "rusttls_", 4, 0, why, sizeof(why))) TH_LOG("again: %s", why);
	ASSERT_EQ(0, dlclose(h));
}

TEST_HARNESS_MAIN
