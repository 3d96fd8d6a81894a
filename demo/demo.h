/* SPDX-License-Identifier: GPL-2.0 */
/*
 * demo.h - what the demo programs share: printing a kstls context as /proc/self/fdinfo shows it.
 */
#ifndef KSTLS_DEMO_H
#define KSTLS_DEMO_H

#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

/* Prints /proc/self/fdinfo/@fd after a "$ cat" line, as a shell would show it. */
static inline void show_fdinfo(int fd)
{
	char path[64], buf[4096];
	ssize_t n;
	int f;

	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd);
	f = open(path, O_RDONLY);
	if (f < 0)
		return;
	n = read(f, buf, sizeof(buf) - 1);
	close(f);
	if (n > 0) {
		buf[n] = 0;
		printf("$ cat %s\n%s", path, buf);
	}
}

#endif /* KSTLS_DEMO_H */
