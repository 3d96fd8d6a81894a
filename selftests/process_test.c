// SPDX-License-Identifier: GPL-2.0
/*
 * process_test.c - a context belongs to one process: an fd inherited over fork or passed with
 * SCM_RIGHTS cannot read or change the owner's table (EPERM); the forked child keeps its own copy
 * of the blocks at the same addresses and the parent is unaffected; exec and close drop
 * everything; the module cannot be unloaded while a context is open.
 */
#include <pthread.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include "kselftest_harness.h"
#include "kstls_test.h"

static const char image[16] = "parent value";

FIXTURE(proc)
{
	int fd;
	__u64 id;
	char *block;
};

FIXTURE_SETUP(proc)
{
	self->fd = kstls_open();
	ASSERT_LE(0, self->fd) TH_LOG("open %s: %s", KSTLS_DEVICE_PATH, strerror(errno));
	ASSERT_EQ(0, kstls_reg(self->fd, image, sizeof(image), 64, 16, 0, &self->id));
	ASSERT_EQ(0, kstls_get(self->fd, self->id, 0, (void **)&self->block));
}

FIXTURE_TEARDOWN(proc)
{
	close(self->fd);
}

/* Every command from a process that does not own the context is refused. */
static int foreign_calls_refused(int fd, __u64 id)
{
	struct kstls_info info;
	struct kstls_stats st;

	if (kstls_get(fd, id, 0, NULL) != -EPERM)
		return 1;
	if (kstls_reg(fd, image, 8, 16, 8, 0, NULL) != -EPERM)
		return 2;
	if (kstls_unreg(fd, id) != -EPERM)
		return 3;
	if (kstls_info_get(fd, &info) != -EPERM)
		return 4;
	if (kstls_stats_get(fd, 0, 0, &st) != -EPERM)
		return 5;
	return 0;
}

static int wait_exit_code(pid_t pid)
{
	int status;

	if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status))
		return -1;
	return WEXITSTATUS(status);
}

TEST_F(proc, forked_child_cannot_use_inherited_fd)
{
	pid_t pid;

	strcpy(self->block, "before fork");
	pid = fork();
	ASSERT_LE(0, pid);
	if (pid == 0) {
		int ret = foreign_calls_refused(self->fd, self->id);

		/* The child's copy of the block is at the same address, with the fork-time value. */
		if (!ret && strcmp(self->block, "before fork"))
			ret = 10;
		strcpy(self->block, "child wrote");
		_exit(ret);
	}
	ASSERT_EQ(0, wait_exit_code(pid));
	/* The parent's block is its own. */
	ASSERT_STREQ("before fork", self->block);
	void *again;

	ASSERT_EQ(0, kstls_get(self->fd, self->id, 0, &again));
	ASSERT_EQ((void *)self->block, again);
}

static int adopt(int fd, __u32 parent_fd)
{
	struct kstls_adopt a = { .parent_fd = parent_fd };

	return kstls_ioctl(fd, KSTLS_IOC_ADOPT, &a);
}

struct holder {
	int fd;
	__u64 id;
	char *block;
	pthread_barrier_t *b;
};

/* A second thread that owns a block of its own while the main thread forks. */
static void *hold_block(void *arg)
{
	struct holder *h = arg;

	if (!kstls_get(h->fd, h->id, 0, (void **)&h->block))
		strcpy(h->block, "other thread");
	pthread_barrier_wait(h->b);	/* block taken */
	pthread_barrier_wait(h->b);	/* the child has run */
	return NULL;
}

/* A new thread's first touch of a module: its block, or NULL. */
static void *first_touch(void *arg)
{
	struct holder *h = arg;

	if (kstls_get(h->fd, h->id, 0, (void **)&h->block))
		h->block = NULL;
	return NULL;
}

TEST_F(proc, forked_child_adopts_the_forking_threads_blocks)
{
	static const char image2[16] = "second module";
	pthread_barrier_t b;
	struct holder h;
	pthread_t t;
	__u64 id2;
	pid_t pid;

	ASSERT_EQ(0, kstls_reg(self->fd, image2, sizeof(image2), 64, 16, 0, &id2));
	ASSERT_EQ(0, pthread_barrier_init(&b, NULL, 2));
	h = (struct holder){ self->fd, id2, NULL, &b };
	ASSERT_EQ(0, pthread_create(&t, NULL, hold_block, &h));
	pthread_barrier_wait(&b);
	ASSERT_NE(NULL, h.block);
	strcpy(self->block, "forker value");

	pid = fork();
	ASSERT_LE(0, pid);
	if (pid == 0) {
		struct kstls_stats st;
		struct holder c;
		char *p;
		int fd = kstls_open();

		if (fd < 0 || adopt(fd, self->fd))
			_exit(30);
		/* Same id, same address, the value it had at fork. */
		if (kstls_get(fd, self->id, 0, (void **)&p) || p != self->block ||
		    strcmp(p, "forker value"))
			_exit(31);
		strcpy(p, "child value");
		/* Only the forking thread's blocks are live in the child. */
		if (kstls_stats_get(fd, 0, 0, &st) || st.blocks != 1)
			_exit(32);
		/*
		 * The other thread's blocks are free again: its row (the modules are small, so
		 * their blocks are packed in a page per thread) goes to the child's next thread,
		 * which finds id2's block where it was, freshly initialised.
		 */
		c = (struct holder){ fd, id2, NULL, NULL };
		if (pthread_create(&t, NULL, first_touch, &c) || pthread_join(t, NULL) ||
		    c.block != h.block || strcmp(c.block, image2))
			_exit(33);
		/* The forking thread's own block of id2 is new, beside its first one. */
		if (kstls_get(fd, id2, 0, (void **)&p) || strcmp(p, image2) ||
		    ((uintptr_t)p ^ (uintptr_t)self->block) >= (uintptr_t)sysconf(_SC_PAGESIZE))
			_exit(35);
		/* A fork is adopted once: its record is gone. */
		if (adopt(fd, self->fd) != -EPERM)
			_exit(34);
		_exit(0);
	}
	ASSERT_EQ(0, wait_exit_code(pid));
	pthread_barrier_wait(&b);
	ASSERT_EQ(0, pthread_join(t, NULL));
	/* The parent is unaffected. */
	ASSERT_STREQ("forker value", self->block);
	ASSERT_STREQ("other thread", h.block);
}

TEST_F(proc, adopt_errors)
{
	int pipefd[2], fd2;

	ASSERT_EQ(0, pipe(pipefd));
	fd2 = kstls_open();
	ASSERT_LE(0, fd2);
	/* Not a child of the owner: the same process. */
	ASSERT_EQ(-EINVAL, adopt(fd2, self->fd));
	ASSERT_EQ(-EINVAL, adopt(self->fd, self->fd));
	ASSERT_EQ(-EINVAL, adopt(fd2, pipefd[0]));
	ASSERT_EQ(-EBADF, adopt(fd2, 999));
	struct kstls_adopt a = { .parent_fd = self->fd, .reserved = 1 };

	ASSERT_EQ(-EINVAL, kstls_ioctl(fd2, KSTLS_IOC_ADOPT, &a));
	ASSERT_EQ(-EFAULT, kstls_ioctl(fd2, KSTLS_IOC_ADOPT, NULL));
	close(fd2);
	close(pipefd[0]);
	close(pipefd[1]);
}

TEST_F(proc, fd_passed_with_scm_rights_is_refused)
{
	int sv[2];
	pid_t pid;

	ASSERT_EQ(0, socketpair(AF_UNIX, SOCK_STREAM, 0, sv));
	pid = fork();
	ASSERT_LE(0, pid);
	if (pid == 0) {
		/* A child that never inherited the context: it receives the fd. */
		close(self->fd);
		close(sv[0]);
		int fd = kstls_recv_fd(sv[1]);

		if (fd < 0)
			_exit(20);
		_exit(foreign_calls_refused(fd, self->id));
	}
	close(sv[1]);
	ASSERT_EQ(0, kstls_send_fd(sv[0], self->fd));
	ASSERT_EQ(0, wait_exit_code(pid));
	close(sv[0]);
	/* The owner still works. */
	ASSERT_EQ(0, kstls_get(self->fd, self->id, 0, NULL));
}

TEST_F(proc, non_child_cannot_adopt_a_passed_fd)
{
	int sv[2], got;
	pid_t pid;
	char dummy = 'x';

	/* The child opens a context of its own and sends it up to us, its parent. */
	ASSERT_EQ(0, socketpair(AF_UNIX, SOCK_STREAM, 0, sv));
	pid = fork();
	ASSERT_LE(0, pid);
	if (pid == 0) {
		int fd = kstls_open();

		if (fd < 0 || kstls_reg(fd, image, 8, 16, 8, 0, NULL))
			_exit(40);
		if (kstls_send_fd(sv[1], fd))
			_exit(41);
		/* Wait until the parent is done with the fd. */
		_exit(read(sv[1], &dummy, 1) == 1 ? 0 : 42);
	}
	got = kstls_recv_fd(sv[0]);
	ASSERT_LE(0, got);
	EXPECT_EQ(0, foreign_calls_refused(got, 1ULL << 32));
	/* We did not fork from its owner: its table is not ours to copy. */
	EXPECT_EQ(-EPERM, adopt(self->fd, got));
	ASSERT_EQ(1, write(sv[0], &dummy, 1));
	ASSERT_EQ(0, wait_exit_code(pid));
	close(got);
	close(sv[0]);
	close(sv[1]);
}

TEST_F(proc, exec_drops_the_context)
{
	char cmd[64];
	pid_t pid;

	/* The fd is O_CLOEXEC: after exec it is gone. */
	snprintf(cmd, sizeof(cmd), "test ! -e /proc/self/fd/%d", self->fd);
	pid = fork();
	ASSERT_LE(0, pid);
	if (pid == 0) {
		execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
		_exit(99);
	}
	ASSERT_EQ(0, wait_exit_code(pid));
}

TEST_F(proc, close_unmaps_blocks_and_reopen_is_fresh)
{
	struct kstls_info info;
	unsigned char vec;
	long page = sysconf(_SC_PAGESIZE);
	void *pg = (void *)((uintptr_t)self->block & ~(uintptr_t)(page - 1));

	ASSERT_EQ(0, mincore(pg, page, &vec));
	ASSERT_EQ(0, close(self->fd));
	/* The arena is gone from the address space. */
	ASSERT_EQ(-1, mincore(pg, page, &vec));
	ASSERT_EQ(ENOMEM, errno);
	self->fd = kstls_open();
	ASSERT_LE(0, self->fd);
	ASSERT_EQ(0, kstls_info_get(self->fd, &info));
	ASSERT_EQ(0, info.nr_modules);
	ASSERT_EQ(0, info.block_bytes);
	ASSERT_EQ(-EINVAL, kstls_get(self->fd, self->id, 0, NULL));
}

TEST_F(proc, unregister_unmaps_blocks)
{
	unsigned char vec;
	long page = sysconf(_SC_PAGESIZE);
	void *pg = (void *)((uintptr_t)self->block & ~(uintptr_t)(page - 1));

	ASSERT_EQ(0, kstls_unreg(self->fd, self->id));
	ASSERT_EQ(-1, mincore(pg, page, &vec));
	ASSERT_EQ(ENOMEM, errno);
}

TEST_F(proc, module_cannot_unload_while_open)
{
	/* O_NONBLOCK: fail at once instead of waiting for the last reference. */
	ASSERT_EQ(-1, syscall(SYS_delete_module, "kstls", O_NONBLOCK));
	ASSERT_TRUE(errno == EBUSY || errno == EWOULDBLOCK) TH_LOG("errno %d", errno);
	ASSERT_EQ(0, kstls_get(self->fd, self->id, 0, NULL));
}

TEST_F(proc, fdinfo_shows_the_context)
{
	char path[64], buf[4096];
	ssize_t n;
	int f;

	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", self->fd);
	f = open(path, O_RDONLY);
	ASSERT_LE(0, f);
	n = read(f, buf, sizeof(buf) - 1);
	close(f);
	ASSERT_LT(0, n);
	buf[n] = 0;
	EXPECT_NE(NULL, strstr(buf, "modules:\t1\n")) TH_LOG("%s", buf);
	EXPECT_NE(NULL, strstr(buf, "lookups:\t1\n")) TH_LOG("%s", buf);
	EXPECT_NE(NULL, strstr(buf, "allocs:\t1\n")) TH_LOG("%s", buf);
	EXPECT_NE(NULL, strstr(buf, "module:\t0x")) TH_LOG("%s", buf);
}

TEST_HARNESS_MAIN
