// SPDX-License-Identifier: GPL-2.0
/*
 * tls_gd.c - one dlopen'd TLS module. Built -fPIC with -ftls-model=global-dynamic, its access is
 * a call to glibc's __tls_get_addr (the glibc_gd path; the Makefile installs copies of it as the
 * modules of the scaling runs); built again with -mtls-dialect=gnu2 it is the TLSDESC path
 * (glibc_tlsdesc_return), and with -DKB_BIG_TLS too the glibc_tlsdesc_dynamic one.
 */
#include "bench.h"

__thread long kb_gd_var = 1;

#ifdef KB_BIG_TLS
/* More TLS than glibc keeps spare in its static TLS area: the module gets a dynamic block. */
__thread char kb_big[64 << 10];

char *kb_big_addr(void)
{
	return kb_big;
}
#endif

long kb_gd(void *arg)
{
	(void)arg;
	return kb_gd_var;
}

/* The variable's address in the calling thread, to tell a static from a dynamic TLS block. */
void *kb_gd_addr(void)
{
	return &kb_gd_var;
}
