// SPDX-License-Identifier: GPL-2.0
/*
 * kstls_canary.c - a module that goes wrong on request, so that scripts/test-runner.sh can prove
 * the guest runner (scripts/vm.sh, scripts/results.py) notices each kind of failure.
 *
 * The parameter "fail" chooses what goes wrong:
 *   none   nothing: the KUnit suite kstls_canary passes (the default)
 *   kunit  its one case fails
 *   warn   a WARN_ON at module init
 *   leak   a kmalloc()ed block is dropped at init without being freed (for kmemleak)
 * Any other value makes the load fail with EINVAL.
 */

#include <kunit/test.h>
#include <linux/bug.h>
#include <linux/module.h>
#include <linux/slab.h>
#include <linux/string.h>

static char *fail = "none";
module_param(fail, charp, 0444);
MODULE_PARM_DESC(fail, "what goes wrong: none, kunit, warn or leak");

static bool canary_fails(const char *what)
{
	return !strcmp(fail, what);
}

static void canary_case(struct kunit *test)
{
	KUNIT_EXPECT_FALSE_MSG(test, canary_fails("kunit"),
			       "kstls_canary.fail=kunit asks this case to fail");
}

static struct kunit_case canary_cases[] = {
	KUNIT_CASE(canary_case),
	{}
};

static struct kunit_suite canary_suite = {
	.name = "kstls_canary",
	.test_cases = canary_cases,
};
kunit_test_suite(canary_suite);

static int __init canary_init(void)
{
	if (!canary_fails("none") && !canary_fails("kunit") && !canary_fails("warn") &&
	    !canary_fails("leak")) {
		pr_err("kstls_canary: unknown fail=%s\n", fail);
		return -EINVAL;
	}
	WARN_ON(canary_fails("warn"));
	/* fail=leak: allocate a block and drop the only pointer to it at once. */
	if (canary_fails("leak") && !kmalloc(100, GFP_KERNEL))
		return -ENOMEM;
	pr_info("kstls_canary: loaded, fail=%s\n", fail);
	return 0;
}

static void __exit canary_exit(void)
{
	pr_info("kstls_canary: unloaded\n");
}

module_init(canary_init);
module_exit(canary_exit);

MODULE_DESCRIPTION("kstls test-runner canary: fails on request");
MODULE_LICENSE("GPL");
