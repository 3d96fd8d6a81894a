// SPDX-License-Identifier: GPL-2.0
/*
 * tls_ie.c - libkb_ie.so, linked into the benchmark (DT_NEEDED) so that its TLS is in the static
 * block: the initial-exec path, a GOT load of the offset plus an %fs-relative load.
 */
#include "bench.h"

__thread long kb_ie_var __attribute__((tls_model("initial-exec"))) = 1;

long kb_ie(void *arg)
{
	(void)arg;
	return kb_ie_var;
}
