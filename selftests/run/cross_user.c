// SPDX-License-Identifier: GPL-2.0
/*
 * cross_user.c - libxuser.so: no TLS of its own; reaches libxexport.so's variable with
 * general-dynamic code (R_X86_64_DTPMOD64 against an undefined symbol).
 */
extern __thread long xshared __attribute__((tls_model("global-dynamic")));

long *xuser_addr(void)
{
	return &xshared;
}
