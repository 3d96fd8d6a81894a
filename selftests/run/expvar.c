// SPDX-License-Identifier: GPL-2.0
/*
 * expvar.c - libexpvar.so: general-dynamic access to its own exported TLS variable, which the
 * executable (mixed_prog) also reaches with initial-exec code: kstls-run must leave it on the
 * host too, for the executable's sake.
 */
__thread long expvar __attribute__((tls_model("global-dynamic"))) = 33;

long *expvar_addr(void)
{
	return &expvar;
}
