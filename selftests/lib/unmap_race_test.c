// SPDX-License-Identifier: GPL-2.0
/*
 * unmap_race_test.c - libkstls withdraws its cache while other threads may be reading it: a
 * thread that keeps making TLS accesses of a host (glibc) module through libkstls's
 * __tls_get_addr must never fault while the main thread registers and unregisters the last
 * kstls module over and over (each last UNREGISTER closes the context and takes the cache away,
 * each REGISTER opens and maps it again).
 *
 * A glibc program linked with -lkstls: its own __thread variable is module 1 of glibc, so
 * __tls_get_addr({1, offset}) goes through libkstls's entry and on to glibc's. Two variants:
 *  - free: the accessing threads just spin;
 *  - stepped: they run with the trap flag set, so every instruction ends in a SIGTRAP whose
 *    handler yields. An interrupt can then fall between any two instructions of the
 *    entry, as it can on hardware (an emulator may deliver them only between translated blocks),
 *    and the window between reading where the cache is and reading it is wide.
 */
#include <signal.h>
#include <stdatomic.h>
#include <sched.h>

#include "kselftest_harness.h"
#include "lib_test.h"

void *__tls_get_addr(struct kstls_tls_index *ti);

/* The program's TLS: glibc's module 1. */
__thread unsigned long host_var = 0x600dUL;

#define CYCLES 200
#define TF 0x100

static atomic_int stop;

struct spinner {
	int step;
	unsigned long *want;
	unsigned long calls, wrong;
};

/* One instruction of a stepped thread is done: let the other threads run. */
static void on_trap(int sig)
{
	(void)sig;
	sched_yield();
}

static void *spin(void *arg)
{
	struct spinner *s = arg;
	struct kstls_tls_index ti = { .module = 1, .offset = 0 };

	s->want = &host_var;
	/* The first call looks glibc's __tls_get_addr up: not worth stepping through. */
	if (__tls_get_addr(&ti) != s->want)
		s->wrong++;
	if (s->step)
		__asm__ volatile("pushfq; orq %0, (%%rsp); popfq" : : "i"(TF) : "memory", "cc");
	while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
		if (__tls_get_addr(&ti) != s->want)
			s->wrong++;
		s->calls++;
	}
	if (s->step)
		__asm__ volatile("pushfq; andq %0, (%%rsp); popfq" : : "i"(~TF) : "memory", "cc");
	return NULL;
}

FIXTURE(race)
{
};

FIXTURE_VARIANT(race)
{
	int step;
};

FIXTURE_VARIANT_ADD(race, free) { 0 };
FIXTURE_VARIANT_ADD(race, stepped) { 1 };

FIXTURE_SETUP(race)
{
	struct sigaction sa = { .sa_handler = on_trap };

	ASSERT_EQ(0, sigaction(SIGTRAP, &sa, NULL));
}

FIXTURE_TEARDOWN(race)
{
}

TEST_F_TIMEOUT(race, host_accesses_survive_the_last_unregister, 300)
{
	static const char image[16] = "short-lived";
	struct kstls_image img = { image, sizeof(image), 64, 16, 0 };
	struct spinner s[2] = { { .step = variant->step }, { .step = variant->step } };
	pthread_t t[2];
	int cycles;

	ASSERT_EQ(0, kstls_init());
	ASSERT_LE(0, kstls_fd());
	for (int i = 0; i < 2; i++)
		ASSERT_EQ(0, pthread_create(&t[i], NULL, spin, &s[i]));
	for (cycles = 0; cycles < CYCLES; cycles++) {
		uint64_t id;

		ASSERT_EQ(0, kstls_register(&img, &id));
		ASSERT_NE(NULL, kstls_get_tls_addr(id, 0));
		/* The last module: the context is closed and the cache taken away. */
		ASSERT_EQ(0, kstls_unregister(id));
	}
	atomic_store(&stop, 1);
	for (int i = 0; i < 2; i++)
		ASSERT_EQ(0, pthread_join(t[i], NULL));
	ksft_print_msg("%d register/unregister cycles, %lu and %lu host accesses meanwhile\n",
		       cycles, s[0].calls, s[1].calls);
	EXPECT_EQ(0, s[0].wrong);
	EXPECT_EQ(0, s[1].wrong);
	EXPECT_LT(0, s[0].calls);
}

TEST_HARNESS_MAIN
