// SPDX-License-Identifier: GPL-2.0
/*
 * fork_race_test.c - scenario 8 of libkstls: fork while other threads hold the library's lock.
 * A program linked with -lkstls (the shared library, one context and one lock for everything)
 * loads a served object (libalign64.so, linked with -lkstls too) and gives its TLS variables a
 * value; then two or three threads take the library's lock over and over, while the main thread
 * forks CHILDREN children one after another. Every child's first TLS access of the object is a
 * slow path (the cache is wiped on fork) that adopts the parent's context under the lock, which
 * a churning thread of the parent may have held at the fork: each child must read the value the
 * forking thread had and exit 0. The parent waits for each child for HANG_SECONDS; a child still
 * running then is reported as hung and killed (a child spinning on an inherited lock has every
 * signal blocked: only SIGKILL ends it), and the test gives up after MAX_HANGS of them.
 *
 * Two ways to churn (the fixture's variants): dlopen and dlclose of another served object
 * (libforkchurnN.so, one per thread, so that every dlclose unloads it: its constructor registers
 * it, its destructor unregisters it), and
 * kstls_register, a first access and kstls_unregister of an image through the C API. Built for
 * glibc and musl, in both TLS dialects; musl never unloads an object (dlclose runs no
 * destructor), so there the dlopen variant is skipped.
 */
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>

#include "kselftest_harness.h"
#include "lib_test.h"

#ifdef __GLIBC__
#define LIBC "glibc"
#else
#define LIBC "musl"
#endif

/*
 * Children per variant: the old lock hung 10 to 30 % of them (3 of 10 to 3 of 29), so a hundred
 * find a held lock with near certainty, in a quarter of the guest time three hundred took.
 */
#define CHILDREN 100
#define CHURNERS 3	/* at most: the kstls_register variant runs two, see FIXTURE_VARIANT */
#define HANG_SECONDS 10
#define MAX_HANGS 3
/* What the forking thread writes into the served object's variables before the forks. */
#define VALUE 4242

static const char churn_image[16] = "churned module";

struct churner {
	const char *lib;	/* the object to dlopen and dlclose, NULL: kstls_register */
	int pause_us;
	atomic_int *stop;
	unsigned long rounds;
	int err;
};

static void *churn(void *arg)
{
	struct churner *c = arg;

	while (!atomic_load(c->stop)) {
		if (c->lib) {
			void *h = dlopen(c->lib, RTLD_NOW | RTLD_LOCAL);

			if (!h || dlclose(h)) {
				c->err = -1;
				return NULL;
			}
		} else {
			struct kstls_image img = { churn_image, sizeof(churn_image), 256, 16, 0 };
			uint64_t id;
			char *p;
			int r = kstls_register(&img, &id);

			if (r) {
				c->err = r;
				return NULL;
			}
			p = kstls_get_tls_addr(id, 0);
			r = kstls_unregister(id);
			if (!p || memcmp(p, churn_image, sizeof(churn_image)) || r) {
				c->err = r ? r : -2;
				return NULL;
			}
		}
		c->rounds++;
		if (c->pause_us)
			usleep(c->pause_us);
	}
	return NULL;
}

/* Waits for @pid: 0 when it ended (@status filled), 1 when it was still running after
 * HANG_SECONDS (then killed and reaped), -1 on a waitpid error. */
static int wait_or_kill(pid_t pid, int *status)
{
	struct timespec start, now;

	clock_gettime(CLOCK_MONOTONIC, &start);
	for (;;) {
		pid_t r = waitpid(pid, status, WNOHANG);

		if (r == pid)
			return 0;
		if (r < 0)
			return -1;
		clock_gettime(CLOCK_MONOTONIC, &now);
		if (now.tv_sec - start.tv_sec >= HANG_SECONDS) {
			kill(pid, SIGKILL);
			waitpid(pid, status, 0);
			return 1;
		}
		usleep(1000);
	}
}

FIXTURE(fork_race)
{
	void *served;
	struct tls_ops ops;
	char churn_lib[CHURNERS][PATH_MAX];
};

FIXTURE_VARIANT(fork_race)
{
	int dlopen_churn;	/* 1: dlopen/dlclose libforkchurnN.so, 0: kstls_register */
	/* Churning threads. kstls_register's rounds are all system calls, nearly all under the lock:
	 * two threads, each pausing PAUSE_US between rounds, still hold it most of the time while
	 * leaving the guest's two CPUs to the forks (three unpausing ones made each child take a
	 * second under TCG). */
	int churners;
	int pause_us;
};

FIXTURE_VARIANT_ADD(fork_race, dlopen_dlclose) { 1, 3, 0 };
FIXTURE_VARIANT_ADD(fork_race, register_unregister) { 0, 2, 1000 };

FIXTURE_SETUP(fork_race)
{
	int (*registered)(uint64_t *);
	uint64_t id;

	self->ops.naddr = 5;
	for (int i = 0; i < CHURNERS; i++) {
		char name[32];

		snprintf(name, sizeof(name), "libforkchurn%d.so", i);
		snprintf(self->churn_lib[i], sizeof(self->churn_lib[i]), "%s", tls_lib_path(name));
	}
	self->served = dlopen(tls_lib_path("libalign64.so"), RTLD_NOW | RTLD_LOCAL);
	ASSERT_NE(NULL, self->served) TH_LOG("dlopen: %s", dlerror());
	ASSERT_EQ(0, tls_ops_dlsym(self->served, "tlsobj_", &self->ops));
	*(void **)&registered = dlsym(self->served, "tlsobj_registered");
	ASSERT_NE(NULL, registered);
	ASSERT_EQ(0, registered(&id)) TH_LOG("libalign64.so not registered: no /dev/kstls?");
	ASSERT_LE(KSTLS_MODULE_ID_MIN, id);
}

FIXTURE_TEARDOWN(fork_race)
{
	if (self->served)
		dlclose(self->served);
}

TEST_F_TIMEOUT(fork_race, children_read_served_tls, 600)
{
	struct churner c[CHURNERS];
	pthread_t t[CHURNERS];
	atomic_int stop = 0;
	int exited = 0, failed = 0, hung = 0, forked = 0, first_status = 0;
	unsigned long rounds = 0;

#ifndef __GLIBC__
	if (variant->dlopen_churn)
		SKIP(return, "musl never unloads an object: dlclose would unregister nothing");
#endif
	self->ops.set(VALUE);
	ASSERT_EQ(0, self->ops.check(VALUE));
	for (int i = 0; i < variant->churners; i++) {
		c[i] = (struct churner){ variant->dlopen_churn ? self->churn_lib[i] : NULL,
					 variant->pause_us, &stop };
		ASSERT_EQ(0, pthread_create(&t[i], NULL, churn, &c[i]));
	}
	for (int i = 0; i < CHILDREN && hung < MAX_HANGS; i++) {
		int status = 0, w;
		pid_t pid = fork();

		if (pid < 0)
			break;
		if (pid == 0)
			_exit(self->ops.check(VALUE) ? 10 + self->ops.check(VALUE) : 0);
		forked++;
		w = wait_or_kill(pid, &status);
		if (w > 0) {
			hung++;
			ksft_print_msg("child %d (pid %d) hung: still running after %d s, killed\n", i,
				       pid, HANG_SECONDS);
		} else if (w == 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0) {
			exited++;
		} else {
			if (!failed++)
				first_status = status;
		}
	}
	atomic_store(&stop, 1);
	for (int i = 0; i < variant->churners; i++) {
		pthread_join(t[i], NULL);
		rounds += c[i].rounds;
		EXPECT_EQ(0, c[i].err) TH_LOG("churning thread %d failed after %lu rounds", i, c[i].rounds);
	}
	ksft_print_msg("%s, %s, %s: %d children forked while %d threads churned (%lu rounds): %d read the forking thread's value and exited 0, %d hung, %d failed\n",
		       LIBC, TLS_DIALECT, variant->dlopen_churn ? "dlopen/dlclose" : "kstls_register",
		       forked, variant->churners, rounds, exited, hung, failed);
	EXPECT_EQ(CHILDREN, forked);
	EXPECT_EQ(0, hung) TH_LOG("%d children hung on their first TLS access", hung);
	EXPECT_EQ(0, failed) TH_LOG("first failed child: status %#x", first_status);
	EXPECT_LT(0, rounds) TH_LOG("nothing churned");
	/* The parent's own values are untouched. */
	EXPECT_EQ(0, self->ops.check(VALUE));
}

TEST_HARNESS_MAIN
