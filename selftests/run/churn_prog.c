// SPDX-License-Identifier: GPL-2.0
/*
 * churn_prog.c - 100 distinct modules dlopened and dlclosed while threads run: copies of
 * libchurn.so (tlsobj.c, built without kstls) under 100 names in a temporary directory, taken
 * by 4 loader threads (module i by thread i % 4), each of which dlopens its module, runs its
 * TLS checks on itself and 2 more threads, and dlcloses it; meanwhile 2 threads keep using the
 * TLS of libplain.so, linked at start-up. Under kstls-run every one of them is served and
 * released again: at the end the context (fdinfo) holds libplain.so's module alone.
 * Exit status 0 when every check held.
 */
#include <dlfcn.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <sys/stat.h>

#include "lib_test.h"
#include "run_test.h"
#include "tlsobj.h"

#define NMODULES 100
#define NLOADERS 4

static char dir[64];
static atomic_int stop, failures;

static void fail(const char *fmt, const char *what, long n)
{
	printf("# FAIL ");
	printf(fmt, what, n);
	printf("\n");
	atomic_fetch_add(&failures, 1);
}

/* The startup module, used without pause by the background threads. */
static void *background(void *arg)
{
	unsigned long v = (unsigned long)arg;

	if (tlsobj_check_fresh())
		fail("%s: not fresh (%ld)", "libplain.so", tlsobj_check_fresh());
	while (!atomic_load(&stop)) {
		tlsobj_set(v);
		if (tlsobj_check(v))
			fail("%s: lost a value (%ld)", "libplain.so", tlsobj_check(v));
		v += 2;
	}
	return NULL;
}

struct dl_job {
	const struct tls_ops *ops;
	unsigned long v;
	int bad;
};

static void *use_module(void *arg)
{
	struct dl_job *j = arg;

	j->bad = j->ops->check_fresh() ? 1 : (j->ops->set(j->v), j->ops->check(j->v));
	return NULL;
}

static void *loader(void *arg)
{
	long w = (long)arg;

	for (long i = w; i < NMODULES; i += NLOADERS) {
		char path[128];
		struct tls_ops ops = { .naddr = 4 };
		struct dl_job jobs[3];
		pthread_t t[2];
		void *h;

		snprintf(path, sizeof(path), "%s/libchurn%03ld.so", dir, i);
		h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
		if (!h || tls_ops_dlsym(h, "tlsobj_", &ops)) {
			fail("%s: dlopen or dlsym (module %ld)", dlerror(), i);
			continue;
		}
		for (int k = 0; k < 3; k++)
			jobs[k] = (struct dl_job){ &ops, 1000 * i + k, 0 };
		for (int k = 0; k < 2; k++)
			pthread_create(&t[k], NULL, use_module, &jobs[k]);
		use_module(&jobs[2]);
		for (int k = 0; k < 2; k++)
			pthread_join(t[k], NULL);
		for (int k = 0; k < 3; k++)
			if (jobs[k].bad)
				fail("%s: module %ld: wrong TLS values", path, i);
		if (in_host_block(strrchr(path, '/') + 1, ops.addr(0)) != 0)
			fail("%s: module %ld is not served by kstls", path, i);
		if (dlclose(h))
			fail("%s: dlclose (module %ld)", dlerror(), i);
	}
	return NULL;
}

/* The 100 copies of libchurn.so. */
static int make_copies(void)
{
	static char image[1 << 20];
	int fd = open(tls_lib_path("libchurn.so"), O_RDONLY);
	ssize_t n = fd < 0 ? -1 : read(fd, image, sizeof(image));

	if (fd >= 0)
		close(fd);
	if (n <= 0 || n == sizeof(image))
		return -1;
	snprintf(dir, sizeof(dir), "/tmp/kstls-run-churn.%d", getpid());
	if (mkdir(dir, 0755))
		return -1;
	for (int i = 0; i < NMODULES; i++) {
		char path[128];

		snprintf(path, sizeof(path), "%s/libchurn%03d.so", dir, i);
		fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0755);
		if (fd < 0 || write(fd, image, n) != n)
			return -1;
		close(fd);
	}
	return 0;
}

static void remove_copies(void)
{
	for (int i = 0; i < NMODULES; i++) {
		char path[128];

		snprintf(path, sizeof(path), "%s/libchurn%03d.so", dir, i);
		unlink(path);
	}
	rmdir(dir);
}

int main(void)
{
	pthread_t bg[2], ld[NLOADERS];
	char info[8192];

	if (make_copies()) {
		printf("# FAIL cannot make the copies of libchurn.so in %s\n", dir);
		return 1;
	}
	for (long i = 0; i < 2; i++)
		pthread_create(&bg[i], NULL, background, (void *)(i + 1));
	for (long i = 0; i < NLOADERS; i++)
		pthread_create(&ld[i], NULL, loader, (void *)i);
	for (int i = 0; i < NLOADERS; i++)
		pthread_join(ld[i], NULL);
	atomic_store(&stop, 1);
	for (int i = 0; i < 2; i++)
		pthread_join(bg[i], NULL);
	remove_copies();
	if (kstls_fdinfo(info, sizeof(info), 1))
		fail("%s%ld", "no kstls context", 0);
	else if (fdinfo_value(info, "modules") != 1)
		fail("%s: %ld modules registered, want libplain.so's alone", "fdinfo",
		     fdinfo_value(info, "modules"));
	printf("# churn_prog: %d modules dlopened and dlclosed by %d threads, %d failures\n",
	       NMODULES, NLOADERS, atomic_load(&failures));
	return atomic_load(&failures) != 0;
}
