// SPDX-License-Identifier: GPL-2.0
/*
 * path.c - file names of any length (path.h). A name the kernel refuses as too long
 * (ENAMETOOLONG) is opened one component at a time, each with openat(2) relative to the
 * directory opened before it (O_PATH): what limits it then is only the kernel's limit on one
 * component (NAME_MAX), which the component's own openat reports. Used for the --stats file,
 * whose name is made absolute from a working directory that may be deeper than PATH_MAX.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "path.h"

int path_open(const char *path, int flags, mode_t mode)
{
	const char *p = path;
	int fd = open(path, flags, mode), dir;

	if (fd >= 0 || errno != ENAMETOOLONG)
		return fd;
	dir = open(*p == '/' ? "/" : ".", O_PATH | O_DIRECTORY | O_CLOEXEC);
	while (dir >= 0) {
		size_t n;
		char *name;
		int next, err, last;

		p += strspn(p, "/");
		n = strcspn(p, "/");
		/* The last component is the file; an empty one (a trailing slash) is ".", so
		 * that the directory before it must be what is opened. */
		last = !p[n];
		name = n ? strndup(p, n) : strdup(".");
		if (!name) {
			close(dir);
			errno = ENOMEM;
			return -1;
		}
		next = last ? openat(dir, name, flags, mode)
			    : openat(dir, name, O_PATH | O_DIRECTORY | O_CLOEXEC);
		err = errno;
		free(name);
		close(dir);
		errno = err;
		if (last)
			return next;
		dir = next;
		p += n;
	}
	return -1;
}

char *path_readlink(const char *path)
{
	for (size_t len = 256;; len *= 2) {
		char *buf = malloc(len);
		ssize_t n;
		int err;

		if (!buf) {
			errno = ENOMEM;
			return NULL;
		}
		n = readlink(path, buf, len);
		if (n >= 0 && (size_t)n < len) {
			buf[n] = '\0';
			return buf;
		}
		err = n < 0 ? errno : ENAMETOOLONG;
		free(buf);
		if (n < 0 || len > SIZE_MAX / 2) {
			errno = err;
			return NULL;
		}
	}
}
