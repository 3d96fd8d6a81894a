/* SPDX-License-Identifier: GPL-2.0 */
/*
 * ctororder.h - the interface of ctororder.c, the object of the constructor-order test: what its
 * constructors saw of kstls while they ran, and a hook its destructor reports to.
 */
#ifndef CTORORDER_H
#define CTORORDER_H

#include <stdint.h>

#define CO_VALUE_INIT	7UL

struct co_report {
	/* In the first constructor (priority 101, the earliest a program may ask for), before it
	 * called anything that registers: the modules of the object's kstls context, and the
	 * blocks the kernel had allocated in it. */
	int early_modules;
	unsigned long long early_allocs;
	/* KSTLS_REGISTER_SELF called by that constructor: its result and id, and the modules after
	 * it (it must do nothing more). */
	int explicit_ret;
	uint64_t id;
	int after_explicit_modules;
	/* The calling thread's kstls block of the object, and where co_value was in each
	 * constructor. */
	void *block;
	void *early_addr, *late_addr;
	/* co_value + co_local when the last constructor had run. */
	unsigned long after_ctors;
};

const struct co_report *co_report(void);
/* The calling thread's co_value and its address. */
unsigned long co_value_get(void);
void *co_value_addr(void);
/* Called by the object's destructor: co_value's address and value then, and the modules of its
 * kstls context (1 while it is still registered). */
void co_on_unload(void (*hook)(void *addr, unsigned long value, int modules));

#endif /* CTORORDER_H */
