// SPDX-License-Identifier: GPL-2.0
/*
 * limits_test.c - per-process caps: INFO reports them, and going past each one gets its
 * documented errno (ENOSPC modules, E2BIG image size and total, ENOMEM block memory), after
 * which releasing something makes room again.
 */
#include <stdlib.h>

#include "kselftest_harness.h"
#include "kstls_test.h"

FIXTURE(lim)
{
	int fd;
	struct kstls_info info;
};

FIXTURE_SETUP(lim)
{
	self->fd = kstls_open();
	ASSERT_LE(0, self->fd) TH_LOG("open %s: %s", KSTLS_DEVICE_PATH, strerror(errno));
	ASSERT_EQ(0, kstls_info_get(self->fd, &self->info));
}

FIXTURE_TEARDOWN(lim)
{
	close(self->fd);
}

TEST_F(lim, info_reports_abi_and_limits)
{
	struct kstls_info *i = &self->info;

	EXPECT_EQ(KSTLS_ABI_VERSION, i->abi_version);
	EXPECT_TRUE(i->features & KSTLS_FEAT_EXIT_TRACKING);
	EXPECT_TRUE(i->features & KSTLS_FEAT_STATS);
	EXPECT_TRUE(i->features & KSTLS_FEAT_FDINFO);
	EXPECT_LE(256, i->max_modules);
	EXPECT_EQ(4096, i->max_align);
	EXPECT_LE(64 * 1024, i->max_image_size);
	EXPECT_LE(i->max_image_size, i->max_image_total);
	EXPECT_LE(i->max_image_size, i->max_block_bytes);
	EXPECT_EQ(0, i->nr_modules);
	EXPECT_EQ(0, i->nr_threads);
	EXPECT_EQ(0, i->block_bytes);
	EXPECT_EQ(0, i->image_bytes);
	/* The per-user quota: this context is already counted in it. */
	EXPECT_TRUE(i->features & KSTLS_FEAT_USER_QUOTA);
	EXPECT_LT(0, i->max_user_kbytes);
	EXPECT_LT(0, i->user_kbytes);
	EXPECT_LE(i->user_kbytes, i->max_user_kbytes);
}

TEST_F(lim, modules_past_the_cap_are_enospc)
{
	__u64 *ids = calloc(self->info.max_modules, sizeof(*ids));
	struct kstls_info now;
	__u32 m;

	ASSERT_NE(NULL, ids);
	for (m = 0; m < self->info.max_modules; m++)
		ASSERT_EQ(0, kstls_reg(self->fd, NULL, 0, 8, 8, 0, &ids[m])) TH_LOG("module %u", m);
	ASSERT_EQ(-ENOSPC, kstls_reg(self->fd, NULL, 0, 8, 8, 0, NULL));
	ASSERT_EQ(0, kstls_info_get(self->fd, &now));
	ASSERT_EQ(self->info.max_modules, now.nr_modules);
	ASSERT_EQ(0, kstls_unreg(self->fd, ids[17]));
	ASSERT_EQ(0, kstls_reg(self->fd, NULL, 0, 8, 8, 0, &ids[17]));
	ASSERT_EQ(0, kstls_get(self->fd, ids[17], 7, NULL));
	free(ids);
}

TEST_F(lim, images_past_the_total_are_e2big)
{
	size_t sz = self->info.max_image_size;
	unsigned char *img = calloc(1, sz);
	__u64 n = self->info.max_image_total / sz, first = 0, id, m;
	struct kstls_info now;

	ASSERT_NE(NULL, img);
	for (m = 0; m < n; m++) {
		ASSERT_EQ(0, kstls_reg(self->fd, img, sz, sz, 8, 0, &id)) TH_LOG("module %llu",
										   (unsigned long long)m);
		if (!first)
			first = id;
	}
	ASSERT_EQ(0, kstls_info_get(self->fd, &now));
	ASSERT_EQ(n * sz, now.image_bytes);
	ASSERT_EQ(-E2BIG, kstls_reg(self->fd, img, sz, sz, 8, 0, NULL));
	/* .tbss costs no kernel memory: a module without .tdata still fits. */
	ASSERT_EQ(0, kstls_reg(self->fd, img, 0, sz, 8, 0, NULL));
	ASSERT_EQ(0, kstls_unreg(self->fd, first));
	ASSERT_EQ(0, kstls_reg(self->fd, img, sz, sz, 8, 0, NULL));
	free(img);
}

TEST_F(lim, blocks_past_the_budget_are_enomem)
{
	size_t sz = self->info.max_image_size;
	__u64 n = self->info.max_block_bytes / sz + 2, m, *ids = calloc(n, sizeof(*ids));
	struct kstls_info now;
	int ret = 0;

	ASSERT_NE(NULL, ids);
	ASSERT_GE(self->info.max_modules, n);
	for (m = 0; m < n; m++)
		ASSERT_EQ(0, kstls_reg(self->fd, NULL, 0, sz, 4096, 0, &ids[m]));
	/* Each module's first block maps an arena a little larger than the block. */
	for (m = 0; m < n; m++) {
		ret = kstls_get(self->fd, ids[m], sz - 1, NULL);
		if (ret)
			break;
	}
	ASSERT_EQ(-ENOMEM, ret);
	ASSERT_LT(0, m);
	ASSERT_EQ(0, kstls_info_get(self->fd, &now));
	ksft_print_msg("%llu blocks of %zu bytes fit, %llu bytes mapped of %llu\n",
		       (unsigned long long)m, sz, (unsigned long long)now.block_bytes,
		       (unsigned long long)now.max_block_bytes);
	ASSERT_LE(now.block_bytes, now.max_block_bytes);
	/* Unregistering gives the memory back. */
	ASSERT_EQ(0, kstls_unreg(self->fd, ids[0]));
	ASSERT_EQ(0, kstls_get(self->fd, ids[m], 0, NULL));
	free(ids);
}

TEST_HARNESS_MAIN
