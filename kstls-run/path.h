/* SPDX-License-Identifier: GPL-2.0 */
/*
 * path.h - file names of any length, for the launcher (kstls-run.c) and the audit library
 * (audit.c): a file opened by a name longer than the kernel takes in one string (PATH_MAX
 * bytes with its NUL), one directory at a time, and a symbolic link read into a buffer as long
 * as it needs. Neither keeps a buffer of a fixed size.
 */
#ifndef KSTLS_RUN_PATH_H
#define KSTLS_RUN_PATH_H

#include <sys/types.h>

/* open(2) of @path, which may be longer than PATH_MAX: resolved the way the kernel resolves it
 * (each component relative to the directory before it, symbolic links followed, a trailing
 * slash asking for a directory). -1 with errno set on failure. */
int path_open(const char *path, int flags, mode_t mode);

/* The target of the symbolic link @path, in a new string (free it); NULL with errno set. */
char *path_readlink(const char *path);

#endif /* KSTLS_RUN_PATH_H */
