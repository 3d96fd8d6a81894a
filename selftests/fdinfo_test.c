// SPDX-License-Identifier: GPL-2.0
/*
 * fdinfo_test.c - reading a context's /proc/<pid>/fdinfo and adopting it never wait behind a
 * user fault: a thread whose first touch of a module faults into a range that userfaultfd holds
 * (as a stalled FUSE or network mapping would) may stall itself, not an operator's lsof, nor a
 * forked child's ADOPT.
 *
 * The stall is made with userfaultfd (MISSING mode) on the blocks an arena has not handed out
 * yet; it is checked that the fault is pending, then a reader thread reads the fdinfo and a child
 * adopts; after a few seconds both must be done. The fault is then resolved, so nothing hangs
 * whatever the outcome.
 */
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/wait.h>

#include "kselftest_harness.h"
#include "kstls_test.h"

/* Blocks of 8 KiB, page aligned: the pool's arena of 64 KiB holds 8 of them. */
#define BLOCK (8 << 10)
#define ARENA (64 << 10)
/* How long a reader may take, far more than an fdinfo read needs. */
#define PATIENCE_MS 3000

static const char image[16] = "stalled image";

struct toucher {
	int fd;
	__u64 id;
	int ret;
	char *block;
};

static void *first_touch(void *arg)
{
	struct toucher *t = arg;

	t->ret = kstls_get(t->fd, t->id, 0, (void **)&t->block);
	return NULL;
}

struct reader {
	int fd;
	int done[2];	/* a pipe: one byte once the read is complete */
	ssize_t len;
	char buf[4096];
};

static void *read_fdinfo(void *arg)
{
	struct reader *r = arg;
	char path[64];
	int f;

	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", r->fd);
	f = open(path, O_RDONLY);
	r->len = f < 0 ? -1 : read(f, r->buf, sizeof(r->buf) - 1);
	if (f >= 0)
		close(f);
	if (write(r->done[1], "r", 1) != 1)
		r->len = -2;
	return NULL;
}

/* Whether one byte arrives on @fd within @ms. */
static int arrives(int fd, int ms)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	char c;

	return poll(&p, 1, ms) == 1 && read(fd, &c, 1) == 1;
}

TEST(fdinfo_and_adopt_do_not_wait_behind_a_user_fault)
{
	struct uffdio_api api = { .api = UFFD_API };
	struct uffdio_register reg = { .mode = UFFDIO_REGISTER_MODE_MISSING };
	struct uffdio_zeropage zp = { 0 };
	struct pollfd pf;
	struct uffd_msg msg;
	struct toucher t = { 0 };
	static struct reader r;
	int go[2], adopted[2], uffd, fd, status, read_in_time, adopt_in_time;
	pthread_t tt, rt;
	char *b0;
	pid_t pid;
	__u64 id;

	uffd = syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	if (uffd < 0 && errno == ENOSYS)
		SKIP(return, "no userfaultfd (CONFIG_USERFAULTFD)");
	ASSERT_LE(0, uffd) TH_LOG("userfaultfd: %s", strerror(errno));
	ASSERT_EQ(0, ioctl(uffd, UFFDIO_API, &api));

	fd = kstls_open();
	ASSERT_LE(0, fd);
	ASSERT_EQ(0, kstls_reg(fd, image, sizeof(image), BLOCK, 4096, 0, &id));
	/* The first block starts the arena; the next ones are carved after it. */
	ASSERT_EQ(0, kstls_get(fd, id, 0, (void **)&b0));
	ASSERT_EQ(0, (uintptr_t)b0 % 4096);

	/* A child forked now, while nothing stalls, adopts once the stall is on. */
	ASSERT_EQ(0, pipe(go));
	ASSERT_EQ(0, pipe(adopted));
	pid = fork();
	ASSERT_LE(0, pid);
	if (pid == 0) {
		struct kstls_adopt a = { .parent_fd = fd };
		int own = kstls_open(), ret;
		char c;

		if (own < 0 || read(go[0], &c, 1) != 1)
			_exit(10);
		ret = kstls_ioctl(own, KSTLS_IOC_ADOPT, &a);
		if (write(adopted[1], "a", 1) != 1)
			_exit(11);
		ksft_print_msg("child: ADOPT %s\n", ret ? strerror(-ret) : "succeeded");
		_exit(ret ? 12 : 0);
	}

	reg.range.start = (uintptr_t)b0 + BLOCK;
	reg.range.len = ARENA - BLOCK;
	ASSERT_EQ(0, ioctl(uffd, UFFDIO_REGISTER, &reg)) TH_LOG("UFFDIO_REGISTER: %s",
								strerror(errno));
	t = (struct toucher){ .fd = fd, .id = id };
	ASSERT_EQ(0, pthread_create(&tt, NULL, first_touch, &t));
	/* The second thread's block is the next one: its .tdata copy faults, and waits for us. */
	pf = (struct pollfd){ .fd = uffd, .events = POLLIN };
	ASSERT_EQ(1, poll(&pf, 1, 10000)) TH_LOG("no fault arrived");
	ASSERT_EQ(sizeof(msg), read(uffd, &msg, sizeof(msg)));
	ASSERT_EQ(UFFD_EVENT_PAGEFAULT, msg.event);
	ksft_print_msg("first touch stalled on %#llx (block 0 at %p)\n",
		       (unsigned long long)msg.arg.pagefault.address, b0);

	r.fd = fd;
	ASSERT_EQ(0, pipe(r.done));
	ASSERT_EQ(0, pthread_create(&rt, NULL, read_fdinfo, &r));
	read_in_time = arrives(r.done[0], PATIENCE_MS);
	ASSERT_EQ(1, write(go[1], "g", 1));
	adopt_in_time = arrives(adopted[0], PATIENCE_MS);
	ksft_print_msg("during the stall: fdinfo read %s, ADOPT %s\n",
		       read_in_time ? "done" : "still waiting",
		       adopt_in_time ? "done" : "still waiting");

	/* Resolve the fault: the toucher, the reader and the child all finish. */
	zp.range.start = msg.arg.pagefault.address & ~4095ULL;
	zp.range.len = 4096;
	ASSERT_EQ(0, ioctl(uffd, UFFDIO_ZEROPAGE, &zp));
	ASSERT_EQ(0, pthread_join(tt, NULL));
	ASSERT_EQ(0, pthread_join(rt, NULL));
	ASSERT_EQ(pid, waitpid(pid, &status, 0));
	close(uffd);

	EXPECT_EQ(0, t.ret);
	EXPECT_EQ(b0 + BLOCK, t.block);
	if (!t.ret)
		EXPECT_EQ(0, memcmp(t.block, image, sizeof(image)));
	EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) TH_LOG("child status %#x", status);
	ASSERT_LT(0, r.len);
	r.buf[r.len] = 0;
	EXPECT_NE(NULL, strstr(r.buf, "modules:\t1\n")) TH_LOG("%s", r.buf);
	EXPECT_TRUE(read_in_time) TH_LOG("the fdinfo read waited behind the stalled fault");
	EXPECT_TRUE(adopt_in_time) TH_LOG("ADOPT waited behind the stalled fault");
	close(fd);
}

TEST_HARNESS_MAIN
