// SPDX-License-Identifier: GPL-2.0
/*
 * errors_test.c - every errno of /dev/kstls, one check per case, in the manner of rseq's
 * syscall_errors_test.c: bad ids, offsets, sizes, alignments, reserved fields and pointers must
 * each get their documented errno, never an oops.
 */
#include <sys/mman.h>

#include "kselftest_harness.h"
#include "kstls_test.h"

#define KERNEL_ADDR ((void *)0xffffffff81000000UL)

static const unsigned char image[64] = "kstls errors image";

FIXTURE(dev)
{
	int fd;
	__u64 id;	/* a valid module: filesz 16, memsz 64, align 16 */
};

FIXTURE_SETUP(dev)
{
	self->fd = kstls_open();
	ASSERT_LE(0, self->fd) TH_LOG("open %s: %s", KSTLS_DEVICE_PATH, strerror(errno));
	ASSERT_EQ(0, kstls_reg(self->fd, image, 16, 64, 16, 0, &self->id));
}

FIXTURE_TEARDOWN(dev)
{
	close(self->fd);
}

static int reg_with(int fd, struct kstls_register *r)
{
	return kstls_ioctl(fd, KSTLS_IOC_REGISTER, r);
}

#define REG_OK { .image = (__u64)(uintptr_t)image, .filesz = 8, .memsz = 16, .align = 8 }

TEST_F(dev, unknown_command_is_enotty)
{
	ASSERT_EQ(-ENOTTY, kstls_ioctl(self->fd, _IO(KSTLS_IOC_MAGIC, 0x7f), NULL));
	ASSERT_EQ(-ENOTTY, kstls_ioctl(self->fd, _IOR('x', 0, int), NULL));
	/* The right number with another size is another command. */
	ASSERT_EQ(-ENOTTY, kstls_ioctl(self->fd, _IOR(KSTLS_IOC_MAGIC, 0x00, __u64), NULL));
}

TEST_F(dev, info_to_null_is_efault)
{
	ASSERT_EQ(-EFAULT, kstls_ioctl(self->fd, KSTLS_IOC_INFO, NULL));
	ASSERT_EQ(-EFAULT, kstls_ioctl(self->fd, KSTLS_IOC_INFO, KERNEL_ADDR));
}

TEST_F(dev, register_nonzero_flags_is_einval)
{
	struct kstls_register r = REG_OK;

	r.flags = 1;
	ASSERT_EQ(-EINVAL, reg_with(self->fd, &r));
}

TEST_F(dev, register_nonzero_reserved_is_einval)
{
	struct kstls_register r = REG_OK;

	r.reserved0 = 1;
	ASSERT_EQ(-EINVAL, reg_with(self->fd, &r));
	r.reserved0 = 0;
	r.reserved[1] = 1;
	ASSERT_EQ(-EINVAL, reg_with(self->fd, &r));
}

TEST_F(dev, register_align_not_power_of_two_is_einval)
{
	ASSERT_EQ(-EINVAL, kstls_reg(self->fd, image, 8, 16, 24, 0, NULL));
	ASSERT_EQ(-EINVAL, kstls_reg(self->fd, image, 8, 16, 3, 0, NULL));
}

TEST_F(dev, register_align_above_max_is_einval)
{
	struct kstls_info info;

	ASSERT_EQ(0, kstls_info_get(self->fd, &info));
	ASSERT_EQ(-EINVAL, kstls_reg(self->fd, image, 8, 16, (__u64)info.max_align * 2, 0, NULL));
	ASSERT_EQ(-EINVAL, kstls_reg(self->fd, image, 8, 16, 1ULL << 63, 0, NULL));
}

TEST_F(dev, register_align_offset_not_below_align_is_einval)
{
	ASSERT_EQ(-EINVAL, kstls_reg(self->fd, image, 8, 16, 16, 16, NULL));
	ASSERT_EQ(-EINVAL, kstls_reg(self->fd, image, 8, 16, 1, 1, NULL));
}

TEST_F(dev, register_filesz_above_memsz_is_einval)
{
	ASSERT_EQ(-EINVAL, kstls_reg(self->fd, image, 17, 16, 8, 0, NULL));
}

TEST_F(dev, register_zero_memsz_is_einval)
{
	ASSERT_EQ(-EINVAL, kstls_reg(self->fd, image, 0, 0, 8, 0, NULL));
}

TEST_F(dev, register_memsz_above_max_is_e2big)
{
	struct kstls_info info;

	ASSERT_EQ(0, kstls_info_get(self->fd, &info));
	ASSERT_EQ(-E2BIG, kstls_reg(self->fd, image, 8, info.max_image_size + 1, 8, 0, NULL));
	ASSERT_EQ(-E2BIG, kstls_reg(self->fd, image, 8, ~0ULL, 8, 0, NULL));
}

TEST_F(dev, register_unreadable_image_is_efault)
{
	void *hole = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	ASSERT_NE(MAP_FAILED, hole);
	ASSERT_EQ(-EFAULT, kstls_reg(self->fd, hole, 8, 16, 8, 0, NULL));
	ASSERT_EQ(-EFAULT, kstls_reg(self->fd, KERNEL_ADDR, 8, 16, 8, 0, NULL));
	ASSERT_EQ(-EFAULT, kstls_reg(self->fd, (void *)~0UL, 8, 16, 8, 0, NULL));
	munmap(hole, 4096);
}

TEST_F(dev, register_unreadable_argument_is_efault)
{
	ASSERT_EQ(-EFAULT, kstls_ioctl(self->fd, KSTLS_IOC_REGISTER, NULL));
	ASSERT_EQ(-EFAULT, kstls_ioctl(self->fd, KSTLS_IOC_REGISTER, KERNEL_ADDR));
}

TEST_F(dev, get_addr_small_module_id_is_einval)
{
	/* The ids a libc's dynamic linker uses are never kstls ids. */
	ASSERT_EQ(-EINVAL, kstls_get(self->fd, 0, 0, NULL));
	ASSERT_EQ(-EINVAL, kstls_get(self->fd, 1, 0, NULL));
	ASSERT_EQ(-EINVAL, kstls_get(self->fd, self->id & 0xffffffff, 0, NULL));
}

TEST_F(dev, get_addr_unknown_module_is_einval)
{
	ASSERT_EQ(-EINVAL, kstls_get(self->fd, (1ULL << 32) | 77, 0, NULL));
	ASSERT_EQ(-EINVAL, kstls_get(self->fd, self->id + (1ULL << 32), 0, NULL));
	ASSERT_EQ(-EINVAL, kstls_get(self->fd, ~0ULL, 0, NULL));
}

TEST_F(dev, get_addr_offset_at_memsz_is_einval)
{
	void *p;

	ASSERT_EQ(0, kstls_get(self->fd, self->id, 63, &p));
	ASSERT_EQ(-EINVAL, kstls_get(self->fd, self->id, 64, NULL));
	ASSERT_EQ(-EINVAL, kstls_get(self->fd, self->id, ~0ULL, NULL));
	ASSERT_EQ(-EINVAL, kstls_get(self->fd, self->id, 1ULL << 63, NULL));
}

TEST_F(dev, get_addr_unreadable_argument_is_efault)
{
	ASSERT_EQ(-EFAULT, kstls_ioctl(self->fd, KSTLS_IOC_GET_ADDR, NULL));
	ASSERT_EQ(-EFAULT, kstls_ioctl(self->fd, KSTLS_IOC_GET_ADDR, KERNEL_ADDR));
	ASSERT_EQ(-EFAULT, kstls_ioctl(self->fd, KSTLS_IOC_GET_ADDR, (void *)~0UL));
}

TEST_F(dev, get_addr_readonly_result_is_efault)
{
	struct kstls_get_addr *g = mmap(NULL, 4096, PROT_READ | PROT_WRITE,
					MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	ASSERT_NE(MAP_FAILED, g);
	g->ti.module = self->id;
	ASSERT_EQ(0, mprotect(g, 4096, PROT_READ));
	ASSERT_EQ(-EFAULT, kstls_ioctl(self->fd, KSTLS_IOC_GET_ADDR, g));
	munmap(g, 4096);
}

TEST_F(dev, get_addr_argument_straddling_inaccessible_page_is_efault)
{
	char *two = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	struct kstls_get_addr *g;

	ASSERT_NE(MAP_FAILED, two);
	/*
	 * A hole that stays one: an unmapped page could be taken by the next mapping, the block
	 * the kernel maps for this very GET_ADDR included (it does under User-Mode Linux).
	 */
	ASSERT_EQ(0, mprotect(two + 4096, 4096, PROT_NONE));
	/* The 16 bytes in are readable, the 8 bytes out land in the hole. */
	g = (struct kstls_get_addr *)(two + 4096 - 16);
	g->ti.module = self->id;
	g->ti.offset = 0;
	ASSERT_EQ(-EFAULT, kstls_ioctl(self->fd, KSTLS_IOC_GET_ADDR, g));
	munmap(two, 8192);
}

TEST_F(dev, get_addr_misaligned_argument_works)
{
	unsigned char buf[sizeof(struct kstls_get_addr) + 8];
	struct kstls_get_addr g = { .ti = { .module = self->id, .offset = 3 } };
	void *p;
	__u64 addr;

	memcpy(buf + 3, &g, sizeof(g));
	ASSERT_EQ(0, kstls_ioctl(self->fd, KSTLS_IOC_GET_ADDR, buf + 3));
	memcpy(&addr, buf + 3 + 16, sizeof(addr));
	ASSERT_EQ(0, kstls_get(self->fd, self->id, 3, &p));
	ASSERT_EQ((__u64)(uintptr_t)p, addr);
}

TEST_F(dev, unregister_unknown_is_einval)
{
	ASSERT_EQ(-EINVAL, kstls_unreg(self->fd, 0));
	ASSERT_EQ(-EINVAL, kstls_unreg(self->fd, (1ULL << 32) | 99));
}

TEST_F(dev, unregister_twice_is_einval)
{
	ASSERT_EQ(0, kstls_unreg(self->fd, self->id));
	ASSERT_EQ(-EINVAL, kstls_unreg(self->fd, self->id));
	ASSERT_EQ(-EINVAL, kstls_get(self->fd, self->id, 0, NULL));
}

TEST_F(dev, unregister_nonzero_reserved_is_einval)
{
	struct kstls_unregister u = { .module = self->id, .reserved = 1 };

	ASSERT_EQ(-EINVAL, kstls_ioctl(self->fd, KSTLS_IOC_UNREGISTER, &u));
	ASSERT_EQ(0, kstls_get(self->fd, self->id, 0, NULL));
}

TEST_F(dev, stale_id_after_slot_reuse_is_einval)
{
	__u64 again;

	ASSERT_EQ(0, kstls_unreg(self->fd, self->id));
	ASSERT_EQ(0, kstls_reg(self->fd, image, 16, 64, 16, 0, &again));
	/* Same slot, new generation: the old id must not reach the new module. */
	ASSERT_EQ(self->id & 0xffffffff, again & 0xffffffff);
	ASSERT_NE(self->id, again);
	ASSERT_EQ(-EINVAL, kstls_get(self->fd, self->id, 0, NULL));
	ASSERT_EQ(0, kstls_get(self->fd, again, 0, NULL));
}

TEST_F(dev, stats_nonzero_reserved_is_einval)
{
	struct kstls_stats st = { .reserved0 = 1 };

	ASSERT_EQ(-EINVAL, kstls_ioctl(self->fd, KSTLS_IOC_STATS, &st));
}

TEST_F(dev, stats_unknown_module_is_einval)
{
	struct kstls_stats st;

	ASSERT_EQ(-EINVAL, kstls_stats_get(self->fd, (1ULL << 32) | 55, 0, &st));
	ASSERT_EQ(-EINVAL, kstls_stats_get(self->fd, 5, 0, &st));
}

TEST_F(dev, stats_bad_tid_is_einval)
{
	struct kstls_stats st;

	ASSERT_EQ(-EINVAL, kstls_stats_get(self->fd, 0, 0x80000000u, &st));
}

TEST(read_only_open_still_serves)
{
	/* The device has no read/write: any open mode gets a context. */
	int fd = open(KSTLS_DEVICE_PATH, O_RDONLY | O_CLOEXEC);
	struct kstls_info info;

	ASSERT_LE(0, fd);
	ASSERT_EQ(0, kstls_info_get(fd, &info));
	ASSERT_EQ(KSTLS_ABI_VERSION, info.abi_version);
	close(fd);
}

TEST_HARNESS_MAIN
