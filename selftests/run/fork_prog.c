// SPDX-License-Identifier: GPL-2.0
/*
 * fork_prog.c - a served object across fork, and a dlopen that fails: libplain.so (linked at
 * start-up) holds a value when the program forks; the child must see it, and its own new
 * thread fresh values, and the parent must keep its own. Then libbroken.so, an object with TLS
 * whose DT_NEEDED libgone.so does not exist, fails to load: glibc unloads what it mapped, and
 * the kstls context must be left with libplain.so's module alone (fdinfo).
 * Exit status 0 when all held.
 */
#include <dlfcn.h>
#include <sys/wait.h>

#include "lib_test.h"
#include "run_test.h"
#include "tlsobj.h"

static void *fresh(void *arg)
{
	(void)arg;
	return (void *)(long)tlsobj_check_fresh();
}

static int child(void)
{
	pthread_t t;
	void *r;

	if (tlsobj_check(5))
		return 1;
	tlsobj_set(6);
	if (tlsobj_check(6) || pthread_create(&t, NULL, fresh, NULL) || pthread_join(t, &r) || r)
		return 2;
	return 0;
}

int main(void)
{
	char info[8192];
	int status, bad = 0;
	pid_t pid;

	tlsobj_set(5);
	pid = fork();
	if (!pid)
		exit(child());
	waitpid(pid, &status, 0);
	if (!WIFEXITED(status) || WEXITSTATUS(status)) {
		printf("# FAIL the child's TLS (status %#x)\n", status);
		bad = 1;
	}
	if (tlsobj_check(5)) {
		printf("# FAIL the parent's value changed\n");
		bad = 1;
	}
	if (dlopen(tls_lib_path("libbroken.so"), RTLD_NOW)) {
		printf("# FAIL libbroken.so loaded\n");
		bad = 1;
	}
	printf("# dlopen(libbroken.so): %s\n", dlerror());
	if (!kstls_fdinfo(info, sizeof(info), 0) && fdinfo_value(info, "modules") != 1) {
		printf("# FAIL %ld modules after the failed dlopen, want 1\n",
		       fdinfo_value(info, "modules"));
		bad = 1;
	}
	printf("# fork_prog: %s\n", bad ? "FAILED" : "child and parent kept their values");
	return bad;
}
