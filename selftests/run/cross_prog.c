// SPDX-License-Identifier: GPL-2.0
/*
 * cross_prog.c - one module's TLS reached from another module: libxuser.so (no TLS of its own)
 * reaches libxexport.so's exported variable with general-dynamic code.
 *
 *	cross_prog          libxuser.so linked (it needs libxexport.so, which is loaded after it)
 *	cross_dl_prog       the same source with CROSS_DLOPEN: both dlopened, libxexport.so first
 *	... --host          without kstls-run: the variable is in glibc's block
 *
 * On 4 threads, both modules must give the same address for the variable, distinct per thread,
 * initialised; under kstls-run (run_test.h) not in glibc's block. Exit status 0 when it held.
 */
#include <dlfcn.h>
#include <pthread.h>

#include "lib_test.h"
#include "run_test.h"

static long *(*export_addr)(void);
static long *(*user_addr)(void);
static int host;

static void *run(void *arg)
{
	long *a = export_addr(), *b = user_addr();

	if (a != b || *a != 44 || in_host_block("libxexport.so", a) != host)
		return (void *)1;
	*a = (long)arg;
	return (void *)(long)(*user_addr() != (long)arg);
}

int main(int argc, char **argv)
{
#ifdef CROSS_DLOPEN
	const int use_dlopen = 1;
#else
	const int use_dlopen = 0;
#endif
	void *he, *hu;
	pthread_t t[4];
	long bad = 0;

	host = argc > 1 && !strcmp(argv[1], "--host");
	he = dlopen(use_dlopen ? tls_lib_path("libxexport.so") : "libxexport.so", RTLD_NOW);
	hu = dlopen(use_dlopen ? tls_lib_path("libxuser.so") : "libxuser.so", RTLD_NOW);
	if (!he || !hu) {
		printf("# FAIL dlopen: %s\n", dlerror());
		return 1;
	}
	*(void **)&export_addr = dlsym(he, "xexport_addr");
	*(void **)&user_addr = dlsym(hu, "xuser_addr");
	if (!export_addr || !user_addr)
		return 1;
	for (long i = 0; i < 4; i++)
		pthread_create(&t[i], NULL, run, (void *)(i + 100));
	for (int i = 0; i < 4; i++) {
		void *r;

		pthread_join(t[i], &r);
		bad |= (long)r;
	}
	bad |= (long)run((void *)7);
	printf("# cross_prog (%s): %s\n", use_dlopen ? "dlopen" : "linked",
	       bad ? "FAILED: the two modules disagree" : "one variable per thread");
	return bad != 0;
}
