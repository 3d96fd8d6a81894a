// SPDX-License-Identifier: GPL-2.0
/*
 * kstls_run_errors_test.c - what kstls-run cannot serve gets a clear message and a non-zero
 * exit before the program runs (hello_prog, static_prog and musl_prog print "hello from the
 * program" when they do): no /dev/kstls, a static program, a musl-hosted program, a set-user-ID
 * program, a script whose interpreter is static, a missing audit library, a program not found,
 * a file that is no program, a usage error.
 */
#include "kselftest_harness.h"
#include "run_harness.h"

static char out[OUT_LEN];

#define RUN(...) run_args(NULL, out, sizeof(out), __VA_ARGS__, NULL)
#define HELLO "hello from the program"

/* @cmd's exit status is @status, its message says @msg, and the program did not run. */
#define EXPECT_REFUSED(status, msg, ...)                                              \
	do {                                                                          \
		EXPECT_EQ(status, RUN(__VA_ARGS__)) show(out);                        \
		EXPECT_NE(NULL, strstr(out, msg)) show(out);                          \
		EXPECT_EQ(NULL, strstr(out, HELLO)) show(out);                        \
		note(out);                                                            \
	} while (0)

/* The message, on "#" lines. */
static void note(const char *out)
{
	for (const char *l = out; *l;) {
		const char *e = strchrnul(l, '\n');

		ksft_print_msg("%.*s\n", (int)(e - l), l);
		l = *e ? e + 1 : e;
	}
}

/* A scratch directory of this test, removed with what it holds. */
FIXTURE(scratch) {
	char dir[64];
	char path[128];
};

FIXTURE_SETUP(scratch)
{
	snprintf(self->dir, sizeof(self->dir), "/tmp/kstls-run-errors.%d", getpid());
	ASSERT_EQ(0, mkdir(self->dir, 0755));
	self->path[0] = 0;
}

FIXTURE_TEARDOWN(scratch)
{
	if (self->path[0])
		unlink(self->path);
	rmdir(self->dir);
}

/* Copies @src to @dst with mode @mode. */
static int copy_file(const char *src, const char *dst, mode_t mode)
{
	static char buf[1 << 20];
	int in = open(src, O_RDONLY), o;
	ssize_t n = in < 0 ? -1 : read(in, buf, sizeof(buf));

	if (in >= 0)
		close(in);
	o = open(dst, O_WRONLY | O_CREAT | O_TRUNC, mode);
	if (n <= 0 || o < 0 || write(o, buf, n) != n)
		return -1;
	close(o);
	return chmod(dst, mode);
}

TEST(the_programs_run_without_kstls_run)
{
	/* The baseline: these programs do print the line the other tests look for. */
	EXPECT_EQ(0, RUN(PROG("hello_prog"))) show(out);
	EXPECT_NE(NULL, strstr(out, HELLO));
	EXPECT_EQ(0, RUN(KSTLS_RUN, PROG("hello_prog"))) show(out);
	EXPECT_NE(NULL, strstr(out, HELLO));
	EXPECT_EQ(0, RUN(PROG("static_prog"))) show(out);
	EXPECT_NE(NULL, strstr(out, HELLO));
}

TEST(no_device)
{
	static const char hidden[] = "/dev/kstls.hidden-by-kstls_run_errors_test";
	int status;

	if (geteuid())
		SKIP(return, "hiding /dev/kstls needs root");
	/* The module stays loaded: its device node is out of the way for one run. */
	ASSERT_EQ(0, rename("/dev/kstls", hidden));
	status = RUN(KSTLS_RUN, PROG("hello_prog"));
	ASSERT_EQ(0, rename(hidden, "/dev/kstls"));
	EXPECT_EQ(1, status) show(out);
	EXPECT_NE(NULL, strstr(out, "kstls-run: /dev/kstls: No such file or directory: the kstls "
			       "module is not loaded")) show(out);
	EXPECT_EQ(NULL, strstr(out, HELLO)) show(out);
}

TEST(static_program)
{
	EXPECT_REFUSED(1, "static_prog: a static program: it has no dynamic linker, hence no LD_AUDIT",
		       KSTLS_RUN, PROG("static_prog"));
}

TEST(musl_program)
{
	EXPECT_REFUSED(1, "musl_prog: a musl-hosted program (dynamic linker /lib/ld-musl-x86_64.so.1): "
		       "musl has no LD_AUDIT", KSTLS_RUN, PROG("musl_prog"));
}

TEST_F(scratch, setuid_program)
{
	if (geteuid())
		SKIP(return, "making a set-user-ID program of another user needs root");
	snprintf(self->path, sizeof(self->path), "%s/hello", self->dir);
	ASSERT_EQ(0, copy_file(PROG("hello_prog"), self->path, 0755));
	ASSERT_EQ(0, chown(self->path, 65534, 65534));
	ASSERT_EQ(0, chmod(self->path, 04755));
	EXPECT_REFUSED(1, "hello: a set-user-ID program (owner uid 65534): the dynamic linker ignores "
		       "LD_AUDIT in secure-execution mode", KSTLS_RUN, self->path);
}

TEST_F(scratch, script_with_a_static_interpreter)
{
	char script[256];
	int fd;

	snprintf(self->path, sizeof(self->path), "%s/script", self->dir);
	snprintf(script, sizeof(script), "#!%s\n", PROG("static_prog"));
	fd = open(self->path, O_WRONLY | O_CREAT | O_TRUNC, 0755);
	ASSERT_LE(0, fd);
	ASSERT_EQ((ssize_t)strlen(script), write(fd, script, strlen(script)));
	close(fd);
	EXPECT_REFUSED(1, "static_prog: a static program", KSTLS_RUN, self->path);
}

TEST_F(scratch, missing_audit_library)
{
	/* kstls-run alone, without libkstls-audit.so next to it or in ../lib/kstls/. */
	snprintf(self->path, sizeof(self->path), "%s/kstls-run", self->dir);
	ASSERT_EQ(0, copy_file(KSTLS_RUN, self->path, 0755));
	EXPECT_REFUSED(1, "kstls-run: the audit library libkstls-audit.so is missing", self->path,
		       PROG("hello_prog"));
}

TEST(program_not_found)
{
	EXPECT_REFUSED(127, "kstls-run: no-such-program-here: command not found in PATH", KSTLS_RUN,
		       "no-such-program-here");
	EXPECT_REFUSED(127, "kstls-run: /no/such/program: No such file or directory", KSTLS_RUN,
		       "/no/such/program");
}

TEST_F(scratch, not_an_elf_program)
{
	int fd;

	snprintf(self->path, sizeof(self->path), "%s/text", self->dir);
	fd = open(self->path, O_WRONLY | O_CREAT | O_TRUNC, 0755);
	ASSERT_LE(0, fd);
	ASSERT_EQ(6, write(fd, "hello\n", 6));
	close(fd);
	EXPECT_REFUSED(1, "text: not an ELF program", KSTLS_RUN, self->path);
}

TEST(usage)
{
	EXPECT_REFUSED(2, "usage: kstls-run [--strict] [--stats[=FILE]] [--] PROG [ARG...]", KSTLS_RUN);
	EXPECT_REFUSED(2, "kstls-run: unknown option --bogus", KSTLS_RUN, "--bogus", PROG("hello_prog"));
	EXPECT_REFUSED(2, "--stats= needs a file name", KSTLS_RUN, "--stats=", PROG("hello_prog"));
}

TEST_HARNESS_MAIN
