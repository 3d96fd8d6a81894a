// SPDX-License-Identifier: GPL-2.0
/*
 * tlsobj.c - the shared object of the libkstls scenarios: general-dynamic and local-dynamic TLS
 * (.tdata and .tbss), no libc at all (it is built -nostdlib, so the very same file loads into a
 * glibc and a musl process), registering itself with kstls from its constructor.
 *
 * Built several ways by the Makefile: linked with libkstls.a privately (the default), or with
 * -lkstls (KSTLS_SHARED), with an extra TLS variable aligned to TLSOBJ_ALIGN, registered only
 * when the program asks (TLSOBJ_LATE_REGISTER, with -lkstls: libkstls.so registers nobody by
 * itself), or without kstls at all (TLSOBJ_NO_KSTLS, to show what a libc-free module's TLS
 * does without it).
 */
#include <stddef.h>
#include <stdint.h>

#include "tlsobj.h"

#ifndef TLSOBJ_NO_KSTLS
#include <kstls.h>
#endif

#define GD __attribute__((tls_model("global-dynamic")))
#define LD __attribute__((tls_model("local-dynamic")))

/* .tdata: a global (general-dynamic) and a static (local-dynamic) initialised variable. */
__thread char tlsobj_tdata[TLSOBJ_TDATA_LEN] GD = TLSOBJ_TDATA_INIT;
static __thread unsigned long ld_counter LD = TLSOBJ_LD_INIT;
/* .tbss: the same two models, zero-initialised. */
__thread unsigned long tlsobj_gd_value GD;
static __thread unsigned char ld_tbss[TLSOBJ_TBSS_LEN] LD;

#ifdef TLSOBJ_ALIGN
static __thread unsigned char aligned_var[TLSOBJ_ALIGN] LD __attribute__((aligned(TLSOBJ_ALIGN))) = { 0x5a };
#endif

#ifdef TLSOBJ_HOST_VAR
/* Defined by the program: its DTPMOD64 slot holds the host's id of the program, which kstls
 * must leave alone and forward to the host's __tls_get_addr. */
extern __thread unsigned long tlsobj_host_var GD;

unsigned long *tlsobj_host_var_addr(void)
{
	return &tlsobj_host_var;
}
#endif

static uint64_t module_id;
static int reg_err = -1;

#ifdef TLSOBJ_LATE_REGISTER
/* Registers the module now, after its TLS was used. */
int tlsobj_register_now(void)
{
	return reg_err = KSTLS_REGISTER_SELF(&module_id);
}
#elif !defined(TLSOBJ_NO_KSTLS)
__attribute__((constructor)) static void tlsobj_init(void)
{
#ifdef TLSOBJ_REGISTER_BY_ADDRESS
	/* Any address inside the module: the library walks down to the ELF header. */
	reg_err = kstls_register_self((const void *)&tlsobj_check_fresh, &module_id);
#else
	reg_err = KSTLS_REGISTER_SELF(&module_id);
#endif
}
#endif

#ifndef TLSOBJ_NO_KSTLS
__attribute__((destructor)) static void tlsobj_fini(void)
{
	if (!reg_err)
		KSTLS_UNREGISTER_SELF();
}

int tlsobj_kstls_fd(void)
{
	return kstls_fd();
}
#else
int tlsobj_kstls_fd(void)
{
	return -1;
}
#endif

int tlsobj_registered(uint64_t *id)
{
	if (id)
		*id = module_id;
	return reg_err;
}

/* Whether the calling thread sees the initial values: the .tdata images, zero .tbss. */
int tlsobj_check_fresh(void)
{
	static const char init[TLSOBJ_TDATA_LEN] = TLSOBJ_TDATA_INIT;

	for (int i = 0; i < TLSOBJ_TDATA_LEN; i++)
		if (tlsobj_tdata[i] != init[i])
			return 1;
	if (ld_counter != TLSOBJ_LD_INIT)
		return 2;
	if (tlsobj_gd_value)
		return 3;
	for (int i = 0; i < TLSOBJ_TBSS_LEN; i++)
		if (ld_tbss[i])
			return 4;
#ifdef TLSOBJ_ALIGN
	if (aligned_var[0] != 0x5a || ((uintptr_t)aligned_var % TLSOBJ_ALIGN))
		return 5;
	for (int i = 1; i < TLSOBJ_ALIGN; i++)
		if (aligned_var[i])
			return 6;
#endif
	return 0;
}

/* Gives every variable a value derived from @v. */
void tlsobj_set(unsigned long v)
{
	for (int i = 0; i < TLSOBJ_TDATA_LEN; i++)
		tlsobj_tdata[i] = (char)(v + i);
	ld_counter = v * 3;
	tlsobj_gd_value = v;
	for (int i = 0; i < TLSOBJ_TBSS_LEN; i++)
		ld_tbss[i] = (unsigned char)(v ^ i);
#ifdef TLSOBJ_ALIGN
	aligned_var[TLSOBJ_ALIGN - 1] = (unsigned char)v;
#endif
}

/* 0 when every variable holds what tlsobj_set(@v) gave it. */
int tlsobj_check(unsigned long v)
{
	for (int i = 0; i < TLSOBJ_TDATA_LEN; i++)
		if (tlsobj_tdata[i] != (char)(v + i))
			return 1;
	if (ld_counter != v * 3)
		return 2;
	if (tlsobj_gd_value != v)
		return 3;
	for (int i = 0; i < TLSOBJ_TBSS_LEN; i++)
		if (ld_tbss[i] != (unsigned char)(v ^ i))
			return 4;
#ifdef TLSOBJ_ALIGN
	if (aligned_var[TLSOBJ_ALIGN - 1] != (unsigned char)v)
		return 5;
#endif
	return 0;
}

/* The calling thread's address of one variable (0 .tdata GD, 1 .tdata LD, 2 .tbss GD,
 * 3 .tbss LD, 4 the aligned one). */
void *tlsobj_addr(int which)
{
	switch (which) {
	case 0:
		return tlsobj_tdata;
	case 1:
		return &ld_counter;
	case 2:
		return &tlsobj_gd_value;
	case 3:
		return ld_tbss;
#ifdef TLSOBJ_ALIGN
	case 4:
		return aligned_var;
#endif
	}
	return NULL;
}
