// SPDX-License-Identifier: GPL-2.0
/*
 * count_prog.c - calls count_bump() of libcount.so (count_gnu2_prog: of libcount_gnu2.so) N times on one thread (argv[1], default
 * 1000): N accesses to one module's TLS, each a kernel lookup under kstls-run --strict.
 * Exit status 0 when the last call returned N.
 */
#include <stdio.h>
#include <stdlib.h>

unsigned long count_bump(void);

int main(int argc, char **argv)
{
	unsigned long n = argc > 1 ? strtoul(argv[1], NULL, 10) : 1000, v = 0;

	for (unsigned long i = 0; i < n; i++)
		v = count_bump();
	printf("# count_prog: %lu calls, last value %lu\n", n, v);
	return v != n;
}
