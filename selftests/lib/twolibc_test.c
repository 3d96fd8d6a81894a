// SPDX-License-Identifier: GPL-2.0
/*
 * twolibc_test.c - scenario 4 of libkstls, two libcs in one process: a glibc program loads
 * libtwolibc.so, a shared object statically linked with musl's libc.a and libkstls.a, with
 * dlopen and with LD_PRELOAD; the object's TLS (general- and local-dynamic, used by musl's own
 * snprintf) works on 8 threads and the kernel's counters show it served them. The same object
 * built without kstls is run in a child process, which must show the breakage (musl's
 * __tls_get_addr reads glibc's thread control block as if it were musl's).
 */
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>

#include "kselftest_harness.h"
#include "lib_test.h"

TEST(dlopen_into_glibc)
{
	char why[200] = "";
	void *h = dlopen(tls_lib_path("libtwolibc.so"), RTLD_NOW | RTLD_LOCAL);

	ASSERT_NE(NULL, h) TH_LOG("dlopen: %s", dlerror());
	ASSERT_EQ(0, tls_check_module(h, "twolibc_", 4, 0, why, sizeof(why))) TH_LOG("%s", why);
	ksft_print_msg("dlopen: %s\n", why);
	ASSERT_EQ(0, dlclose(h));
}

/* The LD_PRELOAD run: this program again, with the object preloaded. */
static int preloaded_main(void)
{
	char why[200] = "";
	int ret = tls_check_module(RTLD_DEFAULT, "twolibc_", 4, 0, why, sizeof(why));

	printf("# LD_PRELOAD: %s%s\n", ret ? "FAILED: " : "", why);
	return ret ? 1 : 0;
}

static int run_child(char *const argv[], char *const envp[])
{
	int status;
	pid_t pid = fork();

	if (pid == 0) {
		execve(argv[0], argv, envp);
		_exit(127);
	}
	if (pid < 0 || waitpid(pid, &status, 0) != pid)
		return -1;
	return status;
}

TEST(ld_preload_into_glibc)
{
	char env[PATH_MAX + 16];
	char self[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	int status;

	ASSERT_LT(0, n);
	self[n] = 0;
	snprintf(env, sizeof(env), "LD_PRELOAD=%s", tls_lib_path("libtwolibc.so"));
	char *const argv[] = { self, "--preloaded", NULL };
	char *const envp[] = { env, NULL };

	status = run_child(argv, envp);
	ASSERT_TRUE(WIFEXITED(status)) TH_LOG("status %#x", status);
	ASSERT_EQ(0, WEXITSTATUS(status));
}

/* The exit status of a child that uses the object built without kstls (see the tests below). */
static int run_without_kstls(void)
{
	int status;
	pid_t pid = fork();

	if (pid < 0)
		return -1;
	if (pid == 0) {
		struct tls_ops ops = { .naddr = 4 };
		void *h = dlopen(tls_lib_path("libtwolibc_nokstls.so"), RTLD_NOW | RTLD_LOCAL);

		if (!h || tls_ops_dlsym(h, "twolibc_", &ops))
			_exit(100);
		int fresh = ops.check_fresh();

		ops.set(3);
		_exit(fresh ? 10 + fresh : ops.check(3) ? 20 + ops.check(3) : 0);
	}
	return waitpid(pid, &status, 0) == pid ? status : -1;
}

#ifndef TLS_DIALECT_gnu2
/*
 * The same object without kstls, in a child: its TLS is broken, because musl's __tls_get_addr
 * takes glibc's thread control block and dtv for musl's. Which of glibc's dtv words it reads
 * for the object's decides how: wrong values (the .tdata image is not where it looks, exit
 * 11..13 or 21..23) or a fault at the first access (SIGSEGV, SIGBUS). Either is the breakage
 * kstls exists to mend; a TLS that works, or an object that does not load (exit 100), fails.
 */
TEST(without_kstls_the_objects_tls_is_broken)
{
	int status = run_without_kstls();

	ASSERT_NE(-1, status);
	if (WIFSIGNALED(status)) {
		ksft_print_msg("without kstls: the glibc process died of signal %d (%s) in the object's TLS\n",
			       WTERMSIG(status), strsignal(WTERMSIG(status)));
		ASSERT_TRUE(WTERMSIG(status) == SIGSEGV || WTERMSIG(status) == SIGBUS);
		return;
	}
	ASSERT_TRUE(WIFEXITED(status)) TH_LOG("status %#x", status);
	ASSERT_NE(100, WEXITSTATUS(status)) TH_LOG("libtwolibc_nokstls.so could not be loaded");
	ASSERT_NE(0, WEXITSTATUS(status)) TH_LOG("the object's TLS worked without kstls");
	ksft_print_msg("without kstls: wrong TLS values (check %d): .tdata not initialised or shared\n",
		       WEXITSTATUS(status));
	/* With kstls the same accesses work: the two tests above. */
}
#else
/*
 * Built with TLS descriptors, the same object without kstls works: glibc's dynamic linker fills
 * its descriptors with glibc's own resolvers, so musl's __tls_get_addr never runs and the
 * object's variables live in glibc's blocks. With kstls they live in the kernel's (the tests
 * above); this records the difference between the dialects.
 */
TEST(without_kstls_glibc_resolves_the_descriptors)
{
	int status = run_without_kstls();

	ASSERT_NE(-1, status);
	ASSERT_TRUE(WIFEXITED(status)) TH_LOG("status %#x", status);
	ASSERT_EQ(0, WEXITSTATUS(status)) TH_LOG("check %d", WEXITSTATUS(status));
	ksft_print_msg("without kstls: glibc's descriptors serve the object's TLS\n");
}
#endif

int main(int argc, char **argv)
{
	if (argc > 1 && !strcmp(argv[1], "--preloaded"))
		return preloaded_main();
	return test_harness_run(argc, argv);
}
