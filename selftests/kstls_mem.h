/* SPDX-License-Identifier: GPL-2.0 */
/*
 * kstls_mem.h - helpers of the tests that measure what a caller makes the kernel keep: fields of
 * /proc/meminfo, the caller's resident set, and becoming an unprivileged user.
 */
#ifndef KSTLS_MEM_H
#define KSTLS_MEM_H

#include <grp.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define KSTLS_MIB (1024.0 * 1024.0)

/* The unprivileged user the hostile-caller tests run as. */
#define KSTLS_NOBODY 65534

/* A field of /proc/meminfo in bytes ("MemAvailable", "VmallocUsed", ...), -1 if absent. */
static inline long long kstls_meminfo(const char *field)
{
	char line[256];
	size_t n = strlen(field);
	long long kib = -1;
	FILE *f = fopen("/proc/meminfo", "r");

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		if (!strncmp(line, field, n) && line[n] == ':') {
			if (sscanf(line + n + 1, "%lld", &kib) != 1)
				kib = -1;
			break;
		}
	}
	fclose(f);
	return kib < 0 ? -1 : kib * 1024;
}

/* The calling process's resident set in bytes (user memory it holds), -1 on error. */
static inline long long kstls_rss(void)
{
	long long size, resident;
	FILE *f = fopen("/proc/self/statm", "r");
	int ok;

	if (!f)
		return -1;
	ok = fscanf(f, "%lld %lld", &size, &resident) == 2;
	fclose(f);
	return ok ? resident * sysconf(_SC_PAGESIZE) : -1;
}

/* Drops every privilege: uid, gid and groups KSTLS_NOBODY. 0 or -errno. */
static inline int kstls_become_nobody(void)
{
	gid_t g = KSTLS_NOBODY;

	if (setgroups(1, &g) || setgid(KSTLS_NOBODY) || setuid(KSTLS_NOBODY))
		return -errno;
	return getuid() == KSTLS_NOBODY && geteuid() == KSTLS_NOBODY ? 0 : -EPERM;
}

/*
 * Makes /dev/kstls usable by everybody (as packaging/60-kstls.rules does) and returns its old
 * mode for kstls_restore_mode, or -1.
 */
static inline int kstls_open_to_all(void)
{
	struct stat st;

	if (stat(KSTLS_DEVICE_PATH, &st) || chmod(KSTLS_DEVICE_PATH, 0666))
		return -1;
	return st.st_mode & 07777;
}

static inline void kstls_restore_mode(int mode)
{
	if (mode >= 0)
		chmod(KSTLS_DEVICE_PATH, mode);
}

#endif /* KSTLS_MEM_H */
