// SPDX-License-Identifier: GPL-2.0
/*
 * ctororder.c - the object of the constructor-order test: libc-free, linked with the recipe
 * (libkstls.a), with two constructors and a destructor that use its TLS. Registration by
 * linking alone must come before the first constructor (whose priority, 101, is the earliest a
 * program may ask for) and unregistration after the destructor; the constructors' writes stay
 * (the main thread's block, which the registration made, holds them); an explicit
 * KSTLS_REGISTER_SELF inside a constructor returns the same id and does nothing more.
 */
#include <stddef.h>
#include <stdint.h>

#include <kstls.h>

#include "ctororder.h"

__thread unsigned long co_value = CO_VALUE_INIT;	/* .tdata, its own symbol */
static __thread unsigned long co_local;			/* .tbss, symbol 0 */

static struct co_report rep;
static void (*unload_hook)(void *addr, unsigned long value, int modules);

static long raw_ioctl(int fd, unsigned long cmd, void *arg)
{
	long ret;

	__asm__ volatile("syscall"
			 : "=a"(ret)
			 : "0"(16L /* ioctl */), "D"((long)fd), "S"(cmd), "d"(arg)
			 : "rcx", "r11", "memory");
	return ret;
}

/* Zeroes @n bytes without a call to memset (there is no libc). */
static void zero(void *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		((volatile char *)p)[i] = 0;
}

/* The modules of this object's context (kstls_fd opens one if there is none yet: 0 modules). */
static int modules(void)
{
	struct kstls_info info;

	zero(&info, sizeof(info));
	return raw_ioctl(kstls_fd(), KSTLS_IOC_INFO, &info) ? -1 : (int)info.nr_modules;
}

static unsigned long long allocs(void)
{
	struct kstls_stats st;

	zero(&st, sizeof(st));
	return raw_ioctl(kstls_fd(), KSTLS_IOC_STATS, &st) ? ~0ULL : st.allocs;
}

__attribute__((constructor(101))) static void co_early(void)
{
	rep.early_modules = modules();
	rep.early_allocs = allocs();
	rep.early_addr = &co_value;
	co_value = 100;
	co_local = 5;
	rep.explicit_ret = KSTLS_REGISTER_SELF(&rep.id);
	rep.after_explicit_modules = modules();
	rep.block = kstls_get_tls_addr(rep.id, 0);
}

__attribute__((constructor)) static void co_late(void)
{
	rep.late_addr = &co_value;
	co_value += 1000;
	rep.after_ctors = co_value + co_local;
}

__attribute__((destructor)) static void co_fini(void)
{
	if (unload_hook)
		unload_hook(&co_value, co_value, modules());
}

const struct co_report *co_report(void)
{
	return &rep;
}

unsigned long co_value_get(void)
{
	return co_value;
}

void *co_value_addr(void)
{
	return &co_value;
}

void co_on_unload(void (*hook)(void *addr, unsigned long value, int modules))
{
	unload_hook = hook;
}
