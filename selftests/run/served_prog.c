// SPDX-License-Identifier: GPL-2.0
/*
 * served_prog.c - an ordinary glibc program whose shared objects were built without kstls
 * (tlsobj.c with TLSOBJ_NO_KSTLS): libplain.so linked at start-up (lazy binding, exported TLS
 * symbols), libplain_dl.so loaded with dlopen (-Bsymbolic, bind-now). It runs the objects' TLS
 * checks on 8 threads and then checks, from inside, who served them:
 *
 *	served_prog          under kstls-run: no address is in glibc's block of its object, and
 *	                     the kstls context (fdinfo) has both modules, one block per thread
 *	served_prog --host   without kstls-run: every address is glibc's, and there is no context
 *
 * Exit status 0 when everything held; diagnostics on "#" lines.
 */
#include <dlfcn.h>

#include "lib_test.h"
#include "run_test.h"
#include "tlsobj.h"

static int failed;

#define EXPECT(cond, ...)                                       \
	do {                                                    \
		if (!(cond)) {                                  \
			printf("# FAIL %s:%d: ", __FILE__, __LINE__); \
			printf(__VA_ARGS__);                    \
			printf("\n");                           \
			failed = 1;                             \
		}                                               \
	} while (0)

/* The checks of one object: 8 threads, then the main thread's addresses against the host's. */
static void check_object(const char *soname, const struct tls_ops *ops, int host)
{
	char why[160] = "";

	EXPECT(!tls_run_threads(ops, why, sizeof(why)), "%s: %s", soname, why);
	EXPECT(!ops->check_fresh(), "%s: the main thread's values are not fresh", soname);
	ops->set(77);
	EXPECT(!ops->check(77), "%s: the main thread's values do not stick", soname);
	for (int i = 0; i < ops->naddr; i++) {
		int in = in_host_block(soname, ops->addr(i));

		EXPECT(in == host, "%s: variable %d at %p is %s the host's block", soname, i,
		       ops->addr(i), in ? "in" : "not in");
	}
	printf("# %s: variables at %p.. (%s)\n", soname, ops->addr(0), host ? "host" : "kstls");
}

int main(int argc, char **argv)
{
	static const struct tls_ops linked = {
		tlsobj_check_fresh, tlsobj_set, tlsobj_check, tlsobj_addr, 4, 0,
	};
	int host = argc > 1 && !strcmp(argv[1], "--host");
	struct tls_ops dl = { .naddr = 4 };
	char info[8192];
	void *h;

	check_object("libplain.so", &linked, host);
	h = dlopen(tls_lib_path("libplain_dl.so"), RTLD_NOW | RTLD_LOCAL);
	if (!h) {
		printf("# FAIL dlopen: %s\n", dlerror());
		return 1;
	}
	EXPECT(!tls_ops_dlsym(h, "tlsobj_", &dl), "dlsym: %s", dlerror());
	if (!failed)
		check_object("libplain_dl.so", &dl, host);

	if (host) {
		EXPECT(kstls_context_fd() < 0, "a kstls context without kstls-run");
	} else if (kstls_fdinfo(info, sizeof(info), 1)) {
		EXPECT(0, "no kstls context in the process");
	} else {
		const char *p = info;
		int full = 0;

		EXPECT(fdinfo_value(info, "modules") == 2, "fdinfo: %ld modules, want 2",
		       fdinfo_value(info, "modules"));
		/* Both modules: one block per thread (8 threads and the main thread). */
		while ((p = strstr(p, "\nmodule:\t"))) {
			const char *a = strstr(p, " allocs=");

			full += a && strtol(a + 8, NULL, 10) == NTHREADS + 1;
			p++;
		}
		EXPECT(full == 2, "fdinfo: %d modules with %d allocations, want 2", full,
		       NTHREADS + 1);
	}
	EXPECT(!dlclose(h), "dlclose: %s", dlerror());
	if (!host && !kstls_fdinfo(info, sizeof(info), 0))
		EXPECT(fdinfo_value(info, "modules") == 1, "after dlclose: %ld modules, want 1",
		       fdinfo_value(info, "modules"));
	printf("# served_prog: %s\n", failed ? "FAILED" : "all checks passed");
	return failed;
}
