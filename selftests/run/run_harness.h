/* SPDX-License-Identifier: GPL-2.0 */
/*
 * run_harness.h - what the kstls-run tests share: run a command (kstls-run, or a program of
 * build/selftests/run) with its stdout and stderr captured together, and read the --stats lines
 * it printed. Paths are relative to the test binary, in build/selftests: kstls-run is
 * ../kstls-run/kstls-run, the programs are in run/.
 */
#ifndef RUN_HARNESS_H
#define RUN_HARNESS_H

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define OUT_LEN (1 << 16)
/* A hung program under TCG: far longer than any of these takes. */
#define RUN_TIMEOUT 90

/* The directory of the test binary (build/selftests), then @rel under it. */
static inline const char *here(const char *rel)
{
	static char paths[8][PATH_MAX];
	static int next;
	char *p = paths[next++ % 8], *slash;
	ssize_t n = readlink("/proc/self/exe", p, PATH_MAX - 1);

	if (n < 0)
		return rel;
	p[n] = 0;
	slash = strrchr(p, '/');
	snprintf(slash + 1, PATH_MAX - (slash + 1 - p), "%s", rel);
	return p;
}

#define KSTLS_RUN here("../kstls-run/kstls-run")
#define PROG(name) here("run/" name)

/*
 * Runs @argv (NULL-terminated; argv[0] is the path) with the environment plus @env ("NAME=value"
 * strings, or "NAME" to unset it; NULL-terminated, may be NULL), stdout and stderr into @out.
 * Returns the exit status, 128 + the signal that killed it, or -1 (could not run, or killed
 * after RUN_TIMEOUT s).
 */
static inline int run_cmd(char *const argv[], char *const env[], char *out, size_t len)
{
	int p[2], status;
	size_t n = 0;
	time_t t0 = time(NULL);
	pid_t pid;

	if (pipe2(p, O_CLOEXEC))
		return -1;
	pid = fork();
	if (pid < 0)
		return -1;
	if (!pid) {
		dup2(p[1], 1);
		dup2(p[1], 2);
		for (int i = 0; env && env[i]; i++) {
			if (strchr(env[i], '='))
				putenv(env[i]);
			else
				unsetenv(env[i]);
		}
		execv(argv[0], argv);
		fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
		_exit(126);
	}
	close(p[1]);
	fcntl(p[0], F_SETFL, O_NONBLOCK);
	for (;;) {
		ssize_t r = read(p[0], out + n, len - 1 - n);

		if (r > 0) {
			n += r;
			if (n == len - 1)
				n = 0; /* keep the tail of a runaway output */
			continue;
		}
		if (r == 0)
			break;
		if (time(NULL) - t0 > RUN_TIMEOUT) {
			kill(pid, SIGKILL);
			break;
		}
		usleep(20000);
	}
	out[n] = 0;
	close(p[0]);
	if (waitpid(pid, &status, 0) != pid)
		return -1;
	if (time(NULL) - t0 > RUN_TIMEOUT)
		return -1;
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* run_cmd of the arguments after @env, up to a NULL (at most 15). */
static inline int run_args(char *const env[], char *out, size_t len, const char *arg0, ...)
{
	char *argv[16];
	va_list ap;
	int n = 0;

	argv[n++] = (char *)arg0;
	va_start(ap, arg0);
	while (n < 15 && (argv[n] = va_arg(ap, char *)))
		n++;
	va_end(ap);
	argv[n] = NULL;
	return run_cmd(argv, env, out, len);
}

/* Prints @out on "#" lines (what the command said), for a failure's diagnostics. */
static inline void show(const char *out)
{
	for (const char *l = out; *l;) {
		const char *e = strchrnul(l, '\n');

		printf("#   | %.*s\n", (int)(e - l), l);
		l = *e ? e + 1 : e;
	}
}

/* The --stats line of module @name ("kstls-run[PID]: NAME: ..."), copied into @line; NULL if
 * none. */
static inline const char *stats_line(const char *out, const char *name, char *line, size_t len)
{
	char key[128];
	const char *p = out;

	snprintf(key, sizeof(key), "]: %s: ", name);
	while ((p = strstr(p, key))) {
		const char *b = p, *e;

		while (b > out && b[-1] != '\n')
			b--;
		if (!strncmp(b, "kstls-run[", 10)) {
			e = strchrnul(p, '\n');
			snprintf(line, len, "%.*s", (int)(e - b), b);
			return line;
		}
		p++;
	}
	return NULL;
}

/* The counters of a served module's --stats line: 0, or -1 if @name is not served ("kstls" or
 * "strict" as @path). */
static inline int served_counts(const char *out, const char *name, const char *path,
				unsigned long long *lookups, unsigned long long *allocs)
{
	char line[512], fmt[64];
	const char *l = stats_line(out, name, line, sizeof(line));

	if (!l)
		return -1;
	snprintf(fmt, sizeof(fmt), "%s, %%llu kernel lookups, %%llu first touches", path);
	l = strstr(l, "]: ");
	l = l ? strchr(l + 3, ' ') : NULL;
	return l && sscanf(l + 1, fmt, lookups, allocs) == 2 ? 0 : -1;
}

/* How many lines of @out contain @s. */
static inline int count_lines(const char *out, const char *s)
{
	int n = 0;

	for (const char *l = out; *l;) {
		const char *e = strchrnul(l, '\n');
		const char *f = strstr(l, s);

		n += f && f < e;
		l = *e ? e + 1 : e;
	}
	return n;
}

#endif /* RUN_HARNESS_H */
