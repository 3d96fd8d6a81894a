// SPDX-License-Identifier: GPL-2.0
/*
 * memcg_test.c - the kernel memory kstls keeps for a process is charged to its memory cgroup
 * (cgroup v2): a group's memory.current grows by the images and the cache its member makes the
 * kernel keep, and a group's memory.max stops a member that asks for more (ENOMEM, or the
 * group's OOM killer), instead of letting it pin memory nobody accounts for.
 *
 * Each test runs its scenario in a child moved into a fresh group under /sys/fs/cgroup (cgroup2
 * is mounted there if it is not yet); figures are printed on "#" lines.
 */
#include <signal.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "kselftest_harness.h"
#include "kstls_test.h"
#include "kstls_mem.h"

#define CGROOT "/sys/fs/cgroup"
#define IMAGE_SIZE (1 << 20)

static int write_file(const char *path, const char *s)
{
	int fd = open(path, O_WRONLY);
	ssize_t n;

	if (fd < 0)
		return -errno;
	n = write(fd, s, strlen(s));
	close(fd);
	return n == (ssize_t)strlen(s) ? 0 : -errno;
}

/* A number in a cgroup file (memory.current, ...), or the "key value" line @key of it; -1. */
static long long read_cg(const char *dir, const char *file, const char *key)
{
	char path[256], line[256];
	long long v = -1;
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, file);
	f = fopen(path, "r");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		size_t n = key ? strlen(key) : 0;

		if (!key) {
			sscanf(line, "%lld", &v);
			break;
		}
		if (!strncmp(line, key, n) && line[n] == ' ') {
			sscanf(line + n + 1, "%lld", &v);
			break;
		}
	}
	fclose(f);
	return v;
}

FIXTURE(memcg)
{
	char dir[128];
};

FIXTURE_SETUP(memcg)
{
	struct stat st;

	if (stat(CGROOT "/cgroup.controllers", &st) &&
	    mount("cgroup2", CGROOT, "cgroup2", 0, NULL))
		SKIP(return, "no cgroup v2: %s", strerror(errno));
	/* Already enabled is fine; absent means no memory controller. */
	if (write_file(CGROOT "/cgroup.subtree_control", "+memory"))
		SKIP(return, "no memory controller (CONFIG_MEMCG)");
	snprintf(self->dir, sizeof(self->dir), CGROOT "/kstls-memcg-%d", getpid());
	ASSERT_EQ(0, mkdir(self->dir, 0755)) TH_LOG("mkdir %s: %s", self->dir, strerror(errno));
}

FIXTURE_TEARDOWN(memcg)
{
	if (self->dir[0])
		rmdir(self->dir);
}

/* Moves the calling process into the group @dir. */
static int join(const char *dir)
{
	char path[256];

	snprintf(path, sizeof(path), "%s/cgroup.procs", dir);
	return write_file(path, "0");
}

static int wait_child(pid_t pid, int *sig)
{
	int status;

	if (waitpid(pid, &status, 0) != pid)
		return -1;
	*sig = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* 12 images of 1 MiB and the cache, in a group without a limit: memory.current sees them. */
static int charge_is_seen(const char *dir)
{
	const char *image = mmap(NULL, IMAGE_SIZE, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	long long c0, c1, c2, want;
	struct kstls_info info;
	int fd, ret;
	void *cache;

	if (image == MAP_FAILED || join(dir))
		return 10;
	fd = kstls_open();
	if (fd < 0 || kstls_info_get(fd, &info))
		return 11;
	c0 = read_cg(dir, "memory.current", NULL);
	for (int m = 0; m < 12; m++) {
		ret = kstls_reg(fd, image, IMAGE_SIZE, IMAGE_SIZE, 8, 0, NULL);
		if (ret) {
			ksft_print_msg("REGISTER %d: %s\n", m, strerror(-ret));
			return 12;
		}
	}
	c1 = read_cg(dir, "memory.current", NULL);
	ksft_print_msg("12 images of 1 MiB: memory.current %+.1f MiB\n", (c1 - c0) / KSTLS_MIB);
	want = 12LL * IMAGE_SIZE * 9 / 10;
	if (c1 - c0 < want)
		return 1;
	if (!info.cache_size)
		return 0;
	cache = mmap(NULL, info.cache_size, PROT_READ, MAP_SHARED, fd, 0);
	if (cache == MAP_FAILED) {
		ksft_print_msg("mmap of the cache: %s\n", strerror(errno));
		return 13;
	}
	c2 = read_cg(dir, "memory.current", NULL);
	ksft_print_msg("a cache of %.1f MiB: memory.current %+.1f MiB\n",
		       info.cache_size / KSTLS_MIB, (c2 - c1) / KSTLS_MIB);
	return c2 - c1 >= (long long)info.cache_size * 9 / 10 ? 0 : 1;
}

TEST_F(memcg, the_group_sees_the_charge)
{
	int sig, ret;
	pid_t pid = fork();

	ASSERT_LE(0, pid);
	if (pid == 0)
		_exit(charge_is_seen(self->dir));
	ret = wait_child(pid, &sig);
	ASSERT_EQ(0, sig);
	/* 1: not charged; 10 and up: the scenario could not be set up. */
	ASSERT_EQ(0, ret);
}

#define MAX_BYTES (16 << 20)
#define NFDS 4
#define PER_FD 16

/*
 * In a group with memory.max 16 MiB, ask for 64 MiB of images: some request must be refused
 * with ENOMEM (exit 0), or the group's OOM killer ends the child; exit 1: all were kept.
 */
static int limit_is_enforced(const char *dir)
{
	const char *image = mmap(NULL, IMAGE_SIZE, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	int kept = 0;

	if (image == MAP_FAILED || join(dir))
		return 10;
	for (int i = 0; i < NFDS; i++) {
		int fd = kstls_open();

		if (fd < 0) {
			ksft_print_msg("open after %d images: %s\n", kept, strerror(errno));
			return errno == ENOMEM ? 0 : 11;
		}
		for (int m = 0; m < PER_FD; m++) {
			int ret = kstls_reg(fd, image, IMAGE_SIZE, IMAGE_SIZE, 8, 0, NULL);

			if (ret == -ENOMEM) {
				ksft_print_msg("REGISTER refused with ENOMEM after %d images of 1 MiB\n",
					       kept);
				return 0;
			}
			if (ret) {
				ksft_print_msg("REGISTER after %d images: %s\n", kept, strerror(-ret));
				return 12;
			}
			kept++;
		}
	}
	ksft_print_msg("%d images of 1 MiB kept in a group with memory.max %d MiB\n", kept,
		       MAX_BYTES >> 20);
	return 1;
}

TEST_F(memcg, memory_max_stops_a_member)
{
	char max[32], path[192];
	int sig, ret;
	pid_t pid;

	snprintf(max, sizeof(max), "%d", MAX_BYTES);
	snprintf(path, sizeof(path), "%s/memory.max", self->dir);
	ASSERT_EQ(0, write_file(path, max));
	pid = fork();
	ASSERT_LE(0, pid);
	if (pid == 0)
		_exit(limit_is_enforced(self->dir));
	ret = wait_child(pid, &sig);
	ksft_print_msg("memory.events oom_kill %lld, memory.peak %.1f MiB\n",
		       read_cg(self->dir, "memory.events", "oom_kill"),
		       read_cg(self->dir, "memory.peak", NULL) / KSTLS_MIB);
	if (sig) {
		/* The group's OOM killer: the charge was seen and enforced. */
		ASSERT_EQ(SIGKILL, sig);
		ASSERT_LT(0, read_cg(self->dir, "memory.events", "oom_kill"));
		return;
	}
	ASSERT_EQ(0, ret);
}

TEST_HARNESS_MAIN
