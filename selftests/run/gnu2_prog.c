// SPDX-License-Identifier: GPL-2.0
/*
 * gnu2_prog.c - libgnu2.so (tlsobj.c compiled with -mtls-dialect=gnu2: TLS descriptors, no
 * __tls_get_addr) linked at start-up, its checks on 8 threads. Prints whether its variables are
 * in glibc's block ("host") or not ("kstls"); exit status 0 when the values were right and the
 * answer is the one asked for (argv[1]: "kstls" or "host"; none: either).
 */
#include "lib_test.h"
#include "run_test.h"
#include "tlsobj.h"

int main(int argc, char **argv)
{
	static const struct tls_ops ops = {
		tlsobj_check_fresh, tlsobj_set, tlsobj_check, tlsobj_addr, 4, 0,
	};
	char why[160] = "";
	int bad = tls_run_threads(&ops, why, sizeof(why)), in;
	const char *who;

	tlsobj_set(5);
	in = in_host_block("libgnu2.so", tlsobj_addr(0));
	who = in ? "host" : "kstls";
	printf("# gnu2_prog: %s, variables in %s block\n", bad ? why : "values right",
	       in ? "the host's" : "a kstls");
	return bad || (argc > 1 && strcmp(argv[1], who));
}
