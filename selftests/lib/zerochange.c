// SPDX-License-Identifier: GPL-2.0
/*
 * zerochange.c - an ordinary shared object with thread-local data and a constructor that uses
 * it. Nothing in it knows of kstls: the Makefile builds it with each libc's compiler, linking in
 * only what kstls.pc's Libs say (libkstls.a), and that alone must put its TLS in kstls.
 */
#include <string.h>

__thread int zc_counter = 41;
__thread char zc_name[32];
static __thread long zc_local = 5;

__attribute__((constructor)) static void zc_init(void)
{
	zc_counter++;
	strcpy(zc_name, "constructed");
	zc_local *= 3;
}

int zc_get_counter(void)
{
	return zc_counter;
}

const char *zc_get_name(void)
{
	return zc_name;
}

long zc_get_local(void)
{
	return zc_local;
}

void *zc_addr(void)
{
	return &zc_counter;
}
