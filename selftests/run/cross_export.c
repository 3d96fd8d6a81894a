// SPDX-License-Identifier: GPL-2.0
/*
 * cross_export.c - libxexport.so: exports a TLS variable that another module (libxuser.so)
 * reaches with general-dynamic code. Served by kstls, both must see one variable per thread.
 */
__thread long xshared __attribute__((tls_model("global-dynamic"))) = 44;

long *xexport_addr(void)
{
	return &xshared;
}
