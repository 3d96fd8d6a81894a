// SPDX-License-Identifier: GPL-2.0
/*
 * kstls_run_churn_test.c - kstls-run with a program that dlopens and dlcloses 100 distinct
 * modules (copies of one object built without kstls, under 100 names) from 4 threads while 2
 * more threads keep using the TLS of an object linked at start-up (churn_prog checks the values,
 * that each module was served, and that the context holds one module at the end). Each of the
 * 100 is served and released: --stats has a line for each, with its first touches.
 */
#include "kselftest_harness.h"
#include "run_harness.h"

static char out[OUT_LEN];

FIXTURE(churn) {};
FIXTURE_SETUP(churn) {}
FIXTURE_TEARDOWN(churn) {}

/* Under TCG the 100 dlopens take a while: more than the harness's default 30 s per test. */
TEST_F_TIMEOUT(churn, hundred_modules_while_threads_run, 100)
{
	unsigned long long lookups, allocs;
	int served = 0;

	ASSERT_EQ(0, run_args(NULL, out, sizeof(out), KSTLS_RUN, "--stats", PROG("churn_prog"),
			      NULL)) show(out);
	for (int i = 0; i < 100; i++) {
		char name[32];

		snprintf(name, sizeof(name), "libchurn%03d.so", i);
		if (served_counts(out, name, "kstls", &lookups, &allocs)) {
			TH_LOG("%s not served", name);
			continue;
		}
		/* The loader thread and its 2 helpers. */
		EXPECT_EQ(3, allocs) TH_LOG("%s", name);
		served++;
	}
	EXPECT_EQ(100, served) show(out);
	ASSERT_EQ(0, served_counts(out, "libplain.so", "kstls", &lookups, &allocs)) show(out);
	ksft_print_msg("100 modules served and released; libplain.so: %llu lookups, %llu first "
		       "touches\n", lookups, allocs);
}

TEST_HARNESS_MAIN
