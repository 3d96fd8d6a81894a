// SPDX-License-Identifier: GPL-2.0
/* hello.c - the smallest program, built static (static_prog), with musl (musl_prog) and
 * dynamically (hello_prog), for kstls-run's checks of what it cannot serve. */
#include <stdio.h>

int main(void)
{
	puts("hello from the program");
	return 0;
}
