// SPDX-License-Identifier: GPL-2.0
/*
 * canary_fail_test.c - a kselftest harness program with one passing and one failing case, so
 * that scripts/test-runner.sh can prove a failing selftest fails the run. Built with
 * -DCANARY_PASS, the second case passes too (the runner's clean boot runs that build as
 * canary_pass_test).
 */

#include "kselftest_harness.h"

TEST(arithmetic)
{
	ASSERT_EQ(2, 1 + 1);
}

TEST(canary)
{
#ifdef CANARY_PASS
	EXPECT_EQ(1, 1);
#else
	EXPECT_EQ(1, 2)
	{
		TH_LOG("this case fails on purpose");
	}
#endif
}

TEST_HARNESS_MAIN
