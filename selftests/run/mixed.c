// SPDX-License-Identifier: GPL-2.0
/*
 * mixed.c - libmixed.so: a module that reaches its own TLS both general-dynamic and
 * initial-exec (R_X86_64_TPOFF64 against its own symbol), which kstls-run must leave on the host
 * (serving it would give its two kinds of code two different blocks).
 */
__thread long mixed_gd __attribute__((tls_model("global-dynamic"))) = 11;
__thread long mixed_ie __attribute__((tls_model("initial-exec"))) = 22;

long *mixed_gd_addr(void)
{
	return &mixed_gd;
}

long *mixed_ie_addr(void)
{
	return &mixed_ie;
}

long mixed_sum(void)
{
	return mixed_gd + mixed_ie;
}
