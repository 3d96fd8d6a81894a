// SPDX-License-Identifier: GPL-2.0
/*
 * kstls_run_args_test.c - kstls-run's argument handling, case by case, as kstls-run(1) states
 * it: long program names and paths (longer than PATH_MAX, or a real path that deep), the PATH
 * search (empty elements are the current directory, PATH unset, directories and files without
 * execute permission on the way), a program missing, a directory or not executable, the --stats
 * targets (too long a name, the kernel's longest, relative to the directory at launch when the
 * program changes directory, a directory, a missing directory, a read-only place, an empty name,
 * "-", given twice, left alone when the program is refused), unknown options, "--" and "-", and
 * a bounded random mix of all of these, where kstls-run must never die of a signal. Each case
 * checks the exit status, the message and the stats file, never how kstls-run does it.
 *
 * Every test runs in a scratch directory of its own (its working directory), removed with
 * what it holds. args_prog, copied there as kstls-args-prog where a test needs a program of
 * its own, prints HELLO and its arguments.
 */
#include <dirent.h>
#include <sys/mount.h>

#include "kselftest_harness.h"
#include "run_harness.h"

static char out[OUT_LEN];

#define HELLO "hello from the program"
#define USAGE "usage: kstls-run [--strict] [--stats[=FILE]] [--] PROG [ARG...]"
/* A line of every --stats report. */
#define STATS_LINE " with TLS, "
#define COPY "kstls-args-prog"
/* Long enough for any of these tests under TCG. */
#define SLOW 240

#define RUN(...) run_args(NULL, out, sizeof(out), __VA_ARGS__, NULL)
#define RUN_ENV(env, ...) run_args(env, out, sizeof(out), __VA_ARGS__, NULL)

/* The program ran (exit 0, its line printed) and got @arg as its argument @n. */
#define EXPECT_RAN(status)                                                             \
	do {                                                                           \
		EXPECT_EQ(0, status) show(out);                                        \
		EXPECT_NE(NULL, strstr(out, HELLO)) show(out);                         \
	} while (0)

/* kstls-run exited with @st, said @msg, and the program did not run. */
#define EXPECT_REFUSED(st, msg, status)                                                \
	do {                                                                           \
		EXPECT_EQ(st, status) show(out);                                       \
		EXPECT_NE(NULL, strstr(out, msg)) show(out);                           \
		EXPECT_EQ(NULL, strstr(out, HELLO)) show(out);                         \
	} while (0)

/* @n copies of @s then @tail, in a new string. */
static char *repeat(const char *s, size_t n, const char *tail)
{
	size_t l = strlen(s), t = strlen(tail);
	char *r = malloc(l * n + t + 1);

	if (!r)
		abort();
	for (size_t i = 0; i < n; i++)
		memcpy(r + i * l, s, l);
	memcpy(r + l * n, tail, t + 1);
	return r;
}

/* @a then @b, in a new string. */
static char *cat(const char *a, const char *b)
{
	char *r;

	if (asprintf(&r, "%s%s", a, b) < 0)
		abort();
	return r;
}

/* Copies @src to @dst (relative to the working directory) with mode @mode. */
static int copy_file(const char *src, const char *dst, mode_t mode)
{
	static char buf[1 << 20];
	int in = open(src, O_RDONLY | O_CLOEXEC), o;
	ssize_t n = in < 0 ? -1 : read(in, buf, sizeof(buf));

	if (in >= 0)
		close(in);
	o = open(dst, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
	if (n <= 0 || o < 0 || write(o, buf, n) != n)
		return -1;
	close(o);
	return chmod(dst, mode);
}

/* The content of @name (relative to the working directory), into @buf; -1 if it cannot be
 * read (errno says why). */
static ssize_t slurp(const char *name, char *buf, size_t len)
{
	int fd = open(name, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return -1;
	n = read(fd, buf, len - 1);
	close(fd);
	buf[n > 0 ? n : 0] = 0;
	return n;
}

static int exists(const char *name)
{
	struct stat st;

	return !lstat(name, &st);
}

static int write_file(const char *name, const char *s, mode_t mode)
{
	int fd = open(name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
	ssize_t n = fd < 0 ? -1 : write(fd, s, strlen(s));

	if (fd >= 0)
		close(fd);
	return n == (ssize_t)strlen(s) ? 0 : -1;
}

/* Removes @name under @dfd and what it holds, at any depth (by descriptors, never by a path). */
static void rm_tree(int dfd, const char *name)
{
	int fd = openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	struct dirent *e;
	DIR *d;

	if (fd < 0) {
		unlinkat(dfd, name, 0);
		return;
	}
	fchmod(fd, 0755);
	d = fdopendir(fd);
	if (!d) {
		close(fd);
		return;
	}
	while ((e = readdir(d)))
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
			rm_tree(fd, e->d_name);
	closedir(d);
	unlinkat(dfd, name, AT_REMOVEDIR);
}

/* Makes @levels nested directories of @len-byte names under the working directory and changes
 * into the deepest; 0 or -1. */
static int dive(int levels, size_t len)
{
	char *name = repeat("d", len, "");
	int r = 0;

	for (int i = 0; i < levels && !r; i++)
		r = mkdir(name, 0755) || chdir(name) ? -1 : 0;
	free(name);
	return r;
}

/* The working directory's length: getcwd(NULL, 0) copes with any depth. */
static size_t cwd_len(void)
{
	char *c = getcwd(NULL, 0);
	size_t n = c ? strlen(c) : 0;

	free(c);
	return n;
}

FIXTURE(scratch) {
	char dir[64];
	char copy[PATH_MAX];	/* COPY's absolute path */
};

FIXTURE_SETUP(scratch)
{
	snprintf(self->dir, sizeof(self->dir), "/tmp/kstls-run-args.%d", getpid());
	ASSERT_EQ(0, mkdir(self->dir, 0755));
	ASSERT_EQ(0, chdir(self->dir));
	ASSERT_EQ(0, copy_file(PROG("args_prog"), COPY, 0755));
	snprintf(self->copy, sizeof(self->copy), "%s/%s", self->dir, COPY);
}

FIXTURE_TEARDOWN(scratch)
{
	ASSERT_EQ(0, chdir("/tmp"));
	rm_tree(AT_FDCWD, self->dir);
}

/* --- the program -------------------------------------------------------------------------- */

TEST_F(scratch, the_program_runs_with_its_arguments)
{
	EXPECT_RAN(RUN(KSTLS_RUN, self->copy, "a", "", "b c"));
	EXPECT_NE(NULL, strstr(out, "arg[1]: a\narg[2]: \narg[3]: b c\n")) show(out);
	/* argv[0] is the name as given. */
	EXPECT_NE(NULL, strstr(out, "arg[0]: ")) show(out);
}

TEST_F(scratch, program_name_longer_than_a_file_name)
{
	/* No file has a 300-byte name: searched in PATH, found nowhere. */
	char *name = repeat("n", 300, ""), *msg = cat(name, ": command not found in PATH");

	EXPECT_REFUSED(127, msg, RUN(KSTLS_RUN, name));
	free(name);
	free(msg);
}

TEST_F(scratch, program_path_longer_than_path_max)
{
	/* ././.../kstls-args-prog names a real program, but the kernel takes no path that long. */
	char *path = repeat("./", 2100, COPY), *msg = cat(path, ": File name too long");

	ASSERT_LE(PATH_MAX, strlen(path));
	EXPECT_REFUSED(126, msg, RUN(KSTLS_RUN, path));
	free(path);
	free(msg);
}

TEST_F_TIMEOUT(scratch, program_deeper_than_path_max, SLOW)
{
	char *env[] = { "PATH=/nonexistent:" COPY "dir", NULL }, buf[4096], *rel;
	int top = open(".", O_PATH | O_DIRECTORY | O_CLOEXEC);

	/* 12 levels of 200 bytes, a copy there, 12 more, a copy there: its real path is longer
	 * than PATH_MAX, its path from the middle is not. */
	ASSERT_LE(0, top);
	ASSERT_EQ(0, dive(12, 200));
	ASSERT_EQ(0, mkdir(COPY "dir", 0755));
	ASSERT_EQ(0, copy_file(self->copy, COPY "dir/" COPY, 0755));
	ASSERT_EQ(0, dive(12, 200));
	ASSERT_EQ(0, copy_file(self->copy, COPY, 0755));
	ASSERT_LT(PATH_MAX, cwd_len());

	/* Run by its relative path, from its own directory. */
	EXPECT_RAN(RUN(KSTLS_RUN, "./" COPY, "x"));
	EXPECT_NE(NULL, strstr(out, "arg[0]: ./" COPY "\narg[1]: x\n")) show(out);
	/* --stats to a relative name: the file is named from a working directory deeper than
	 * PATH_MAX, by kstls-run and by the audit library at the program's exit. */
	EXPECT_RAN(RUN(KSTLS_RUN, "--stats=stats.txt", "./" COPY));
	EXPECT_EQ(NULL, strstr(out, STATS_LINE)) show(out);
	EXPECT_LT(0, slurp("stats.txt", buf, sizeof(buf)))
		TH_LOG("stats.txt: %s", strerror(errno));
	EXPECT_NE(NULL, strstr(buf, STATS_LINE)) TH_LOG("stats.txt: %s", buf);

	/* From the middle: by a relative path with slashes, and found through a relative PATH
	 * element. */
	rel = repeat(".", 0, "");
	for (int i = 0; i < 12; i++) {
		char *d = repeat("d", 200, "/"), *r = cat(rel, d);

		free(d);
		free(rel);
		rel = r;
	}
	for (int i = 0; i < 12; i++)
		ASSERT_EQ(0, chdir(".."));
	{
		char *p = cat(rel, COPY);

		ASSERT_GT(PATH_MAX, strlen(p));
		EXPECT_RAN(RUN(KSTLS_RUN, "--stats=stats2.txt", p));
		EXPECT_LT(0, slurp("stats2.txt", buf, sizeof(buf)));
		EXPECT_NE(NULL, strstr(buf, STATS_LINE)) TH_LOG("stats2.txt: %s", buf);
		free(p);
	}
	EXPECT_RAN(RUN_ENV(env, KSTLS_RUN, COPY));
	EXPECT_NE(NULL, strstr(out, "arg[0]: " COPY "\n")) show(out);
	free(rel);
	ASSERT_EQ(0, fchdir(top));
	close(top);
}

TEST_F_TIMEOUT(scratch, kstls_run_deeper_than_path_max, SLOW)
{
	/* kstls-run and its audit library in a directory deeper than PATH_MAX: LD_AUDIT could not
	 * name the library, so kstls-run says it cannot find itself. */
	ASSERT_EQ(0, dive(24, 200));
	ASSERT_EQ(0, copy_file(KSTLS_RUN, "kstls-run", 0755));
	ASSERT_EQ(0, copy_file(here("../kstls-run/libkstls-audit.so"), "libkstls-audit.so", 0755));
	EXPECT_REFUSED(1, "kstls-run: /proc/self/exe: File name too long: cannot find "
		       "libkstls-audit.so", RUN("./kstls-run", self->copy));
}

TEST_F(scratch, program_is_a_directory)
{
	ASSERT_EQ(0, mkdir("dir", 0755));
	EXPECT_REFUSED(126, "kstls-run: ./dir: Is a directory", RUN(KSTLS_RUN, "./dir"));
	EXPECT_REFUSED(126, "kstls-run: /: Is a directory", RUN(KSTLS_RUN, "/"));
}

TEST_F(scratch, program_not_executable)
{
	ASSERT_EQ(0, copy_file(self->copy, "noexec", 0644));
	EXPECT_REFUSED(126, "kstls-run: ./noexec: Permission denied", RUN(KSTLS_RUN, "./noexec"));
	/* Refused before --stats empties its file. */
	EXPECT_REFUSED(126, "kstls-run: ./noexec: Permission denied",
		       RUN(KSTLS_RUN, "--stats=stats.txt", "./noexec"));
	EXPECT_FALSE(exists("stats.txt"));
}

TEST_F(scratch, program_missing)
{
	EXPECT_REFUSED(127, "kstls-run: ./missing: No such file or directory",
		       RUN(KSTLS_RUN, "./missing"));
	EXPECT_REFUSED(127, "kstls-run: nodir/missing: No such file or directory",
		       RUN(KSTLS_RUN, "nodir/missing"));
	EXPECT_REFUSED(127, "kstls-run: kstls-no-such-program: command not found in PATH",
		       RUN(KSTLS_RUN, "--stats=stats.txt", "kstls-no-such-program"));
	EXPECT_FALSE(exists("stats.txt"));
	/* An empty name names no file. */
	EXPECT_REFUSED(127, "kstls-run: : command not found in PATH", RUN(KSTLS_RUN, ""));
}

/* --- PATH --------------------------------------------------------------------------------- */

TEST_F_TIMEOUT(scratch, path_empty_elements_are_the_current_directory, SLOW)
{
	static char *paths[] = { "PATH=:/nonexistent", "PATH=/nonexistent:", "PATH=/nonexistent::/no",
				 "PATH=:", "PATH=" };

	for (int i = 0; i < 5; i++) {
		char *env[] = { paths[i], NULL };

		TH_LOG("%s", paths[i]);
		EXPECT_RAN(RUN_ENV(env, KSTLS_RUN, COPY, "y"));
		EXPECT_NE(NULL, strstr(out, "arg[0]: " COPY "\narg[1]: y\n")) show(out);
	}
	{
		/* The control: no empty element, not found. */
		char *env[] = { "PATH=/nonexistent", NULL };

		EXPECT_REFUSED(127, "kstls-run: " COPY ": command not found in PATH",
			       RUN_ENV(env, KSTLS_RUN, COPY));
	}
}

TEST_F(scratch, path_unset)
{
	char *env[] = { "PATH", NULL }, link[64];
	ssize_t n = readlink("/bin/sh", link, sizeof(link) - 1);

	/* The default search path (/usr/local/bin:/usr/bin:/bin) has no current directory. */
	EXPECT_REFUSED(127, "kstls-run: " COPY ": command not found in PATH",
		       RUN_ENV(env, KSTLS_RUN, COPY));
	/* The guest's sh is busybox's, static, only in /bin: found there and refused. */
	if (n < 0 || (link[n] = 0, !strstr(link, "busybox")) || exists("/usr/bin/sh") ||
	    exists("/usr/local/bin/sh"))
		SKIP(return, "sh is not the guest's busybox in /bin alone");
	EXPECT_REFUSED(1, "kstls-run: /bin/sh: a static program", RUN_ENV(env, KSTLS_RUN, "sh"));
}

TEST_F(scratch, path_skips_directories_and_files_it_cannot_execute)
{
	char *dir_first[] = { "PATH=a:b", NULL }, *noexec_first[] = { "PATH=c:b", NULL };
	char *noexec_only[] = { "PATH=a:c", NULL }, *long_first[2];
	char *too_long = repeat("./", 2100, "");

	ASSERT_EQ(0, mkdir("a", 0755));
	ASSERT_EQ(0, mkdir("a/" COPY, 0755));
	ASSERT_EQ(0, mkdir("b", 0755));
	ASSERT_EQ(0, copy_file(self->copy, "b/" COPY, 0755));
	ASSERT_EQ(0, mkdir("c", 0755));
	ASSERT_EQ(0, copy_file(self->copy, "c/" COPY, 0644));

	EXPECT_RAN(RUN_ENV(dir_first, KSTLS_RUN, COPY));
	EXPECT_RAN(RUN_ENV(noexec_first, KSTLS_RUN, COPY));
	/* Only a file without execute permission: found, and it cannot be executed. */
	EXPECT_REFUSED(126, "kstls-run: c/" COPY ": Permission denied",
		       RUN_ENV(noexec_only, KSTLS_RUN, COPY));
	/* An element too long for the kernel is passed over. */
	long_first[0] = cat("PATH=", too_long);
	long_first[0] = cat(long_first[0], ":b");
	long_first[1] = NULL;
	EXPECT_RAN(RUN_ENV(long_first, KSTLS_RUN, COPY));
	free(too_long);
}

/* --- --stats ------------------------------------------------------------------------------ */

TEST_F(scratch, stats_name_longer_than_path_max)
{
	char *name = repeat("x", 5000, ""), *dots = repeat("./", 2100, "s");
	char *abs = cat("/tmp/", name);
	char *opt[3] = { cat("--stats=", name), cat("--stats=", dots), cat("--stats=", abs) };
	char *huge, *o;

	for (int i = 0; i < 3; i++) {
		char *msg = cat(opt[i], ": File name too long");

		EXPECT_REFUSED(1, msg, RUN(KSTLS_RUN, opt[i], self->copy));
		EXPECT_NE(NULL, strstr(out, "kstls-run: --stats=")) show(out);
		free(msg);
	}
	/* As long as one argument can be (MAX_ARG_STRLEN is 128 KiB): only the message's tail
	 * stays in the output. */
	huge = repeat("x", 120000, "");
	o = cat("--stats=", huge);
	EXPECT_REFUSED(1, "xxxx: File name too long", RUN(KSTLS_RUN, o, self->copy));
	EXPECT_FALSE(exists("s"));
	free(huge);
	free(o);
}

TEST_F(scratch, stats_name_of_the_kernels_longest)
{
	/* 4095 bytes, the longest path the kernel takes, relative: named from the working
	 * directory it is longer, and works all the same. */
	char *name = repeat("./", 2045, "stats"), *opt = cat("--stats=", name), buf[4096];

	ASSERT_EQ(PATH_MAX - 1, strlen(name));
	EXPECT_RAN(RUN(KSTLS_RUN, opt, self->copy));
	EXPECT_LT(0, slurp("stats", buf, sizeof(buf))) TH_LOG("stats: %s", strerror(errno));
	EXPECT_NE(NULL, strstr(buf, STATS_LINE)) TH_LOG("stats: %s", buf);
}

TEST_F(scratch, stats_relative_to_the_launch_directory)
{
	char *env[] = { "ARGS_PROG_CHDIR=sub", NULL }, buf[4096];

	ASSERT_EQ(0, mkdir("sub", 0755));
	EXPECT_RAN(RUN_ENV(env, KSTLS_RUN, "--stats=stats.txt", self->copy));
	EXPECT_LT(0, slurp("stats.txt", buf, sizeof(buf))) TH_LOG("stats.txt: %s", strerror(errno));
	EXPECT_NE(NULL, strstr(buf, STATS_LINE)) TH_LOG("stats.txt: %s", buf);
	EXPECT_FALSE(exists("sub/stats.txt"));
	/* ".." in the name too: from the directory at launch, not the program's. */
	EXPECT_RAN(RUN_ENV(env, KSTLS_RUN, "--stats=sub/../up.txt", self->copy));
	EXPECT_LT(0, slurp("up.txt", buf, sizeof(buf)));
	EXPECT_NE(NULL, strstr(buf, STATS_LINE)) TH_LOG("up.txt: %s", buf);
}

TEST_F(scratch, stats_to_a_directory)
{
	ASSERT_EQ(0, mkdir("dir", 0755));
	EXPECT_REFUSED(1, "kstls-run: --stats=dir: Is a directory",
		       RUN(KSTLS_RUN, "--stats=dir", self->copy));
	EXPECT_REFUSED(1, "kstls-run: --stats=.: Is a directory",
		       RUN(KSTLS_RUN, "--stats=.", self->copy));
}

TEST_F(scratch, stats_in_a_missing_directory)
{
	EXPECT_REFUSED(1, "kstls-run: --stats=nodir/stats: No such file or directory",
		       RUN(KSTLS_RUN, "--stats=nodir/stats", self->copy));
	EXPECT_FALSE(exists("nodir"));
}

TEST_F(scratch, stats_in_an_unwritable_place)
{
	const char *msg;

	ASSERT_EQ(0, mkdir("ro", 0755));
	if (geteuid()) {
		ASSERT_EQ(0, chmod("ro", 0555));
		msg = "kstls-run: --stats=ro/stats: Permission denied";
	} else {
		/* Root writes where permissions say no: a read-only mount stops it. */
		ASSERT_EQ(0, mount("none", "ro", "tmpfs", MS_RDONLY, NULL));
		msg = "kstls-run: --stats=ro/stats: Read-only file system";
	}
	EXPECT_REFUSED(1, msg, RUN(KSTLS_RUN, "--stats=ro/stats", self->copy));
	if (!geteuid()) {
		EXPECT_EQ(0, umount("ro"));
	}
}

TEST_F(scratch, stats_empty_name)
{
	EXPECT_REFUSED(2, "kstls-run: --stats= needs a file name",
		       RUN(KSTLS_RUN, "--stats=", self->copy));
	/* A usage error, found before the program is looked for. */
	EXPECT_REFUSED(2, "kstls-run: --stats= needs a file name",
		       RUN(KSTLS_RUN, "--stats=", "kstls-no-such-program"));
}

TEST_F(scratch, stats_given_twice_the_last_counts)
{
	char buf[4096];

	EXPECT_RAN(RUN(KSTLS_RUN, "--stats=a.txt", "--stats=b.txt", self->copy));
	EXPECT_FALSE(exists("a.txt"));
	EXPECT_LT(0, slurp("b.txt", buf, sizeof(buf)));
	EXPECT_NE(NULL, strstr(buf, STATS_LINE)) TH_LOG("b.txt: %s", buf);
	EXPECT_EQ(NULL, strstr(out, STATS_LINE)) show(out);

	EXPECT_RAN(RUN(KSTLS_RUN, "--stats=c.txt", "--stats", self->copy));
	EXPECT_FALSE(exists("c.txt"));
	EXPECT_NE(NULL, strstr(out, STATS_LINE)) show(out);

	EXPECT_RAN(RUN(KSTLS_RUN, "--stats", "--stats=d.txt", self->copy));
	EXPECT_EQ(NULL, strstr(out, STATS_LINE)) show(out);
	EXPECT_LT(0, slurp("d.txt", buf, sizeof(buf)));
	EXPECT_NE(NULL, strstr(buf, STATS_LINE)) TH_LOG("d.txt: %s", buf);
}

TEST_F(scratch, stats_dash_is_standard_error)
{
	char buf[4096];

	EXPECT_RAN(RUN(KSTLS_RUN, "--stats=-", self->copy));
	EXPECT_NE(NULL, strstr(out, STATS_LINE)) show(out);
	EXPECT_FALSE(exists("-"));
	/* A file named "-" is ./-. */
	EXPECT_RAN(RUN(KSTLS_RUN, "--stats=./-", self->copy));
	EXPECT_EQ(NULL, strstr(out, STATS_LINE)) show(out);
	EXPECT_LT(0, slurp("-", buf, sizeof(buf)));
	EXPECT_NE(NULL, strstr(buf, STATS_LINE)) TH_LOG("-: %s", buf);
}

TEST_F(scratch, stats_file_emptied_only_for_a_program_that_runs)
{
	char buf[4096];

	ASSERT_EQ(0, write_file("stats.txt", "old contents\n", 0644));
	EXPECT_REFUSED(1, "static_prog: a static program",
		       RUN(KSTLS_RUN, "--stats=stats.txt", PROG("static_prog")));
	EXPECT_LT(0, slurp("stats.txt", buf, sizeof(buf)));
	EXPECT_STREQ("old contents\n", buf);
	EXPECT_RAN(RUN(KSTLS_RUN, "--stats=stats.txt", self->copy));
	EXPECT_LT(0, slurp("stats.txt", buf, sizeof(buf)));
	EXPECT_EQ(NULL, strstr(buf, "old contents")) TH_LOG("stats.txt: %s", buf);
	EXPECT_NE(NULL, strstr(buf, STATS_LINE)) TH_LOG("stats.txt: %s", buf);
}

/* --- options ------------------------------------------------------------------------------ */

TEST_F(scratch, unknown_options)
{
	static const char *const bad[] = { "--bogus", "-x", "--strict=1", "--stat", "--stats-file=x",
					   "---", "-strict", "--Stats", "--help=1" };

	for (int i = 0; i < (int)(sizeof(bad) / sizeof(bad[0])); i++) {
		char *msg = cat("kstls-run: unknown option ", bad[i]);

		EXPECT_REFUSED(2, msg, RUN(KSTLS_RUN, bad[i], self->copy));
		EXPECT_NE(NULL, strstr(out, msg)) show(out);
		EXPECT_NE(NULL, strstr(out, USAGE)) show(out);
		free(msg);
	}
}

TEST_F(scratch, double_dash_ends_the_options)
{
	EXPECT_REFUSED(2, USAGE, RUN(KSTLS_RUN, "--"));
	EXPECT_REFUSED(2, USAGE, RUN(KSTLS_RUN, "--strict", "--"));
	EXPECT_REFUSED(127, "kstls-run: --strict: command not found in PATH",
		       RUN(KSTLS_RUN, "--", "--strict"));
	/* Only the first "--" is kstls-run's. */
	EXPECT_RAN(RUN(KSTLS_RUN, "--strict", "--", self->copy, "--", "--stats", "x"));
	EXPECT_NE(NULL, strstr(out, "arg[1]: --\narg[2]: --stats\narg[3]: x\n")) show(out);
	EXPECT_EQ(NULL, strstr(out, STATS_LINE)) show(out);
}

TEST_F(scratch, a_lone_dash_is_a_program_name)
{
	char *env[] = { "PATH=bin", NULL };

	EXPECT_REFUSED(127, "kstls-run: -: command not found in PATH", RUN(KSTLS_RUN, "-"));
	ASSERT_EQ(0, mkdir("bin", 0755));
	ASSERT_EQ(0, copy_file(self->copy, "bin/-", 0755));
	EXPECT_RAN(RUN_ENV(env, KSTLS_RUN, "-", "z"));
	EXPECT_NE(NULL, strstr(out, "arg[0]: -\narg[1]: z\n")) show(out);
}

TEST_F(scratch, options_after_the_program_are_its_own)
{
	EXPECT_RAN(RUN(KSTLS_RUN, self->copy, "--bogus", "--stats", "--help", "--"));
	EXPECT_NE(NULL, strstr(out, "arg[1]: --bogus\narg[2]: --stats\narg[3]: --help\narg[4]: --\n"))
		show(out);
	EXPECT_EQ(NULL, strstr(out, STATS_LINE)) show(out);
	EXPECT_EQ(NULL, strstr(out, "usage:")) show(out);
}

TEST_F(scratch, help)
{
	static char *help[][3] = { { "--help" }, { "-h" }, { "--strict", "--help", COPY } };

	for (int i = 0; i < 3; i++) {
		char *argv[5] = { (char *)KSTLS_RUN, help[i][0], help[i][1], help[i][2], NULL };

		EXPECT_EQ(0, run_cmd(argv, NULL, out, sizeof(out))) show(out);
		EXPECT_EQ(0, strncmp(out, USAGE "\n", strlen(USAGE) + 1)) show(out);
		EXPECT_NE(NULL, strstr(out, "See kstls-run(1).")) show(out);
		EXPECT_EQ(NULL, strstr(out, HELLO)) show(out);
	}
}

/* --- a random mix ------------------------------------------------------------------------- */

#define FUZZ_RUNS 60
#define FUZZ_SECONDS 90
/* Room for a message that names a 128 KiB argument, whole. */
#define FUZZ_OUT (1 << 19)
static char fout[FUZZ_OUT];

/* xorshift64*: the same sequence for a seed on every machine. */
static unsigned long long fuzz_state;

static unsigned int fuzz_next(unsigned int n)
{
	fuzz_state ^= fuzz_state >> 12;
	fuzz_state ^= fuzz_state << 25;
	fuzz_state ^= fuzz_state >> 27;
	return (unsigned int)((fuzz_state * 2685821657736338717ULL) >> 33) % n;
}

/* One element of the array @a, at random. */
#define PICK(a) a[fuzz_next(sizeof(a) / sizeof(a[0]))]

TEST_F_TIMEOUT(scratch, random_argument_vectors, FUZZ_SECONDS + SLOW)
{
	const char *seed_env = getenv("KSTLS_RUN_ARGS_SEED");
	unsigned long long seed = seed_env ? strtoull(seed_env, NULL, 0) : 20261201;
	char *long_name = repeat("x", 5000, ""), *dots = repeat("./", 2100, "s");
	char *dots_prog = repeat("./", 2100, COPY), *long_prog = repeat("n", 300, "");
	char *huge = repeat("x", 120000, "");
	/* Half of the draws from what works, half from what does not. */
	const char *good_opts[] = { "--strict", "--stats", "--stats=-", "--stats=f.txt",
				    "--stats=./-", "--stats=sub/../g.txt", "--" };
	const char *bad_opts[] = { "--stats=", "--stats=dir", "--stats=nodir/f",
				   cat("--stats=", long_name), cat("--stats=", dots),
				   cat("--stats=", huge), "--bogus", "-x", "-", "--help", "-h" };
	const char *good_progs[] = { self->copy, COPY, "./" COPY };
	const char *bad_progs[] = { "kstls-no-such-program", "./dir", "./noexec", "noexec",
				    long_prog, dots_prog, PROG("static_prog"), "", "-", "--strict",
				    "dir" };
	const char *args[] = { "a", "--strict", "--", "", "--stats=q", long_name };
	char *paths[] = { "PATH=:/nonexistent", "PATH=/nonexistent", "PATH", "PATH=.:", "PATH=" };
	int runs = 0, ran = 0, bad = 0;
	time_t t0 = time(NULL);

	ASSERT_EQ(0, mkdir("dir", 0755));
	ASSERT_EQ(0, mkdir("sub", 0755));
	ASSERT_EQ(0, copy_file(self->copy, "noexec", 0644));
	ksft_print_msg("seed %llu (KSTLS_RUN_ARGS_SEED=n for another)\n", seed);
	fuzz_state = seed ? seed : 1;
	while (runs < FUZZ_RUNS && time(NULL) - t0 < FUZZ_SECONDS) {
		char *argv[16], *env[2] = { paths[fuzz_next(5)], NULL };
		int argc = 0, status;

		argv[argc++] = (char *)KSTLS_RUN;
		for (int n = fuzz_next(4); n > 0; n--)
			argv[argc++] = (char *)(fuzz_next(2) ? PICK(good_opts) : PICK(bad_opts));
		if (fuzz_next(10))
			argv[argc++] = (char *)(fuzz_next(2) ? PICK(good_progs) : PICK(bad_progs));
		for (int n = fuzz_next(4); n > 0; n--)
			argv[argc++] = (char *)args[fuzz_next(sizeof(args) / sizeof(args[0]))];
		argv[argc] = NULL;
		status = run_cmd(argv, env, fout, FUZZ_OUT);
		runs++;
		if (status == 0 && strstr(fout, HELLO)) {
			ran++;
			continue;
		}
		/* Not run: a message (or --help's usage, with status 0) and no signal. */
		if (status >= 0 && status < 128 && !strstr(fout, HELLO) &&
		    (strstr(fout, "kstls-run: ") || strstr(fout, USAGE)) &&
		    (status || !strncmp(fout, USAGE, strlen(USAGE))))
			continue;
		ksft_print_msg("run %d: status %d with %s:\n", runs, status, env[0]);
		for (int i = 1; i < argc; i++)
			ksft_print_msg("  argv[%d] = '%.80s'%s (%zu bytes)\n", i, argv[i],
				       strlen(argv[i]) > 80 ? "..." : "", strlen(argv[i]));
		show(fout);
		bad++;
		break;
	}
	ksft_print_msg("%d argument vectors (seed %llu), the program ran for %d\n", runs, seed, ran);
	EXPECT_EQ(0, bad);
	EXPECT_LT(0, runs);
}

TEST_HARNESS_MAIN
