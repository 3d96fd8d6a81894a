/* SPDX-License-Identifier: GPL-2.0 */
/*
 * run_test.h - helpers of the programs that kstls_run_test runs under kstls-run: whether a TLS
 * address is the host's (glibc's block of that module for the calling thread, from
 * dl_iterate_phdr) or not, and the kstls context that kstls-run's audit library opened in the
 * process, found by its fd and read from /proc/self/fdinfo.
 *
 * The programs and their objects know nothing of kstls: they are ordinary glibc programs.
 */
#ifndef RUN_TEST_H
#define RUN_TEST_H

#include <dirent.h>
#include <link.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct host_block {
	const char *soname;	/* the last path component of the object */
	void *data;		/* dlpi_tls_data: the host's block of the calling thread, or NULL */
	size_t memsz;		/* PT_TLS p_memsz */
	int found;
};

static int host_block_cb(struct dl_phdr_info *info, size_t size, void *arg)
{
	struct host_block *h = arg;
	const char *s = strrchr(info->dlpi_name, '/');

	(void)size;
	if (strcmp(s ? s + 1 : info->dlpi_name, h->soname))
		return 0;
	h->found = 1;
	h->data = info->dlpi_tls_data;
	for (int i = 0; i < info->dlpi_phnum; i++)
		if (info->dlpi_phdr[i].p_type == PT_TLS)
			h->memsz = info->dlpi_phdr[i].p_memsz;
	return 1;
}

/*
 * Whether @addr, a TLS variable of the object @soname as the calling thread's code sees it, lies
 * in the host's block of that object for this thread. 1 host, 0 elsewhere (kstls), -1 no such
 * object. glibc allocates a dlopened object's block on the thread's first access through its own
 * __tls_get_addr: for a served object there is none (dlpi_tls_data NULL).
 */
static inline int in_host_block(const char *soname, const void *addr)
{
	struct host_block h = { .soname = soname };

	dl_iterate_phdr(host_block_cb, &h);
	if (!h.found)
		return -1;
	return h.data && (const char *)addr >= (const char *)h.data &&
	       (const char *)addr < (const char *)h.data + h.memsz;
}

/* The fd of the process's /dev/kstls context, or -1. */
static inline int kstls_context_fd(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int fd = -1;

	while (d && (e = readdir(d))) {
		char link[300], target[64];
		ssize_t n;

		snprintf(link, sizeof(link), "/proc/self/fd/%s", e->d_name);
		n = readlink(link, target, sizeof(target) - 1);
		if (n > 0 && (target[n] = 0, !strcmp(target, "/dev/kstls"))) {
			fd = atoi(e->d_name);
			break;
		}
	}
	if (d)
		closedir(d);
	return fd;
}

/* /proc/self/fdinfo of the kstls context into @buf (printed with "# " before each line when
 * @show). 0, or -1 when the process has no context. */
static inline int kstls_fdinfo(char *buf, size_t len, int show)
{
	char path[64];
	FILE *f;
	size_t n;
	int fd = kstls_context_fd();

	if (fd < 0)
		return -1;
	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd);
	f = fopen(path, "re");
	if (!f)
		return -1;
	n = fread(buf, 1, len - 1, f);
	buf[n] = 0;
	fclose(f);
	for (char *l = buf; show && *l;) {
		char *e = strchrnul(l, '\n');

		printf("# fdinfo: %.*s\n", (int)(e - l), l);
		l = *e ? e + 1 : e;
	}
	return 0;
}

/* The number after "@key:\t" in fdinfo text, or -1. */
static inline long fdinfo_value(const char *buf, const char *key)
{
	char k[64];
	const char *p;

	snprintf(k, sizeof(k), "\n%s:\t", key);
	p = strstr(buf, k);
	if (!p && !strncmp(buf, k + 1, strlen(k + 1)))
		p = buf - 1;
	return p ? strtol(p + strlen(k), NULL, 0) : -1;
}

#endif /* RUN_TEST_H */
