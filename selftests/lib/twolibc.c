// SPDX-License-Identifier: GPL-2.0
/*
 * twolibc.c - the two-libc object of scenario 4: a shared object that brings its own libc (musl's
 * libc.a, linked in statically and hidden) and libkstls.a, loaded into a glibc process. Its TLS
 * cannot come from glibc's dynamic linker (whose ids and dtv musl's __tls_get_addr does not
 * understand) nor from musl's (which is not running): it comes from kstls.
 *
 * Built with TWOLIBC_NO_KSTLS it is the same object without kstls, to show what happens then.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#ifndef TWOLIBC_NO_KSTLS
#include <kstls.h>
#endif

#define GD __attribute__((tls_model("global-dynamic")))
#define LD __attribute__((tls_model("local-dynamic")))
#define TDATA_INIT "two libcs, one TLS"

__thread char twolibc_name[32] GD = TDATA_INIT;
static __thread unsigned long counter LD = 77;
__thread unsigned long twolibc_value GD;
static __thread char scratch[96] LD;

static uint64_t module_id;
static int reg_err = -1;

#ifndef TWOLIBC_NO_KSTLS
__attribute__((constructor)) static void twolibc_init(void)
{
	reg_err = KSTLS_REGISTER_SELF(&module_id);
}

__attribute__((destructor)) static void twolibc_fini(void)
{
	if (!reg_err)
		KSTLS_UNREGISTER_SELF();
}

int twolibc_kstls_fd(void)
{
	return kstls_fd();
}
#endif

int twolibc_registered(uint64_t *id)
{
	if (id)
		*id = module_id;
	return reg_err;
}

int twolibc_check_fresh(void)
{
	if (strcmp(twolibc_name, TDATA_INIT))
		return 1;
	if (counter != 77 || twolibc_value)
		return 2;
	for (size_t i = 0; i < sizeof(scratch); i++)
		if (scratch[i])
			return 3;
	return 0;
}

/* Uses musl's own snprintf on the thread's variables. */
void twolibc_set(unsigned long v)
{
	snprintf(twolibc_name, sizeof(twolibc_name), "thread value %lu", v);
	counter = v + 1;
	twolibc_value = v;
	snprintf(scratch, sizeof(scratch), "%s/%lu/%lu", twolibc_name, counter, twolibc_value);
}

int twolibc_check(unsigned long v)
{
	char expect[96];

	snprintf(expect, sizeof(expect), "thread value %lu", v);
	if (strcmp(twolibc_name, expect))
		return 1;
	if (counter != v + 1 || twolibc_value != v)
		return 2;
	snprintf(expect, sizeof(expect), "thread value %lu/%lu/%lu", v, v + 1, v);
	if (strcmp(scratch, expect))
		return 3;
	return 0;
}

void *twolibc_addr(int which)
{
	switch (which) {
	case 0:
		return twolibc_name;
	case 1:
		return &counter;
	case 2:
		return &twolibc_value;
	case 3:
		return scratch;
	}
	return NULL;
}
