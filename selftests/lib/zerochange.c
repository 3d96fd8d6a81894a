// SPDX-License-Identifier: GPL-2.0
/*
 * zerochange.c - an ordinary shared object with thread-local data and a constructor that uses
 * it. Nothing in it knows of kstls: the Makefile builds it with each libc's compiler, linking in
 * only what kstls.pc's Libs say (libkstls.a), and that alone must put its TLS in kstls. Built
 * with ZC_INITIAL_EXEC it also has an initial-exec variable, and kstls must leave it alone.
 */
#include <string.h>

__thread int zc_counter = 41;
__thread char zc_name[32];
static __thread long zc_local = 5;
#ifdef ZC_INITIAL_EXEC
/* One variable reached the initial-exec way: the linker marks the object DF_STATIC_TLS. */
__thread int zc_ie __attribute__((tls_model("initial-exec"))) = 9;

int zc_get_ie(void)
{
	return zc_ie;
}
#endif

__attribute__((constructor)) static void zc_init(void)
{
	zc_counter++;
	strcpy(zc_name, "constructed");
	zc_local *= 3;
#ifdef ZC_INITIAL_EXEC
	zc_ie++;
#endif
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
