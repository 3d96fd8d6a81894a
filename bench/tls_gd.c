// SPDX-License-Identifier: GPL-2.0
/*
 * tls_gd.c - one dlopen'd TLS module. Built -fPIC with -ftls-model=global-dynamic, its access is
 * a call to glibc's __tls_get_addr (the glibc_gd path; the Makefile installs copies of it as the
 * modules of the scaling runs); built again with -mtls-dialect=gnu2 it is the TLSDESC path.
 */
#include "bench.h"

__thread long kb_gd_var = 1;

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
