// SPDX-License-Identifier: GPL-2.0
/*
 * args_prog.c - the program of kstls-run's argument tests (kstls_run_args_test): prints "hello
 * from the program", then each of its arguments, argv[0] included, as "arg[N]: VALUE". With
 * ARGS_PROG_CHDIR set it first changes to that directory, as a program that leaves the
 * directory it was started in does.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	const char *dir = getenv("ARGS_PROG_CHDIR");

	if (dir && chdir(dir)) {
		fprintf(stderr, "args_prog: chdir %s: %s\n", dir, strerror(errno));
		return 3;
	}
	puts("hello from the program");
	for (int i = 0; i < argc; i++)
		printf("arg[%d]: %s\n", i, argv[i]);
	return 0;
}
