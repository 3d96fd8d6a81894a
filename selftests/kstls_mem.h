/* SPDX-License-Identifier: GPL-2.0 */
/*
 * kstls_mem.h - helpers of the tests that measure what a caller makes the kernel keep: fields of
 * /proc/meminfo, objects of a slab cache (/proc/slabinfo), the caller's resident set, and
 * becoming an unprivileged user.
 */
#ifndef KSTLS_MEM_H
#define KSTLS_MEM_H

#include <dirent.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
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

/*
 * Waits (60 s at most) until MemAvailable holds still, within 128 KiB for three seconds in a
 * row: for a while after boot the kernel gives memory back (tens of MiB over some 20 s in the
 * debug guest), which would hide what a test makes it keep.
 */
static inline void kstls_settle(void)
{
	long long last = kstls_meminfo("MemAvailable");
	int still = 0;

	for (int i = 0; i < 60 && still < 3; i++) {
		long long now;

		sleep(1);
		now = kstls_meminfo("MemAvailable");
		still = llabs(now - last) < (128 << 10) ? still + 1 : 0;
		last = now;
	}
}

/*
 * Flushes the per-CPU slabs of the slab cache @name and frees its empty slabs (root only, through
 * /sys/kernel/slab), so that the active objects /proc/slabinfo shows next are the objects in
 * use, not those of slabs a CPU holds. Nothing happens if the cache has no such file.
 */
static inline void kstls_slab_shrink(const char *name)
{
	char path[320];
	FILE *f;

	snprintf(path, sizeof(path), "/sys/kernel/slab/%s/shrink", name);
	f = fopen(path, "w");
	if (f) {
		fputs("1", f);
		fclose(f);
	}
}

/* kstls_slab_shrink for every slab cache: what MemAvailable shows next is less of their leftovers. */
static inline void kstls_slab_shrink_all(void)
{
	DIR *d = opendir("/sys/kernel/slab");
	struct dirent *e;

	if (!d)
		return;
	while ((e = readdir(d)))
		if (e->d_name[0] != '.')
			kstls_slab_shrink(e->d_name);
	closedir(d);
}

/*
 * The objects in use of the slab cache @name and the size of one, from /proc/slabinfo (root
 * only; SLUB has it with CONFIG_SLUB_DEBUG), after kstls_slab_shrink. 0, or -1 if the file or the
 * cache is absent (a cache merged into another is listed under that one's name).
 */
static inline int kstls_slab(const char *name, long long *objects, long long *objsize)
{
	char line[512], cache[64];
	long long active, total, size;
	int found = -1;
	FILE *f;

	kstls_slab_shrink(name);
	f = fopen("/proc/slabinfo", "r");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "%63s %lld %lld %lld", cache, &active, &total, &size) == 4 &&
		    !strcmp(cache, name)) {
			*objects = active;
			*objsize = size;
			found = 0;
			break;
		}
	}
	fclose(f);
	return found;
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
