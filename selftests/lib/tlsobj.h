/* SPDX-License-Identifier: GPL-2.0 */
/*
 * tlsobj.h - the interface of the test shared object tlsobj.c (and of the two-libc object
 * twolibc.c, which has the same functions under a twolibc_ prefix).
 */
#ifndef TLSOBJ_H
#define TLSOBJ_H

#include <stdint.h>

#define TLSOBJ_TDATA_LEN	24
#define TLSOBJ_TDATA_INIT	"kstls .tdata image 0123"
#define TLSOBJ_LD_INIT		0x1234567UL
#define TLSOBJ_TBSS_LEN		200

int tlsobj_registered(uint64_t *id);
int tlsobj_kstls_fd(void);
int tlsobj_check_fresh(void);
void tlsobj_set(unsigned long v);
int tlsobj_check(unsigned long v);
void *tlsobj_addr(int which);

#endif /* TLSOBJ_H */
