// SPDX-License-Identifier: GPL-2.0
/*
 * count.c - libcount.so, built without kstls and with -fno-plt (its call of __tls_get_addr goes
 * through a GLOB_DAT slot): one general-dynamic variable and a function that makes exactly one
 * access to it per call, so that a strict run's kernel lookups can be counted. libcount_gnu2.so
 * is the same with -mtls-dialect=gnu2: the access goes through a TLS descriptor.
 */
__thread unsigned long count_value __attribute__((tls_model("global-dynamic")));

__attribute__((noinline)) unsigned long count_bump(void)
{
	return ++count_value;
}
