// SPDX-License-Identifier: GPL-2.0
/*
 * clobber_test.c - kstls's TLS descriptor resolver preserves every register: a libc-free object
 * built with -mtls-dialect=gnu2 and registered by linking alone (libclobber.so) makes a TLS
 * descriptor call with every general-purpose register but %rax, every vector register (xmm, ymm
 * or zmm as the CPU offers, the AVX-512 mask registers too) and MXCSR holding patterns
 * (clobber_call.S), on the three paths of the resolver:
 *   first touch  a new thread's first access: the slow path, the kernel allocates the block
 *   hit          the same thread again: the cache's fast path, no kernel call
 *   miss         the same thread in strict mode: the slow path, the kernel answers (no alloc)
 * Each must return the variable's offset from the thread pointer (the same address the object's
 * own code gets) and leave everything else as it was. Built for glibc and for musl.
 */
#include "kselftest_harness.h"
#include "lib_test.h"
#include "clobber.h"

void *clobber_var_addr(void);
int clobber_kstls_fd(void);

enum path { FIRST_TOUCH, HIT, MISS };
static const char *const path_names[] = { "first touch", "hit", "miss" };

struct job {
	int level;
	char why[200];
	unsigned long long lookups[3], allocs[3];
};

static int set_strict(int fd, int on)
{
	struct kstls_mode m = { .mode = on ? KSTLS_MODE_STRICT : 0 };

	return ioctl(fd, KSTLS_IOC_SET_MODE, &m) ? -errno : 0;
}

static unsigned long thread_pointer(void)
{
	unsigned long tp;

	__asm__ volatile("mov %%fs:0, %0" : "=r"(tp));
	return tp;
}

/* One call on @path; 0, or -1 with a description in j->why. */
static int one_call(struct job *j, enum path path, int fd)
{
	static struct clobber_regs in, out;
	struct kstls_stats before, after;
	const char *bad;
	int which;
	void *addr;

	clobber_fill(&in, (unsigned int)path * 3 + (unsigned int)j->level + 1);
	clobber_fill(&out, 0xee);
	if (tls_stats(fd, 0, &before) || (path == MISS && set_strict(fd, 1)))
		return snprintf(j->why, sizeof(j->why), "KSTLS_IOC_STATS/SET_MODE: %s", strerror(errno)), -1;
	clobber_call(&in, &out, j->level);
	if ((path == MISS && set_strict(fd, 0)) || tls_stats(fd, 0, &after))
		return snprintf(j->why, sizeof(j->why), "KSTLS_IOC_STATS/SET_MODE: %s", strerror(errno)), -1;
	j->lookups[path] = after.lookups - before.lookups;
	j->allocs[path] = after.allocs - before.allocs;
	bad = clobber_compare(&in, &out, j->level, &which);
	if (bad && which >= 0)
		return snprintf(j->why, sizeof(j->why), "%s: %s%d changed", path_names[path], bad,
				which), -1;
	if (bad)
		return snprintf(j->why, sizeof(j->why), "%s: %s changed", path_names[path], bad), -1;
	addr = (void *)(thread_pointer() + out.gpr[0]);
	if (addr != clobber_var_addr())
		return snprintf(j->why, sizeof(j->why), "%s: resolved to %p, the object sees %p",
				path_names[path], addr, clobber_var_addr()), -1;
	return 0;
}

static void *run(void *arg)
{
	struct job *j = arg;
	int fd = clobber_kstls_fd();

	if (fd < 0) {
		snprintf(j->why, sizeof(j->why), "kstls_fd: %d", fd);
		return j;
	}
	/* This thread has never touched the object: its first call allocates. */
	if (one_call(j, FIRST_TOUCH, fd) || one_call(j, HIT, fd) || one_call(j, MISS, fd))
		return j;
	return NULL;
}

static void check_level(struct __test_metadata *_metadata, int level)
{
	struct job j = { .level = level };
	pthread_t t;
	void *r;

	ASSERT_EQ(0, pthread_create(&t, NULL, run, &j));
	ASSERT_EQ(0, pthread_join(t, &r));
	ASSERT_EQ(NULL, r) TH_LOG("%s", j.why);
	/* The paths were the ones meant: the kernel allocated on the first touch only, answered
	 * the first touch and the miss, and not the hit. */
	EXPECT_EQ(1, j.allocs[FIRST_TOUCH]);
	EXPECT_EQ(1, j.lookups[FIRST_TOUCH]);
	EXPECT_EQ(0, j.lookups[HIT]);
	EXPECT_EQ(0, j.allocs[MISS]);
	EXPECT_EQ(1, j.lookups[MISS]);
	ksft_print_msg("%s: 15 GPRs, %s, MXCSR and rsp kept on a first touch, a hit and a miss\n",
		       clobber_level_name(level), clobber_level_name(level));
}

TEST(xmm_and_gprs)
{
	check_level(_metadata, CLOBBER_SSE);
}

TEST(ymm)
{
	if (clobber_level() < CLOBBER_AVX)
		SKIP(return, "no AVX on this CPU");
	check_level(_metadata, CLOBBER_AVX);
}

TEST(zmm_and_masks)
{
	if (clobber_level() < CLOBBER_AVX512)
		SKIP(return, "no AVX-512 on this CPU (QEMU's TCG emulates none)");
	check_level(_metadata, CLOBBER_AVX512);
}

TEST_HARNESS_MAIN
