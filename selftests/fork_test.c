// SPDX-License-Identifier: GPL-2.0
/*
 * fork_test.c - a forked child adopts exactly what its forking thread had at fork(), never a
 * later state of the parent, or ADOPT fails with a clear errno (ESTALE); only a child forked
 * from the context may adopt it (EPERM for one forked before the context existed, or one that
 * has exec'd, even with the fd passed through SCM_RIGHTS); an ADOPT that fails keeps no charge,
 * and one that a parent's change stalled on a user fault would hold up does not sleep where a
 * signal cannot end it; and a vfork child that touched TLS and then exec'd is forgotten before
 * its parent resumes, so the parent's fast path never answers the child's blocks.
 *
 * Children report through their exit status: 0 is success, any other value names the check
 * that failed (printed on a "#" line).
 */
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include "kselftest_harness.h"
#include "kstls_cache.h"
#include "kstls_test.h"

static const char image1[16] = "module one";
static const char image2[16] = "module two";
static const char forked_value[16] = "fork value";

/* A block big enough for its own pool (not packed), so its first touch maps a new arena. */
#define BIG (8 << 10)
#define CHILD_BUF (1 << 20)

static int adopt(int fd, int parent_fd)
{
	struct kstls_adopt a = { .parent_fd = parent_fd };

	return kstls_ioctl(fd, KSTLS_IOC_ADOPT, &a);
}

static int wait_exit_code(pid_t pid)
{
	int status;

	if (waitpid(pid, &status, 0) != pid)
		return -1;
	if (WIFSIGNALED(status))
		return 200 + WTERMSIG(status);
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

#define CHILD_CHECK(cond, code, fmt, ...)					\
	do {									\
		if (!(cond)) {							\
			ksft_print_msg("child check %d failed: " fmt "\n", code,	\
				       ##__VA_ARGS__);				\
			_exit(code);						\
		}								\
	} while (0)

/* What the parent tells its child after the child has forked. */
struct later {
	__u64 id;	/* a module the parent registered after the fork, or 0 */
	__u64 addr;	/* the parent's block of it */
};

static int read_full(int fd, void *buf, size_t len)
{
	return read(fd, buf, len) == (ssize_t)len ? 0 : -1;
}

/*
 * The child's side of the adoption checks: open, adopt @parent_fd; the module @id1 must be there
 * with the forking thread's block @b1 and its fork-time value @val (if @b1 is NULL: a fresh
 * block with the image), @later.id must be unknown. Returns only on success or ESTALE.
 */
static void child_adopts(int parent_fd, __u64 id1, const char *b1, const char *val,
			 struct later later)
{
	char *p;
	int fd = kstls_open(), ret;

	CHILD_CHECK(fd >= 0, 20, "open: %s", strerror(errno));
	ret = adopt(fd, parent_fd);
	if (ret == -ESTALE) {
		ksft_print_msg("ADOPT refused with ESTALE: the parent changed since the fork\n");
		_exit(0);
	}
	CHILD_CHECK(!ret, 21, "ADOPT: %s", strerror(-ret));
	if (later.id) {
		ret = kstls_get(fd, later.id, 0, (void **)&p);
		CHILD_CHECK(ret == -EINVAL, 22,
			    "GET_ADDR of a module registered after the fork: %s, %p (the parent's block: %#llx)",
			    strerror(-ret), ret ? NULL : p, (unsigned long long)later.addr);
	}
	ret = kstls_get(fd, id1, 0, (void **)&p);
	CHILD_CHECK(!ret, 23, "GET_ADDR of a module registered before the fork: %s",
		    strerror(-ret));
	if (b1)
		CHILD_CHECK(p == b1 && !strcmp(p, val), 24, "block %p \"%.15s\", forked %p \"%s\"",
			    p, p, b1, val);
	else
		CHILD_CHECK(!memcmp(p, image1, sizeof(image1)), 25, "block %p \"%.15s\"", p, p);
	close(fd);
}

/* The child's own memory is its own: @buf still reads @c throughout, after close too. */
static void child_buffer_intact(const unsigned char *buf, size_t len, unsigned char c, int code)
{
	for (size_t i = 0; i < len; i++)
		CHILD_CHECK(buf[i] == c, code, "its own buffer changed at +%zu: %#x", i, buf[i]);
}

FIXTURE(fork)
{
	int fd;
	__u64 id1;
	char *b1;
	int go[2], back[2];
};

FIXTURE_SETUP(fork)
{
	self->fd = kstls_open();
	ASSERT_LE(0, self->fd) TH_LOG("open %s: %s", KSTLS_DEVICE_PATH, strerror(errno));
	ASSERT_EQ(0, kstls_reg(self->fd, image1, sizeof(image1), 64, 16, 0, &self->id1));
	ASSERT_EQ(0, pipe(self->go));
	ASSERT_EQ(0, pipe(self->back));
}

FIXTURE_TEARDOWN(fork)
{
	close(self->fd);
	close(self->go[0]);
	close(self->go[1]);
	close(self->back[0]);
	close(self->back[1]);
}

/*
 * The scenario seen in the review: the parent registers and touches a module after the fork,
 * which maps a new arena; the child's own mmap lands where that arena is in the parent. The
 * child must not get that module, and its own buffer must stay its own.
 */
TEST_F(fork, adopt_is_the_fork_time_state)
{
	struct later later = { 0 };
	pid_t pid;
	char *p;

	ASSERT_EQ(0, kstls_get(self->fd, self->id1, 0, (void **)&self->b1));
	strcpy(self->b1, forked_value);
	pid = fork();
	ASSERT_LE(0, pid);
	if (pid == 0) {
		unsigned char *buf;

		CHILD_CHECK(!read_full(self->go[0], &later, sizeof(later)), 10, "no word from parent");
		buf = mmap(NULL, CHILD_BUF, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1,
			   0);
		CHILD_CHECK(buf != MAP_FAILED, 11, "mmap");
		memset(buf, 'C', CHILD_BUF);
		ksft_print_msg("child buffer %p-%p, the parent's later block %#llx %s\n", buf,
			       buf + CHILD_BUF, (unsigned long long)later.addr,
			       later.addr >= (uintptr_t)buf && later.addr < (uintptr_t)buf + CHILD_BUF ?
			       "inside it" : "outside it");
		child_adopts(self->fd, self->id1, self->b1, forked_value, later);
		child_buffer_intact(buf, CHILD_BUF, 'C', 30);
		_exit(0);
	}
	/* After the fork: a new module, touched, in a new arena. */
	ASSERT_EQ(0, kstls_reg(self->fd, image2, sizeof(image2), BIG, 8, 0, &later.id));
	ASSERT_EQ(0, kstls_get(self->fd, later.id, 0, (void **)&p));
	later.addr = (uintptr_t)p;
	ASSERT_EQ(sizeof(later), write(self->go[1], &later, sizeof(later)));
	ASSERT_EQ(0, wait_exit_code(pid));
	ASSERT_STREQ(forked_value, self->b1);
}

/* A module the parent unregisters after the fork is still the child's, with its value. */
TEST_F(fork, adopt_keeps_what_the_parent_dropped_later)
{
	struct later later = { 0 };
	pid_t pid;
	char c;

	ASSERT_EQ(0, kstls_get(self->fd, self->id1, 0, (void **)&self->b1));
	strcpy(self->b1, forked_value);
	pid = fork();
	ASSERT_LE(0, pid);
	if (pid == 0) {
		CHILD_CHECK(!read_full(self->go[0], &later, sizeof(later)), 10, "no word from parent");
		child_adopts(self->fd, self->id1, self->b1, forked_value, later);
		_exit(0);
	}
	ASSERT_EQ(0, kstls_unreg(self->fd, self->id1));
	ASSERT_EQ(0, kstls_reg(self->fd, image2, sizeof(image2), 64, 16, 0, &later.id));
	ASSERT_EQ(0, kstls_get(self->fd, later.id, 0, NULL));
	ASSERT_EQ(sizeof(later), write(self->go[1], &later, sizeof(later)));
	ASSERT_EQ(0, wait_exit_code(pid));
	(void)c;
}

/*
 * The forking thread had no block of the module at fork(); it touches it afterwards. The child
 * gets a fresh block (the image), not the parent's later one, which does not exist in the child.
 */
TEST_F(fork, adopt_ignores_the_forkers_later_blocks)
{
	struct later later = { 0 };
	pid_t pid;
	char *p;

	pid = fork();
	ASSERT_LE(0, pid);
	if (pid == 0) {
		CHILD_CHECK(!read_full(self->go[0], &later, sizeof(later)), 10, "no word from parent");
		child_adopts(self->fd, self->id1, NULL, NULL, later);
		_exit(0);
	}
	ASSERT_EQ(0, kstls_get(self->fd, self->id1, 0, (void **)&p));
	strcpy(p, "parent later");
	ASSERT_EQ(sizeof(later), write(self->go[1], &later, sizeof(later)));
	ASSERT_EQ(0, wait_exit_code(pid));
}

/* A child forked before the context existed gets the fd through SCM_RIGHTS: EPERM. */
TEST(child_forked_before_the_context_cannot_adopt)
{
	int sv[2], fd;
	pid_t pid;
	char *b;
	__u64 id;

	ASSERT_EQ(0, socketpair(AF_UNIX, SOCK_STREAM, 0, sv));
	pid = fork();
	ASSERT_LE(0, pid);
	if (pid == 0) {
		int got, own, ret;

		close(sv[0]);
		got = kstls_recv_fd(sv[1]);
		CHILD_CHECK(got >= 0, 10, "no fd received");
		own = kstls_open();
		CHILD_CHECK(own >= 0, 11, "open: %s", strerror(errno));
		ret = adopt(own, got);
		CHILD_CHECK(ret == -EPERM, 12, "ADOPT of a context made after the fork: %s",
			    ret ? strerror(-ret) : "success");
		_exit(0);
	}
	close(sv[1]);
	fd = kstls_open();
	ASSERT_LE(0, fd);
	ASSERT_EQ(0, kstls_reg(fd, image1, sizeof(image1), 64, 16, 0, &id));
	ASSERT_EQ(0, kstls_get(fd, id, 0, (void **)&b));
	ASSERT_EQ(0, kstls_send_fd(sv[0], fd));
	ASSERT_EQ(0, wait_exit_code(pid));
	close(fd);
	close(sv[0]);
}

/* The exec'd side of execd_child_cannot_adopt: argv[2] is the socket to receive the fd on. */
static int execd_helper(int sock)
{
	int got = kstls_recv_fd(sock), own, ret;

	if (got < 0)
		return 10;
	own = kstls_open();
	if (own < 0)
		return 11;
	ret = adopt(own, got);
	if (ret != -EPERM) {
		ksft_print_msg("exec'd child: ADOPT %s\n", ret ? strerror(-ret) : "succeeded");
		return 12;
	}
	return 0;
}

/* A child that has exec'd gets the fd through SCM_RIGHTS: EPERM (its memory is not a copy). */
TEST(execd_child_cannot_adopt)
{
	int sv[2], fd;
	char arg[16];
	pid_t pid;
	char *b;
	__u64 id;

	fd = kstls_open();
	ASSERT_LE(0, fd);
	ASSERT_EQ(0, kstls_reg(fd, image1, sizeof(image1), 64, 16, 0, &id));
	ASSERT_EQ(0, kstls_get(fd, id, 0, (void **)&b));
	ASSERT_EQ(0, socketpair(AF_UNIX, SOCK_STREAM, 0, sv));
	pid = fork();
	ASSERT_LE(0, pid);
	if (pid == 0) {
		close(sv[0]);
		snprintf(arg, sizeof(arg), "%d", sv[1]);
		execl("/proc/self/exe", "fork_test", "--execd-helper", arg, (char *)NULL);
		_exit(99);
	}
	close(sv[1]);
	ASSERT_EQ(0, kstls_send_fd(sv[0], fd));
	ASSERT_EQ(0, wait_exit_code(pid));
	close(fd);
	close(sv[0]);
}

static unsigned long thread_pointer(void)
{
	unsigned long tp;

	__asm__ volatile("mov %%fs:0, %0" : "=r"(tp));
	return tp;
}

/* What the vfork child found, kept outside the stack it shares with its parent. */
static volatile int vfork_ret;
static void *vfork_block;

/*
 * A vfork child shares its parent's memory and thread pointer: it touches a module (which caches
 * it under that thread pointer) and execs. Once the parent resumes, the cache must not answer
 * the child's block to it.
 */
TEST(vfork_exec_child_is_forgotten)
{
	struct kstls_info info;
	unsigned long hit;
	void *cache;
	char *mine;
	pid_t pid;
	__u64 id;
	int fd;

	fd = kstls_open();
	ASSERT_LE(0, fd);
	ASSERT_EQ(0, kstls_info_get(fd, &info));
	if (!(info.features & KSTLS_FEAT_CACHE))
		SKIP(return, "the module offers no cache");
	cache = mmap(NULL, info.cache_size, PROT_READ, MAP_SHARED, fd, 0);
	ASSERT_NE(MAP_FAILED, cache);
	ASSERT_EQ(0, kstls_reg(fd, image1, sizeof(image1), 64, 16, 0, &id));
	pid = vfork();
	ASSERT_LE(0, pid);
	if (pid == 0) {
		vfork_ret = kstls_get(fd, id, 0, &vfork_block);
		if (!vfork_ret)
			strcpy(vfork_block, "vfork child");
		execl("/proc/self/exe", "fork_test", "--exit", (char *)NULL);
		_exit(99);
	}
	/* The child has left our memory (exec): we run again, on our own thread pointer. */
	hit = cache_lookup(cache, thread_pointer(), id, 0);
	ASSERT_EQ(0, vfork_ret);
	EXPECT_EQ(0, hit) TH_LOG("the parent's fast path answers %#lx, the vfork child's block %p",
				 hit, vfork_block);
	ASSERT_EQ(0, wait_exit_code(pid));
	/* Our own first touch: a block with the image, whatever the child left in its block. */
	ASSERT_EQ(0, kstls_get(fd, id, 0, (void **)&mine));
	EXPECT_EQ(0, memcmp(mine, image1, sizeof(image1)));
	hit = cache_lookup(cache, thread_pointer(), id, 0);
	EXPECT_TRUE(hit == 0 || hit == (uintptr_t)mine) TH_LOG("fast path %#lx, block %p", hit, mine);
	munmap(cache, info.cache_size);
	close(fd);
}

/* Modules whose images make an adopted state big: a charge left behind shows in KiB. */
#define NR_HEAVY 4
#define HEAVY_IMAGE (32 << 10)
#define RACE_TRIALS 24

struct racer {
	int fd, parent_fd, ret;
	pthread_barrier_t *start;
};

static void *race_adopt(void *arg)
{
	struct racer *r = arg;

	pthread_barrier_wait(r->start);
	r->ret = adopt(r->fd, r->parent_fd);
	return NULL;
}

/* The context's own charge, as fdinfo shows it. */
static long kernel_bytes(int fd)
{
	return kstls_fdinfo_value(fd, "kernel-bytes");
}

static long user_kbytes(int fd)
{
	struct kstls_info info;

	return kstls_info_get(fd, &info) ? -1 : (long)info.user_kbytes;
}

/*
 * The child's side of a_failed_adopt_keeps_no_charge: two threads adopt the fork at once, each
 * into a fresh context of its own; the one that loses must be left exactly as fresh as a context
 * nothing tried to adopt into, before it is closed: its own charge (fdinfo) that of a fresh
 * context, and what closing it gives back to the user's quota (INFO) no more than that.
 */
static void child_races_two_adopts(int parent_fd)
{
	int fresh = kstls_open(), late = kstls_open();
	struct racer r[2];
	pthread_barrier_t start;
	pthread_t t[2];
	long fresh_bytes, loser_bytes, before, after, slack;
	int loser;

	CHILD_CHECK(fresh >= 0 && late >= 0, 40, "open: %s", strerror(errno));
	fresh_bytes = kernel_bytes(fresh);
	CHILD_CHECK(fresh_bytes > 0, 41, "no kernel-bytes in fdinfo");
	pthread_barrier_init(&start, NULL, 2);
	for (int i = 0; i < 2; i++) {
		r[i] = (struct racer){ .fd = kstls_open(), .parent_fd = parent_fd, .start = &start };
		CHILD_CHECK(r[i].fd >= 0, 40, "open: %s", strerror(errno));
		CHILD_CHECK(kernel_bytes(r[i].fd) == fresh_bytes, 42,
			    "two fresh contexts keep %ld and %ld bytes", kernel_bytes(r[i].fd),
			    fresh_bytes);
	}
	for (int i = 0; i < 2; i++)
		CHILD_CHECK(!pthread_create(&t[i], NULL, race_adopt, &r[i]), 43, "pthread_create");
	for (int i = 0; i < 2; i++)
		pthread_join(t[i], NULL);
	CHILD_CHECK((!r[0].ret && r[1].ret == -EPERM) || (r[0].ret == -EPERM && !r[1].ret), 44,
		    "two ADOPTs of one fork: %s and %s", strerror(-r[0].ret), strerror(-r[1].ret));
	loser = r[0].ret ? 0 : 1;
	/* Before it is closed: a failed ADOPT keeps nothing. */
	loser_bytes = kernel_bytes(r[loser].fd);
	before = user_kbytes(r[loser].fd);
	close(r[loser].fd);
	after = user_kbytes(fresh);
	/* What closing it gave back: a fresh context's bytes, rounded up to KiB either way. */
	slack = (fresh_bytes + 1023) / 1024 + 1;
	CHILD_CHECK(loser_bytes == fresh_bytes && before - after <= slack, 45,
		    "the context whose ADOPT failed (%s) keeps %ld bytes, a fresh one %ld; "
		    "closing it gave back %ld KiB to the user's quota (at most %ld expected)",
		    strerror(-r[loser].ret), loser_bytes, fresh_bytes, before - after, slack);
	/* The same, one after the other: the fork is adopted already. */
	CHILD_CHECK(adopt(late, parent_fd) == -EPERM, 46, "a second ADOPT of the fork");
	CHILD_CHECK(kernel_bytes(late) == fresh_bytes, 47,
		    "the context of a late ADOPT keeps %ld bytes, a fresh one %ld",
		    kernel_bytes(late), fresh_bytes);
	_exit(0);
}

/*
 * A failed ADOPT leaves nothing charged: two threads of a child adopt its fork at the same time,
 * each into a fresh context; one wins, the other gets EPERM, and that context must keep only
 * what a fresh context keeps, at once, not until it is closed. Half of the forks are adopted
 * from a snapshot (the parent changed after the fork), half from the parent's state.
 */
TEST_F(fork, a_failed_adopt_keeps_no_charge)
{
	static char heavy[HEAVY_IMAGE];
	int failed = 0;
	__u64 id;

	memset(heavy, 'h', sizeof(heavy));
	for (int i = 0; i < NR_HEAVY; i++)
		ASSERT_EQ(0, kstls_reg(self->fd, heavy, sizeof(heavy), sizeof(heavy), 16, 0, NULL));
	ASSERT_EQ(0, kstls_get(self->fd, self->id1, 0, NULL));
	for (int trial = 0; trial < RACE_TRIALS; trial++) {
		pid_t pid = fork();
		char c;
		int code;

		ASSERT_LE(0, pid);
		if (pid == 0) {
			CHILD_CHECK(read(self->go[0], &c, 1) == 1, 10, "no word from parent");
			child_races_two_adopts(self->fd);
		}
		if (trial & 1) {
			ASSERT_EQ(0, kstls_reg(self->fd, image2, sizeof(image2), 64, 16, 0, &id));
			ASSERT_EQ(0, kstls_unreg(self->fd, id));
		}
		ASSERT_EQ(1, write(self->go[1], "g", 1));
		code = wait_exit_code(pid);
		if (code) {
			ksft_print_msg("trial %d (%s): the child failed check %d\n", trial,
				       trial & 1 ? "snapshot" : "parent's state", code);
			failed++;
		}
	}
	ksft_print_msg("%d of %d children saw a failed ADOPT keep a charge or another failure\n",
		       failed, RACE_TRIALS);
	EXPECT_EQ(0, failed);
}

/* A process's state letter in /proc/<pid>/stat, or 0. */
static char proc_state(pid_t pid)
{
	char path[64], buf[512], *p;
	ssize_t n;
	int f;

	snprintf(path, sizeof(path), "/proc/%d/stat", pid);
	f = open(path, O_RDONLY);
	if (f < 0)
		return 0;
	n = read(f, buf, sizeof(buf) - 1);
	close(f);
	if (n <= 0)
		return 0;
	buf[n] = 0;
	p = strrchr(buf, ')');
	return p && p[1] == ' ' ? p[2] : 0;
}

/* Whether @pid is reaped within @ms. */
static int reaped_within(pid_t pid, int ms, int *status)
{
	for (int waited = 0; waited < ms; waited += 10) {
		if (waitpid(pid, status, WNOHANG) == pid)
			return 1;
		usleep(10000);
	}
	return 0;
}

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

#define STALL_BLOCK (8 << 10)
#define STALL_ARENA (64 << 10)

/*
 * A child forked while another thread of the parent is in the middle of a change, stalled on a
 * user fault, cannot sleep uninterruptibly in ADOPT until the fault is resolved: the parent holds
 * its context's lock across the fault (a first touch copies the .tdata image into the block
 * with the lock held; userfaultfd holds the block's page), and whatever it ADOPTs then was not
 * the state at the fork. The child must answer at once, or wait where a signal ends the wait:
 * after a second it must not be in D state, and SIGKILL must end it while the fault is still
 * pending.
 */
TEST(adopt_behind_a_stalled_change_is_killable)
{
	struct uffdio_api api = { .api = UFFD_API };
	struct uffdio_register reg = { .mode = UFFDIO_REGISTER_MODE_MISSING };
	struct uffdio_zeropage zp = { 0 };
	struct toucher t = { 0 };
	struct uffd_msg msg;
	struct pollfd pf;
	int uffd, fd, answer[2], status, reaped, answered, ret = 0;
	pthread_t tt;
	char state;
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
	ASSERT_EQ(0, kstls_reg(fd, image1, sizeof(image1), STALL_BLOCK, 4096, 0, &id));
	/* The first block starts the arena; the next one, carved after it, is never written. */
	ASSERT_EQ(0, kstls_get(fd, id, 0, (void **)&b0));
	reg.range.start = (uintptr_t)b0 + STALL_BLOCK;
	reg.range.len = STALL_ARENA - STALL_BLOCK;
	ASSERT_EQ(0, ioctl(uffd, UFFDIO_REGISTER, &reg)) TH_LOG("UFFDIO_REGISTER: %s",
								strerror(errno));
	t = (struct toucher){ .fd = fd, .id = id };
	ASSERT_EQ(0, pthread_create(&tt, NULL, first_touch, &t));
	pf = (struct pollfd){ .fd = uffd, .events = POLLIN };
	ASSERT_EQ(1, poll(&pf, 1, 10000)) TH_LOG("no fault arrived");
	ASSERT_EQ(sizeof(msg), read(uffd, &msg, sizeof(msg)));
	ASSERT_EQ(UFFD_EVENT_PAGEFAULT, msg.event);

	/* Forked while the change is stalled, with the context's lock held. */
	ASSERT_EQ(0, pipe(answer));
	pid = fork();
	ASSERT_LE(0, pid);
	if (pid == 0) {
		int own = kstls_open(), r;

		if (own < 0)
			_exit(10);
		r = adopt(own, fd);
		if (write(answer[1], &r, sizeof(r)) != sizeof(r))
			_exit(11);
		_exit(0);
	}
	close(answer[1]);
	pf = (struct pollfd){ .fd = answer[0], .events = POLLIN };
	answered = poll(&pf, 1, 1000) == 1 && read(answer[0], &ret, sizeof(ret)) == sizeof(ret);
	state = proc_state(pid);
	ksft_print_msg("a second after the fork: ADOPT %s, the child's state %c\n",
		       answered ? (ret ? strerror(-ret) : "succeeded") : "not answered",
		       state ? state : '?');
	kill(pid, SIGKILL);
	reaped = reaped_within(pid, 3000, &status);
	ksft_print_msg("SIGKILL %s the child while the fault is pending\n",
		       reaped ? "ended" : "did not end");

	/* Resolve the fault: the toucher finishes, and so does the child, whatever it did. */
	zp.range.start = msg.arg.pagefault.address & ~4095ULL;
	zp.range.len = 4096;
	ASSERT_EQ(0, ioctl(uffd, UFFDIO_ZEROPAGE, &zp));
	ASSERT_EQ(0, pthread_join(tt, NULL));
	if (!reaped)
		ASSERT_EQ(pid, waitpid(pid, &status, 0));
	close(uffd);
	close(answer[0]);

	EXPECT_EQ(0, t.ret);
	EXPECT_NE('D', state) TH_LOG("the child sleeps uninterruptibly in ADOPT behind the parent's fault");
	EXPECT_TRUE(reaped) TH_LOG("SIGKILL did not end the child's ADOPT while the fault was pending");
	if (answered)
		EXPECT_TRUE(ret == 0 || ret == -ESTALE) TH_LOG("ADOPT: %s", strerror(-ret));
	close(fd);
}

int main(int argc, char **argv)
{
	if (argc == 3 && !strcmp(argv[1], "--execd-helper"))
		return execd_helper(atoi(argv[2]));
	if (argc == 2 && !strcmp(argv[1], "--exit"))
		return 0;
	return test_harness_run(argc, argv);
}
