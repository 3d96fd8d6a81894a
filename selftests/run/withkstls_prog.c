// SPDX-License-Identifier: GPL-2.0
/*
 * withkstls_prog.c - an object that is already a kstls user, under kstls-run: libalign16.so of
 * the libkstls scenarios (tlsobj.c linked with -lkstls, registering itself from its
 * constructor, its calls bound to __tls_get_addr@KSTLS_0 of libkstls.so) is dlopened and its
 * checks run on 8 threads. kstls-run must leave it to libkstls.so (its ids are libkstls.so's
 * context's, not the audit library's): exit status 0 when the checks held.
 */
#include <dlfcn.h>

#include "lib_test.h"

int main(void)
{
	char path[PATH_MAX], why[160] = "";
	struct tls_ops ops = { .naddr = 4 };
	const char *p = tls_lib_path("libalign16.so");
	void *h;
	int r;

	/* run/lib/libalign16.so -> lib/libalign16.so (build/selftests/lib). */
	snprintf(path, sizeof(path), "%.*s/../../lib/libalign16.so",
		 (int)(strrchr(p, '/') - p), p);
	h = dlopen(path, RTLD_NOW);
	if (!h || tls_ops_dlsym(h, "tlsobj_", &ops)) {
		printf("# FAIL dlopen %s: %s\n", path, dlerror());
		return 1;
	}
	r = tls_run_threads(&ops, why, sizeof(why));
	printf("# withkstls_prog: %s\n", r ? why : "libalign16.so's checks passed");
	dlclose(h);
	return r != 0;
}
