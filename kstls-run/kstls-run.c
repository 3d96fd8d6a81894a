// SPDX-License-Identifier: GPL-2.0
/*
 * kstls-run - run an unmodified glibc-hosted program with the dynamic TLS of its shared objects
 * served (and, with --strict, trapped) by the kernel.
 *
 *	kstls-run [--strict] [--stats[=FILE]] [--] PROG [ARG...]
 *
 * The launcher checks what it can before anything runs, so that bad input gets a message and a
 * non-zero exit rather than a program that silently runs without kstls: its audit library must
 * be there, /dev/kstls must open,
 * PROG (found through PATH, or a script's interpreter) must be a dynamically linked x86-64
 * program whose dynamic linker is glibc's, and it must not run in secure-execution mode
 * (set-user-ID or set-group-ID to someone else, file capabilities), where glibc ignores
 * LD_AUDIT. Then it adds libkstls-audit.so (found next to itself in the build tree, or in
 * ../lib/kstls/ of an installed tree) to LD_AUDIT (after any audit library already there), passes its options in the environment
 * (KSTLS_RUN_STRICT, KSTLS_RUN_STATS) and executes PROG in its own place.
 *
 * Exit status: PROG's; 2 for a usage error; 1 when kstls-run refuses (the message says why);
 * 126 when PROG cannot be executed, 127 when it is not found.
 *
 * No name has a buffer of a fixed size here: PROG, its PATH candidates, this program's own
 * path and the --stats file are as long as the kernel takes them (path.c opens the --stats file
 * by a name longer than PATH_MAX, as its absolute name from a deep working directory is).
 */
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "path.h"

#define AUDIT_LIB "libkstls-audit.so"
#define DEVICE "/dev/kstls"

static void usage(void)
{
	fprintf(stderr, "usage: kstls-run [--strict] [--stats[=FILE]] [--] PROG [ARG...]\n");
	exit(2);
}

static void __attribute__((noreturn, format(printf, 2, 3))) fail(int status, const char *fmt, ...)
{
	va_list ap;

	fputs("kstls-run: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(status);
}

static void *xmalloc(size_t n)
{
	void *p = malloc(n);

	if (!p)
		fail(1, "out of memory");
	return p;
}

/* The first @n bytes of @dir, a slash unless they end with one, and @name, in a new string. */
static char *path_join(const char *dir, size_t n, const char *name)
{
	size_t slash = n && dir[n - 1] != '/', len = strlen(name);
	char *r;

	if (n > SIZE_MAX - slash - len - 1)
		fail(1, "out of memory");
	r = xmalloc(n + slash + len + 1);
	memcpy(r, dir, n);
	memcpy(r + n, "/", slash);
	memcpy(r + n + slash, name, len + 1);
	return r;
}

/*
 * PROG as execvp(3) finds it: a name with a slash as it is, else the first executable regular
 * file of that name in PATH (/usr/local/bin:/usr/bin:/bin when PATH is unset), where an empty
 * element (leading, trailing, "::", or all of an empty PATH) is the current directory.
 * Directories, missing files and names too long for the kernel are passed over; a regular file
 * without execute permission too, but when nothing follows it the first such is the answer,
 * 126 "Permission denied", as for execvp.
 */
static char *find_program(const char *prog)
{
	const char *path = getenv("PATH"), *p, *e;
	char *denied = NULL;

	if (strchr(prog, '/'))
		return (char *)prog;
	if (!path)
		path = "/usr/local/bin:/usr/bin:/bin";
	for (p = path;; p = e + 1) {
		struct stat st;
		char *cand;

		e = strchrnul(p, ':');
		cand = e > p ? path_join(p, e - p, prog) : path_join(".", 1, prog);
		if (!stat(cand, &st) && S_ISREG(st.st_mode)) {
			if (!access(cand, X_OK))
				return cand;
			if (!denied)
				denied = cand;
		}
		if (cand != denied)
			free(cand);
		if (!*e)
			break;
	}
	if (denied)
		fail(126, "%s: %s", denied, strerror(EACCES));
	fail(127, "%s: command not found in PATH", prog);
}

/* Whether executing @path would be in secure-execution mode (AT_SECURE), in which glibc ignores
 * LD_AUDIT: set-user-ID or set-group-ID to other ids than ours (and not on a nosuid mount), or
 * file capabilities. Returns a description, or NULL. */
static const char *secure_exec(const char *path, const struct stat *st, char *buf, size_t len)
{
	struct statvfs vfs;

	if (!statvfs(path, &vfs) && (vfs.f_flag & ST_NOSUID))
		return NULL;
	if ((st->st_mode & S_ISUID) && st->st_uid != getuid()) {
		snprintf(buf, len, "a set-user-ID program (owner uid %u)", (unsigned)st->st_uid);
		return buf;
	}
	if ((st->st_mode & S_ISGID) && (st->st_mode & S_IXGRP) && st->st_gid != getgid()) {
		snprintf(buf, len, "a set-group-ID program (group gid %u)", (unsigned)st->st_gid);
		return buf;
	}
	if (getxattr(path, "security.capability", NULL, 0) > 0)
		return "a program with file capabilities";
	return NULL;
}

/*
 * Checks that @path (PROG, or the interpreter of the script PROG, @depth 1) can be executed and
 * served: exits with a message if not. Executability is checked here, not left to execv, so
 * that a refused PROG leaves the --stats file alone.
 */
static void check_program(const char *prog, const char *path, int depth)
{
	/* The first 256 bytes, as much as the kernel reads of a script for its #! line
	 * (BINPRM_BUF_SIZE): an interpreter named past them is not one execve runs either. */
	char head[256], *interp = NULL, why[96];
	const char *sec;
	Elf64_Ehdr eh;
	struct stat st;
	ssize_t n;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		fail(errno == ENOENT ? 127 : 126, "%s: %s", path, strerror(errno));
	if (fstat(fd, &st))
		fail(126, "%s: %s", path, strerror(errno));
	if (S_ISDIR(st.st_mode))
		fail(126, "%s: %s", path, strerror(EISDIR));
	if (!S_ISREG(st.st_mode))
		fail(126, "%s: not a regular file", path);
	if (faccessat(AT_FDCWD, path, X_OK, AT_EACCESS))
		fail(126, "%s: %s", path, strerror(errno));
	if ((sec = secure_exec(path, &st, why, sizeof(why))))
		fail(1, "%s: %s: the dynamic linker ignores LD_AUDIT in secure-execution mode, so "
		     "kstls-run cannot serve it", path, sec);
	n = pread(fd, head, sizeof(head) - 1, 0);
	if (n < 0)
		fail(126, "%s: %s", path, strerror(errno));
	head[n] = '\0';
	if (n >= 2 && head[0] == '#' && head[1] == '!') {
		char *p = head + 2, *e;

		if (depth)
			fail(1, "%s: a script whose interpreter %s is a script too", prog, path);
		p += strspn(p, " \t");
		e = p + strcspn(p, " \t\n");
		*e = '\0';
		if (!*p)
			fail(1, "%s: a script without an interpreter", prog);
		close(fd);
		check_program(prog, p, 1);
		return;
	}
	if (n < (ssize_t)sizeof(eh) || memcmp(head, ELFMAG, SELFMAG))
		fail(1, "%s: not an ELF program", path);
	memcpy(&eh, head, sizeof(eh));
	if (eh.e_ident[EI_CLASS] != ELFCLASS64 || eh.e_machine != EM_X86_64)
		fail(1, "%s: not an x86-64 program", path);
	if (eh.e_type != ET_EXEC && eh.e_type != ET_DYN)
		fail(1, "%s: not an executable", path);
	for (int i = 0; i < eh.e_phnum; i++) {
		Elf64_Phdr ph;

		if (pread(fd, &ph, sizeof(ph), eh.e_phoff + i * sizeof(ph)) != sizeof(ph))
			fail(1, "%s: truncated program headers", path);
		if (ph.p_type != PT_INTERP)
			continue;
		/* The kernel takes a PT_INTERP of 2 to PATH_MAX bytes (load_elf_binary). */
		free(interp);
		interp = NULL;
		if (ph.p_filesz < 2 || ph.p_filesz > PATH_MAX)
			fail(1, "%s: unreadable PT_INTERP", path);
		interp = xmalloc(ph.p_filesz + 1);
		if (pread(fd, interp, ph.p_filesz, ph.p_offset) != (ssize_t)ph.p_filesz)
			fail(1, "%s: unreadable PT_INTERP", path);
		interp[ph.p_filesz] = '\0';
	}
	close(fd);
	if (!interp || !interp[0])
		fail(1, "%s: a static program: it has no dynamic linker, hence no LD_AUDIT, and "
		     "kstls-run cannot serve its TLS (link it with libkstls.a instead)", path);
	if (strstr(interp, "ld-musl"))
		fail(1, "%s: a musl-hosted program (dynamic linker %s): musl has no LD_AUDIT and no "
		     "hook between mapping an object and running its code, so kstls-run cannot serve "
		     "it (link its objects with libkstls instead)", path, interp);
	if (!strstr(interp, "ld-linux"))
		fail(1, "%s: its dynamic linker %s is not glibc's, and kstls-run needs glibc's "
		     "LD_AUDIT", path, interp);
	free(interp);
}

static void check_device(void)
{
	int fd = open(DEVICE, O_RDWR | O_CLOEXEC);

	if (fd >= 0) {
		close(fd);
		return;
	}
	if (errno == ENOENT)
		fail(1, "%s: %s: the kstls module is not loaded (modprobe kstls)", DEVICE,
		     strerror(errno));
	fail(1, "%s: %s", DEVICE, strerror(errno));
}

/* libkstls-audit.so next to this program (the build tree) or in ../lib/kstls/ (installed). */
static const char *find_audit_lib(void)
{
	char *self = path_readlink("/proc/self/exe"), *lib;
	size_t dir;

	if (!self || self[0] != '/')
		fail(1, "/proc/self/exe: %s: cannot find %s", self ? "not absolute" : strerror(errno),
		     AUDIT_LIB);
	dir = strrchr(self, '/') - self;
	lib = path_join(self, dir, AUDIT_LIB);
	if (access(lib, R_OK)) {
		char *inst = path_join(self, dir, "../lib/kstls/" AUDIT_LIB);

		if (access(inst, R_OK))
			fail(1, "the audit library %s is missing: neither %s nor %s exists", AUDIT_LIB,
			     lib, inst);
		free(lib);
		lib = inst;
	}
	free(self);
	if (strchr(lib, ':'))
		fail(1, "%s: a ':' in the path, which LD_AUDIT would split", lib);
	return lib;
}

/*
 * --stats=FILE: started empty now (the program and its forked children append), named by an
 * absolute path so that a chdir in the program does not matter. A relative FILE is relative to
 * the working directory now, however deep that is: the absolute name may be longer than
 * PATH_MAX, and path_open opens it all the same, here and in the audit library. FILE itself is
 * held to what the kernel takes (shorter than PATH_MAX).
 */
static const char *stats_file(const char *file)
{
	char *abs, *cwd;
	int fd;

	if (strlen(file) >= PATH_MAX)
		fail(1, "--stats=%s: %s", file, strerror(ENAMETOOLONG));
	if (file[0] == '/') {
		abs = (char *)file;
	} else {
		cwd = getcwd(NULL, 0);
		if (!cwd)
			fail(1, "--stats=%s: getcwd: %s", file, strerror(errno));
		abs = path_join(cwd, strlen(cwd), file);
		free(cwd);
	}
	fd = path_open(abs, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		fail(1, "--stats=%s: %s", file, strerror(errno));
	close(fd);
	return abs;
}

int main(int argc, char **argv)
{
	const char *stats = NULL, *lib, *old;
	char *path, *audit;
	int strict = 0, i;

	/* Options up to PROG, the first argument that is not one ("-" is not), or up to "--". */
	for (i = 1; i < argc && argv[i][0] == '-' && argv[i][1]; i++) {
		if (!strcmp(argv[i], "--")) {
			i++;
			break;
		} else if (!strcmp(argv[i], "--strict")) {
			strict = 1;
		} else if (!strcmp(argv[i], "--stats")) {
			stats = "-";
		} else if (!strncmp(argv[i], "--stats=", 8)) {
			/* The last --stats counts. */
			stats = argv[i] + 8;
			if (!*stats)
				fail(2, "--stats= needs a file name");
		} else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
			printf("usage: kstls-run [--strict] [--stats[=FILE]] [--] PROG [ARG...]\n"
			       "Runs PROG with the dynamic TLS of its shared objects served by /dev/kstls.\n"
			       "  --strict        every served access is a kernel lookup (no cache)\n"
			       "  --stats[=FILE]  per-module counters at exit, to stderr or FILE\n"
			       "See kstls-run(1).\n");
			return 0;
		} else {
			fprintf(stderr, "kstls-run: unknown option %s\n", argv[i]);
			usage();
		}
	}
	if (i >= argc)
		usage();
	lib = find_audit_lib();
	check_device();
	path = find_program(argv[i]);
	check_program(argv[i], path, 0);
	if (stats && strcmp(stats, "-"))
		stats = stats_file(stats);

	old = getenv("LD_AUDIT");
	if (old && *old) {
		if (asprintf(&audit, "%s:%s", old, lib) < 0)
			fail(1, "out of memory");
	} else {
		audit = (char *)lib;
	}
	if (setenv("LD_AUDIT", audit, 1) ||
	    (strict ? setenv("KSTLS_RUN_STRICT", "1", 1) : unsetenv("KSTLS_RUN_STRICT")) ||
	    (stats ? setenv("KSTLS_RUN_STATS", stats, 1) : unsetenv("KSTLS_RUN_STATS")))
		fail(1, "setenv: %s", strerror(errno));
	execv(path, argv + i);
	fail(errno == ENOENT ? 127 : 126, "%s: %s", path, strerror(errno));
}
