// SPDX-License-Identifier: GPL-2.0
/*
 * mixed_prog.c - loads libmixed.so (IE and GD access to its own TLS) and libexpvar.so (whose
 * variable this executable reads with initial-exec code) and checks on 4 threads that each
 * module's two kinds of access agree: one variable, one address, per thread. Under kstls-run
 * both must be left on the host (--stats says why), so the checks pass.
 */
#include <pthread.h>
#include <stdio.h>

long *mixed_gd_addr(void);
long *mixed_ie_addr(void);
long mixed_sum(void);
long *expvar_addr(void);
extern __thread long expvar __attribute__((tls_model("initial-exec")));

static void *run(void *arg)
{
	long k = (long)arg, bad = 0;

	*mixed_gd_addr() = k;
	*mixed_ie_addr() = 10 * k;
	bad |= mixed_sum() != 11 * k;
	expvar = 100 * k;
	bad |= *expvar_addr() != 100 * k || &expvar != expvar_addr();
	return (void *)bad;
}

int main(void)
{
	pthread_t t[4];
	long bad = 0;

	for (long i = 0; i < 4; i++)
		pthread_create(&t[i], NULL, run, (void *)(i + 1));
	for (int i = 0; i < 4; i++) {
		void *r;

		pthread_join(t[i], &r);
		bad |= (long)r;
	}
	bad |= (long)run((void *)5);
	printf("# mixed_prog: %s\n", bad ? "FAILED: two blocks for one variable" : "one block per variable");
	return bad != 0;
}
