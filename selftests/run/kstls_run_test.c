// SPDX-License-Identifier: GPL-2.0
/*
 * kstls_run_test.c - kstls-run serves the dynamic TLS of programs and objects built without
 * kstls: the programs of build/selftests/run check from inside that their objects' variables
 * are not in glibc's blocks and what the kstls context (fdinfo) holds; this test checks their
 * exit status and what kstls-run --stats reports: objects served at start-up and by dlopen, lazy
 * and bind-now, an exact count in strict mode, initial-exec users left on the host, one object
 * reaching another's TLS, TLS descriptors, fork and a failed dlopen, objects that already use
 * libkstls left to it, an LD_AUDIT of the user's kept. The 100-module churn and the bad input
 * have tests of their own (kstls_run_churn_test, kstls_run_errors_test).
 */
#include "kselftest_harness.h"
#include "run_harness.h"

static char out[OUT_LEN];
static char *bind_now_env[] = { "LD_BIND_NOW=1", NULL };
static char *other_audit[] = { "LD_AUDIT=/nonexistent/libother-audit.so", NULL };

#define RUN(env, ...) run_args(env, out, sizeof(out), __VA_ARGS__, NULL)

/* The served module @name: its counters, and they make sense (every first touch a lookup). */
#define ASSERT_SERVED(name, path, lookups, allocs)                                         \
	do {                                                                               \
		ASSERT_EQ(0, served_counts(out, name, path, &(lookups), &(allocs)))        \
		{                                                                          \
			show(out);                                                         \
		}                                                                          \
		EXPECT_LE(allocs, lookups);                                                \
	} while (0)

TEST(startup_and_dlopen_objects_served)
{
	unsigned long long lookups, allocs;
	char line[512];

	/* The program checks its variables against glibc's blocks and the context's fdinfo. */
	ASSERT_EQ(0, RUN(NULL, KSTLS_RUN, "--stats", PROG("served_prog"))) show(out);
	/* One block per thread: 8 threads and the main thread, for each object. */
	ASSERT_SERVED("libplain.so", "kstls", lookups, allocs);
	EXPECT_EQ(9, allocs);
	ASSERT_SERVED("libplain_dl.so", "kstls", lookups, allocs);
	EXPECT_EQ(9, allocs);
	/* libc.so.6 reaches its own TLS with initial-exec code: left on the host. */
	ASSERT_NE(NULL, stats_line(out, "libc.so.6", line, sizeof(line))) show(out);
	EXPECT_NE(NULL, strstr(line, ": host: initial-exec access to its own TLS (R_X86_64_TPOFF64"))
		TH_LOG("%s", line);
	EXPECT_NE(NULL, strstr(out, "]: 3 modules with TLS, 2 served by kstls\n")) show(out);
	EXPECT_NE(NULL, strstr(out, "# fdinfo: modules:\t2\n")) show(out);
}

TEST(without_kstls_run_the_host_serves)
{
	/* The same program's checks tell the two apart: without kstls-run it is all glibc's. */
	ASSERT_EQ(0, RUN(NULL, PROG("served_prog"), "--host")) show(out);
	EXPECT_EQ(NULL, strstr(out, "kstls-run[")) show(out);
}

TEST(bind_now)
{
	unsigned long long lookups, allocs;

	/* LD_BIND_NOW: the PLT slot of __tls_get_addr goes through elf_machine_rela's IRELATIVE. */
	ASSERT_EQ(0, RUN(bind_now_env, KSTLS_RUN, "--stats",
			 PROG("served_prog"))) show(out);
	ASSERT_SERVED("libplain.so", "kstls", lookups, allocs);
	ASSERT_SERVED("libplain_dl.so", "kstls", lookups, allocs);
}

TEST(stats_to_a_file)
{
	char path[64], file[OUT_LEN];
	unsigned long long lookups, allocs;
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/tmp/kstls-run-stats.%d", getpid());
	snprintf(file, sizeof(file), "--stats=%s", path);
	ASSERT_EQ(0, RUN(NULL, KSTLS_RUN, file, PROG("served_prog"))) show(out);
	EXPECT_EQ(NULL, strstr(out, "kstls-run[")) show(out);
	fd = open(path, O_RDONLY);
	ASSERT_LE(0, fd);
	n = read(fd, file, sizeof(file) - 1);
	close(fd);
	unlink(path);
	ASSERT_LT(0, n);
	file[n] = 0;
	memcpy(out, file, n + 1);
	ASSERT_SERVED("libplain.so", "kstls", lookups, allocs);
	EXPECT_EQ(9, allocs);
}

TEST(strict_counts_every_access)
{
	unsigned long long lookups, allocs;

	/* count_prog makes exactly 1000 accesses to libcount.so's TLS on one thread. */
	ASSERT_EQ(0, RUN(NULL, KSTLS_RUN, "--strict", "--stats", PROG("count_prog"), "1000"))
		show(out);
	ASSERT_SERVED("libcount.so", "strict", lookups, allocs);
	EXPECT_EQ(1000, lookups);
	EXPECT_EQ(1, allocs);
	EXPECT_NE(NULL, strstr(out, "(strict: every access a kernel lookup)")) show(out);

	/* Without --strict the cache answers all but the first few. */
	ASSERT_EQ(0, RUN(NULL, KSTLS_RUN, "--stats", PROG("count_prog"), "1000")) show(out);
	ASSERT_SERVED("libcount.so", "kstls", lookups, allocs);
	EXPECT_EQ(1, allocs);
	EXPECT_GT(1000, lookups);
	ksft_print_msg("1000 accesses: %llu kernel lookups without --strict\n", lookups);
}

TEST(initial_exec_users_left_on_the_host)
{
	char line[512];

	/* The program checks that each module's two kinds of access agree. */
	ASSERT_EQ(0, RUN(NULL, KSTLS_RUN, "--stats", PROG("mixed_prog"))) show(out);
	ASSERT_NE(NULL, stats_line(out, "libmixed.so", line, sizeof(line))) show(out);
	EXPECT_NE(NULL, strstr(line, ": host: initial-exec access to its own TLS "
			       "(R_X86_64_TPOFF64 against 'mixed_ie')")) TH_LOG("%s", line);
	/* Its variable is read by the executable's initial-exec code. */
	ASSERT_NE(NULL, stats_line(out, "libexpvar.so", line, sizeof(line))) show(out);
	EXPECT_NE(NULL, strstr(line, ": host: the executable reaches its TLS with initial-exec "
			       "(R_X86_64_TPOFF64 against 'expvar')")) TH_LOG("%s", line);
}

TEST(another_module_reaches_a_served_module)
{
	unsigned long long lookups, allocs;

	/* libxuser.so (loaded first, no TLS of its own) reaches libxexport.so's variable. */
	ASSERT_EQ(0, RUN(NULL, KSTLS_RUN, "--stats", PROG("cross_prog"))) show(out);
	ASSERT_SERVED("libxexport.so", "kstls", lookups, allocs);
	/* Both dlopened, the exporting one first. */
	ASSERT_EQ(0, RUN(NULL, KSTLS_RUN, "--stats", PROG("cross_dl_prog"))) show(out);
	ASSERT_SERVED("libxexport.so", "kstls", lookups, allocs);
	/* And without kstls-run the programs see glibc's blocks. */
	ASSERT_EQ(0, RUN(NULL, PROG("cross_prog"), "--host")) show(out);
}

TEST(tls_descriptors)
{
	unsigned long long lookups, allocs;
	char line[512];

	/* libgnu2.so: tlsobj.c with -mtls-dialect=gnu2, lazy (its descriptors in DT_JMPREL). */
	ASSERT_EQ(0, RUN(NULL, KSTLS_RUN, "--stats", PROG("gnu2_prog"))) show(out);
	ASSERT_NE(NULL, stats_line(out, "libgnu2.so", line, sizeof(line))) show(out);
	if (strstr(line, ": host: ")) {
		/* This libkstls has no TLS descriptor resolver: the module stays glibc's. */
		EXPECT_NE(NULL, strstr(line, ": host: TLSDESC resolver unavailable")) TH_LOG("%s", line);
		EXPECT_NE(NULL, strstr(out, "variables in the host's block")) show(out);
		ksft_print_msg("TLSDESC resolver unavailable: libgnu2.so left on the host\n");
		return;
	}
	ASSERT_SERVED("libgnu2.so", "kstls", lookups, allocs);
	EXPECT_EQ(9, allocs);
	EXPECT_NE(NULL, strstr(out, "variables in a kstls block")) show(out);
	/* Bind-now: the descriptors' IRELATIVE entries go through elf_machine_rela. */
	ASSERT_EQ(0, RUN(bind_now_env, KSTLS_RUN, "--stats", PROG("gnu2_prog"), "kstls")) show(out);
	ASSERT_SERVED("libgnu2.so", "kstls", lookups, allocs);
	/* Every descriptor call a kernel lookup in strict mode. */
	ASSERT_EQ(0, RUN(NULL, KSTLS_RUN, "--strict", "--stats", PROG("count_gnu2_prog"), "1000"))
		show(out);
	ASSERT_SERVED("libcount_gnu2.so", "strict", lookups, allocs);
	EXPECT_EQ(1000, lookups);
	EXPECT_EQ(1, allocs);
}

TEST(fork_and_a_failed_dlopen)
{
	unsigned long long lookups, allocs;
	char line[512];

	/* The child adopts the parent's context; libbroken.so's dlopen fails after it was mapped. */
	ASSERT_EQ(0, RUN(NULL, KSTLS_RUN, "--stats", PROG("fork_prog"))) show(out);
	/* Both processes report at exit: the child first. */
	EXPECT_EQ(2, count_lines(out, "libplain.so: kstls, ")) show(out);
	ASSERT_SERVED("libplain.so", "kstls", lookups, allocs);
	ASSERT_NE(NULL, stats_line(out, "libbroken.so", line, sizeof(line))) show(out);
	ASSERT_SERVED("libbroken.so", "kstls", lookups, allocs);
	EXPECT_EQ(0, allocs);
}

FIXTURE(slow) {};
FIXTURE_SETUP(slow) {}
FIXTURE_TEARDOWN(slow) {}

/* Three programs, one of them a whole harness of its own: longer than the default 30 s. */
TEST_F_TIMEOUT(slow, objects_that_use_libkstls_keep_their_own, 90)
{
	char line[512];

	/* libtlsobj.so has libkstls.a inside: its __tls_get_addr is its own. */
	ASSERT_EQ(0, RUN(NULL, KSTLS_RUN, "--stats", here("glibc_dso_test"))) show(out);
	ASSERT_NE(NULL, stats_line(out, "libtlsobj.so", line, sizeof(line))) show(out);
	EXPECT_NE(NULL, strstr(line, ": host: its dynamic TLS code calls a __tls_get_addr linked "
			       "into it")) TH_LOG("%s", line);
	/* libalign16.so calls libkstls.so's __tls_get_addr@KSTLS_0. */
	ASSERT_EQ(0, RUN(NULL, KSTLS_RUN, "--stats", PROG("withkstls_prog"))) show(out);
	ASSERT_NE(NULL, stats_line(out, "libalign16.so", line, sizeof(line))) show(out);
	EXPECT_NE(NULL, strstr(line, ": host: its __tls_get_addr is __tls_get_addr@KSTLS_0, not "
			       "the dynamic linker's")) TH_LOG("%s", line);
	/* The scenario with dlclose, fork and forwarding, each case in a child of the harness. */
	ASSERT_EQ(0, RUN(NULL, KSTLS_RUN, here("lifecycle_test"))) show(out);
}

TEST(an_existing_ld_audit_is_kept)
{
	unsigned long long lookups, allocs;

	/* kstls-run appends its library; glibc reports the other one (missing here) and goes on. */
	ASSERT_EQ(0, RUN(other_audit, KSTLS_RUN,
			 "--stats", PROG("count_prog"), "10")) show(out);
	EXPECT_NE(NULL, strstr(out, "libother-audit.so")) show(out);
	ASSERT_SERVED("libcount.so", "kstls", lookups, allocs);
}

TEST_HARNESS_MAIN
