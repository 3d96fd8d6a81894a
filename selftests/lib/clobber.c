// SPDX-License-Identifier: GPL-2.0
/*
 * clobber.c - the object of the register-clobber test: a libc-free shared object built with
 * -mtls-dialect=gnu2 and the link recipe (libkstls.a, registered before its constructors), whose
 * TLS variable clobber_var is reached through a TLS descriptor. clobber_call (clobber_call.S)
 * makes the call with every register holding a pattern; the test programs (clobber_test.c,
 * glibc and musl) check them afterwards.
 */
#include <stdint.h>

#include <kstls.h>

#include "clobber.h"

/* .tdata, against its own symbol: the descriptor the test rewrites. */
__thread unsigned long clobber_var[2] = { 0x1234, 0x5678 };

/* The calling thread's address of clobber_var (also a descriptor call). */
void *clobber_var_addr(void)
{
	return clobber_var;
}

/* This object's kstls context (its private copy of libkstls), for KSTLS_IOC_STATS and strict
 * mode. */
int clobber_kstls_fd(void)
{
	return kstls_fd();
}
