// SPDX-License-Identifier: GPL-2.0
/*
 * alignment_test.c - block placement and initialisation for every alignment from 1 to 4096 and
 * several p_vaddr % p_align misalignments: each thread's block is congruent to align_offset
 * modulo align, starts with the .tdata image, is zero up to memsz, is the same block on every
 * later call, and does not overlap another thread's block.
 *
 * Then the packing of small blocks: a thread's blocks of many small modules share one page (its
 * row), every block keeps its own alignment, and a column given back by UNREGISTER is handed
 * to the next module fully initialised, although the bytes there are dirty.
 */
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

#include "kselftest_harness.h"
#include "kstls_test.h"

#define NTHREADS 4

FIXTURE(align)
{
	int fd;
	__u64 id;
	unsigned char *image;
};

FIXTURE_VARIANT(align)
{
	__u64 align;
	__u64 offset;	/* p_vaddr % p_align */
	__u64 filesz;
	__u64 memsz;
};

#define ALIGN_VARIANT(a, o, name, f, m)					\
	FIXTURE_VARIANT_ADD(align, a##_##name)				\
	{								\
		.align = a, .offset = o, .filesz = f, .memsz = m,	\
	}

ALIGN_VARIANT(0, 0, none, 5, 9);
ALIGN_VARIANT(1, 0, zero, 5, 9);
ALIGN_VARIANT(2, 1, last, 3, 7);
ALIGN_VARIANT(4, 2, mid, 6, 10);
ALIGN_VARIANT(8, 0, zero, 16, 24);
ALIGN_VARIANT(8, 7, last, 1, 1);
ALIGN_VARIANT(16, 0, zero, 33, 80);
ALIGN_VARIANT(16, 8, mid, 0, 16);
ALIGN_VARIANT(32, 31, last, 40, 100);
ALIGN_VARIANT(64, 0, zero, 64, 64);
ALIGN_VARIANT(64, 24, mid, 10, 200);
ALIGN_VARIANT(128, 127, last, 100, 300);
ALIGN_VARIANT(256, 0, zero, 256, 1000);
ALIGN_VARIANT(512, 100, odd, 7, 513);
ALIGN_VARIANT(1024, 1023, last, 3000, 5000);
ALIGN_VARIANT(2048, 0, zero, 0, 2048);
ALIGN_VARIANT(4096, 0, zero, 4096, 4096);
ALIGN_VARIANT(4096, 2048, mid, 100, 8192);
ALIGN_VARIANT(4096, 4095, last, 5000, 70000);

FIXTURE_SETUP(align)
{
	self->fd = kstls_open();
	ASSERT_LE(0, self->fd) TH_LOG("open %s: %s", KSTLS_DEVICE_PATH, strerror(errno));
	self->image = malloc(variant->filesz + 1);
	ASSERT_NE(NULL, self->image);
	kstls_pattern(self->image, variant->filesz, (unsigned int)variant->align);
	ASSERT_EQ(0, kstls_reg(self->fd, self->image, variant->filesz, variant->memsz,
			       variant->align, variant->offset, &self->id));
}

FIXTURE_TEARDOWN(align)
{
	close(self->fd);
	free(self->image);
}

struct probe {
	int fd;
	__u64 id;
	const FIXTURE_VARIANT(align) *v;
	const unsigned char *image;
	unsigned char *block;
	pthread_barrier_t *alive;	/* if set: stay alive until every thread has probed */
	int err;	/* 0, or the first failed check */
};

/* Checks a thread's block the way a test would, from any thread. */
static void *probe_block(void *arg)
{
	struct probe *p = arg;
	__u64 align = p->v->align ? p->v->align : 1;
	void *a, *b, *last;

	if (kstls_get(p->fd, p->id, 0, &a)) {
		p->err = 1;
		return NULL;
	}
	p->block = a;
	if ((uintptr_t)a % align != p->v->offset)
		p->err = 2;
	else if (memcmp(a, p->image, p->v->filesz))
		p->err = 3;
	else if (!kstls_all_zero((unsigned char *)a + p->v->filesz, p->v->memsz - p->v->filesz))
		p->err = 4;
	else if (kstls_get(p->fd, p->id, 0, &b) || b != a)
		p->err = 5;
	else if (kstls_get(p->fd, p->id, p->v->memsz - 1, &last) ||
		 last != (unsigned char *)a + p->v->memsz - 1)
		p->err = 6;
	/* Dirty the block: no other thread may see this. */
	memset(a, 0xa5, p->v->memsz);
	if (p->alive)
		pthread_barrier_wait(p->alive);
	return NULL;
}

TEST_F(align, block_is_congruent_initialised_and_stable)
{
	struct probe p = { self->fd, self->id, variant, self->image };

	probe_block(&p);
	ASSERT_EQ(0, p.err) TH_LOG("check %d failed for block %p", p.err, p.block);
}

TEST_F(align, threads_get_disjoint_initialised_blocks)
{
	struct probe p[NTHREADS];
	pthread_t t[NTHREADS];
	pthread_barrier_t alive;

	/* All threads are alive at once, so no block can have been recycled between them. */
	ASSERT_EQ(0, pthread_barrier_init(&alive, NULL, NTHREADS));
	for (int i = 0; i < NTHREADS; i++) {
		p[i] = (struct probe){ self->fd, self->id, variant, self->image, .alive = &alive };
		ASSERT_EQ(0, pthread_create(&t[i], NULL, probe_block, &p[i]));
	}
	for (int i = 0; i < NTHREADS; i++) {
		ASSERT_EQ(0, pthread_join(t[i], NULL));
		EXPECT_EQ(0, p[i].err) TH_LOG("thread %d: check %d failed", i, p[i].err);
	}
	for (int i = 0; i < NTHREADS; i++)
		for (int j = i + 1; j < NTHREADS; j++) {
			unsigned char *a = p[i].block, *b = p[j].block;

			EXPECT_TRUE(a + variant->memsz <= b || b + variant->memsz <= a)
				TH_LOG("blocks %p and %p overlap", a, b);
		}
}

TEST_F(align, later_threads_reuse_no_dirty_block)
{
	/* Each thread dirties its block and exits; the next ones must still see a clean image. */
	for (int round = 0; round < 6; round++) {
		struct probe p = { self->fd, self->id, variant, self->image };
		pthread_t t;

		ASSERT_EQ(0, pthread_create(&t, NULL, probe_block, &p));
		ASSERT_EQ(0, pthread_join(t, NULL));
		ASSERT_EQ(0, p.err) TH_LOG("round %d: check %d failed", round, p.err);
	}
}

#define NPACKED 64

struct packed {
	int fd;
	__u64 id[NPACKED], memsz[NPACKED], align[NPACKED], off[NPACKED];
	unsigned char image[NPACKED][32];
	unsigned char *block[NPACKED];
	int err;
};

/* Small and odd: 3..66 bytes, every alignment from 1 to 64, misaligned starts. */
static __u64 packed_filesz(__u64 memsz)
{
	return memsz < 32 ? memsz / 2 : 16;
}

static void packed_layout(struct packed *p, int i)
{
	p->memsz[i] = 3 + (i * 7) % 64;
	p->align[i] = 1ULL << (i % 7);
	p->off[i] = (i * 5) % p->align[i];
}

/* Touches every module from the calling thread; checks placement and contents, dirties. */
static void *touch_packed(void *arg)
{
	struct packed *p = arg;

	for (int i = 0; i < NPACKED && !p->err; i++) {
		__u64 filesz = packed_filesz(p->memsz[i]);
		void *a = NULL;

		if (kstls_get(p->fd, p->id[i], 0, &a))
			p->err = 1;
		else if ((uintptr_t)a % p->align[i] != p->off[i])
			p->err = 2;
		else if (memcmp(a, p->image[i], filesz) ||
			 !kstls_all_zero((unsigned char *)a + filesz, p->memsz[i] - filesz))
			p->err = 3;
		p->block[i] = a;
	}
	for (int i = 0; i < NPACKED && !p->err; i++)
		memset(p->block[i], 0xa5, p->memsz[i]);
	return NULL;
}

TEST(small_modules_of_a_thread_share_one_page)
{
	struct packed main_t = { 0 }, other;
	uintptr_t page = sysconf(_SC_PAGESIZE), row;
	struct kstls_info info;
	pthread_t t;
	__u64 id, fs;
	void *a;

	main_t.fd = kstls_open();
	ASSERT_LE(0, main_t.fd);
	for (int i = 0; i < NPACKED; i++) {
		packed_layout(&main_t, i);
		kstls_pattern(main_t.image[i], sizeof(main_t.image[i]), i + 1);
		ASSERT_EQ(0, kstls_reg(main_t.fd, main_t.image[i],
				       packed_filesz(main_t.memsz[i]),
				       main_t.memsz[i], main_t.align[i], main_t.off[i], &main_t.id[i]));
	}
	other = main_t;
	touch_packed(&main_t);
	ASSERT_EQ(0, main_t.err);
	ASSERT_EQ(0, pthread_create(&t, NULL, touch_packed, &other));
	ASSERT_EQ(0, pthread_join(t, NULL));
	ASSERT_EQ(0, other.err);

	row = (uintptr_t)main_t.block[0] & ~(page - 1);
	for (int i = 0; i < NPACKED; i++) {
		EXPECT_EQ(row, (uintptr_t)main_t.block[i] & ~(page - 1))
			TH_LOG("module %d's block %p is outside the thread's row", i, main_t.block[i]);
		EXPECT_NE(row, (uintptr_t)other.block[i] & ~(page - 1));
		for (int j = i + 1; j < NPACKED; j++) {
			unsigned char *x = main_t.block[i], *y = main_t.block[j];

			EXPECT_TRUE(x + main_t.memsz[i] <= y || y + main_t.memsz[j] <= x)
				TH_LOG("blocks of modules %d and %d overlap", i, j);
		}
	}
	/* 64 modules, two threads: one arena of rows, not an arena per module. */
	ASSERT_EQ(0, kstls_info_get(main_t.fd, &info));
	EXPECT_LE(info.block_bytes, 64 * 1024);

	/*
	 * Module 9's column, dirtied by touch_packed, goes to the next module of the same layout
	 * (columns are handed out lowest first): its block is there, and clean.
	 */
	ASSERT_EQ(0, kstls_unreg(main_t.fd, main_t.id[9]));
	fs = packed_filesz(main_t.memsz[9]);
	ASSERT_EQ(0, kstls_reg(main_t.fd, main_t.image[9], fs, main_t.memsz[9], main_t.align[9],
			       main_t.off[9], &id));
	ASSERT_EQ(0, kstls_get(main_t.fd, id, 0, &a));
	EXPECT_EQ(main_t.block[9], a);
	EXPECT_EQ(0, memcmp(a, main_t.image[9], fs));
	EXPECT_TRUE(kstls_all_zero((unsigned char *)a + fs, main_t.memsz[9] - fs));
	close(main_t.fd);
}

TEST_HARNESS_MAIN
