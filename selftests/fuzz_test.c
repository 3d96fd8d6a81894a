// SPDX-License-Identifier: GPL-2.0
/*
 * fuzz_test.c - a seeded, time- and count-bounded fuzzer for /dev/kstls.
 *
 * Eight threads send random and boundary ioctls (random commands, mutated numbers and sizes,
 * bad, unmapped, kernel, read-only, misaligned and page-straddling pointers, random struct
 * contents, live and stale module ids, reserved bits) while other threads register, unregister
 * and touch modules, start and end short-lived threads, and the process forks children that use
 * the inherited fd, adopt it, exec, and pass it over SCM_RIGHTS to other processes. Every ioctl
 * must return 0 or one of the documented errnos, every address GET_ADDR returns must be inside
 * the block it names, and nothing may crash; the kernel log is judged by the runner afterwards.
 *
 * Two more contexts of the same process have workers of their own, whose checks are exact
 * (the random ioctls never reach them):
 *  - fork-heavy (fd_fork): two forking threads each keep modules of their own, touched and
 *    stamped (a value written into each block) before every fork; a child opens a context,
 *    ADOPTs, and must find the forking thread's modules at the same addresses with the stamps,
 *    the other forking thread's modules fresh (their image, not that thread's stamps), then
 *    touches new modules and forks a grandchild, whose ADOPT (its parent has one thread) must
 *    never be ESTALE and must find all of it again. Meanwhile other threads of the parent
 *    register, first-touch and unregister modules of their own in that context.
 *  - dlopen-heavy (fd_dl): threads register and unregister modules in a tight loop, as dlopen
 *    and dlclose of served objects do, while short-lived threads first-touch them: a block that
 *    GET_ADDR returns must be aligned as registered and hold the module's image whenever the
 *    module was live before and after the read.
 *
 * KSTLS_FUZZ_SEED (default: time-based, printed) replays a run's per-thread sequences;
 * KSTLS_FUZZ_SECONDS (default 40) and KSTLS_FUZZ_IOCTLS (default unbounded) bound it;
 * KSTLS_FUZZ_CHURNERS (default 1) threads start and end batches of short-lived threads. With
 * both KSTLS_FUZZ_IOCTLS and KSTLS_FUZZ_EXITS set, the run ends once both counts are reached.
 */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>

#include "kselftest_harness.h"
#include "kstls_test.h"

#define NFUZZ 8
#define NIDS 16

static int fd, fd_fork, fd_dl;
static long page;
static unsigned char *rw, *ro, *hole, *edge;	/* buffers for arguments */
static _Atomic __u64 ids[NIDS];			/* module ids, live or stale */
static atomic_long nioctls, nexits, nforks, nstale, nbad;

/* A child's exit status: ADOPT refused with ESTALE (see child_checks). */
#define CHILD_STALE 10
/* A fork-heavy child's: ADOPT or a new module refused for want of memory or quota. */
#define CHILD_REFUSED 11
static atomic_int stop;
static long max_ioctls, min_exits;
static time_t deadline;
static unsigned int seed;
static char badmsg[256];

static __u64 rnd64(unsigned int *s)
{
	return ((__u64)rand_r(s) << 33) ^ ((__u64)rand_r(s) << 11) ^ (__u64)rand_r(s);
}

/* Boundary values first, then random ones. */
static __u64 pick_value(unsigned int *s)
{
	static const __u64 edges[] = { 0, 1, 2, 3, 7, 8, 15, 16, 63, 64, 4095, 4096, 4097,
				       1 << 20, (1 << 20) + 1, 1ULL << 31, 1ULL << 32,
				       (1ULL << 32) + 1, 1ULL << 63, ~0ULL, ~0ULL - 1 };

	switch (rand_r(s) % 4) {
	case 0:
	case 1:
		return edges[rand_r(s) % (sizeof(edges) / sizeof(edges[0]))];
	case 2:
		return atomic_load(&ids[rand_r(s) % NIDS]);
	default:
		return rnd64(s);
	}
}

static void *pick_pointer(unsigned int *s, size_t len)
{
	switch (rand_r(s) % 10) {
	case 0:
		return NULL;
	case 1:
		return (void *)0xffffffff81000000UL;
	case 2:
		return hole;
	case 3:
		return ro + rand_r(s) % page;
	case 4:
		return edge + page - (rand_r(s) % (len + 1));	/* straddles into a hole */
	case 5:
		return (void *)(uintptr_t)rnd64(s);
	default:
		return rw + rand_r(s) % (page - 128);	/* valid, often misaligned */
	}
}

static const unsigned long cmds[] = { KSTLS_IOC_INFO, KSTLS_IOC_REGISTER, KSTLS_IOC_UNREGISTER,
				      KSTLS_IOC_GET_ADDR, KSTLS_IOC_STATS, KSTLS_IOC_ADOPT,
				      KSTLS_IOC_SET_MODE };

static int allowed(int err)
{
	return err == EINVAL || err == EFAULT || err == ENOTTY || err == EPERM || err == E2BIG ||
	       err == ENOSPC || err == ENOMEM || err == EBADF || err == EDQUOT || err == ESTALE;
}

static void note_bad(const char *what, unsigned long cmd, int err)
{
	if (atomic_fetch_add(&nbad, 1) == 0)
		snprintf(badmsg, sizeof(badmsg), "%s: cmd %#lx errno %d (%s)", what, cmd, err,
			 strerror(err));
}

static int done(void)
{
	return atomic_load(&stop) || time(NULL) >= deadline ||
	       (max_ioctls && atomic_load(&nioctls) >= max_ioctls &&
		atomic_load(&nexits) >= min_exits);
}

static void *fuzz_thread(void *arg)
{
	unsigned int s = seed + (unsigned int)(uintptr_t)arg;

	while (!done()) {
		unsigned long cmd = cmds[rand_r(&s) % (sizeof(cmds) / sizeof(cmds[0]))];
		unsigned char *buf = rw + 2048 + (rand_r(&s) % 8) * 128;
		void *argp;
		int ret;

		switch (rand_r(&s) % 5) {
		case 0:	/* a random command */
			cmd = (unsigned long)rnd64(&s) & 0xffffffff;
			break;
		case 1:	/* a mutated one: another nr, size or direction */
			cmd ^= 1UL << (rand_r(&s) % 32);
			break;
		default:
			break;
		}
		if (rand_r(&s) % 3) {
			/* A plausible struct: boundary values in every field. */
			for (int w = 0; w < 10; w++) {
				__u64 v = pick_value(&s);

				memcpy(buf + 8 * w, &v, 8);
			}
			if (cmd == KSTLS_IOC_REGISTER && rand_r(&s) % 2) {
				struct kstls_register r = {
					.image = (__u64)(uintptr_t)pick_pointer(&s, 64),
					.filesz = rand_r(&s) % 200, .memsz = 200 + rand_r(&s) % 5000,
					.align = 1ULL << (rand_r(&s) % 14),
				};
				r.align_offset = r.align > 1 ? rand_r(&s) % r.align : 0;
				memcpy(buf, &r, sizeof(r));
			}
			if (cmd == KSTLS_IOC_ADOPT)
				*(__u32 *)buf = rand_r(&s) % 8;
			argp = buf + rand_r(&s) % 8 * (rand_r(&s) % 2);
		} else {
			argp = pick_pointer(&s, 80);
		}
		ret = ioctl(fd, cmd, argp);
		atomic_fetch_add(&nioctls, 1);
		if (ret == -1 && !allowed(errno))
			note_bad("unexpected errno", cmd, errno);
		if (ret == 0 && cmd == KSTLS_IOC_REGISTER) {
			__u64 id;

			memcpy(&id, (char *)argp + offsetof(struct kstls_register, module), 8);
			atomic_store(&ids[rand_r(&s) % NIDS], id);
		}
		if (ret == 0 && cmd == KSTLS_IOC_SET_MODE && rand_r(&s) % 2) {
			struct kstls_mode m = { 0 };	/* don't stay strict for long */

			ioctl(fd, KSTLS_IOC_SET_MODE, &m);
		}
	}
	return NULL;
}

/* Registers, touches and unregisters modules; checks every address it gets. */
/*
 * Reads @len bytes at @p into @out through a pipe, so that a block unmapped by a concurrent
 * UNREGISTER (fuzz threads may guess live ids) is an EFAULT, not a crash.
 */
static int read_user(int pipefd[2], const void *p, void *out, size_t len)
{
	if (write(pipefd[1], p, len) != (ssize_t)len)
		return -1;
	return read(pipefd[0], out, len) == (ssize_t)len ? 0 : -1;
}

static void *module_thread(void *arg)
{
	unsigned int s = seed + 100 + (unsigned int)(uintptr_t)arg;
	static const unsigned char img[64] = "fuzz image";
	unsigned char got[sizeof(img)];
	int pipefd[2];

	if (pipe(pipefd))
		return NULL;
	while (!done()) {
		__u64 align = 1ULL << (rand_r(&s) % 13), memsz = 64 + rand_r(&s) % 4096, id;
		__u64 off = align > 1 ? rand_r(&s) % align : 0;
		void *p;
		int ret = kstls_reg(fd, img, sizeof(img), memsz, align, off, &id);

		atomic_fetch_add(&nioctls, 1);
		if (ret) {
			if (!allowed(-ret))
				note_bad("register", KSTLS_IOC_REGISTER, -ret);
			continue;
		}
		ret = kstls_get(fd, id, memsz - 1, &p);
		atomic_fetch_add(&nioctls, 1);
		if (ret == 0 && ((uintptr_t)p - (memsz - 1)) % align != off)
			note_bad("misaligned block", KSTLS_IOC_GET_ADDR, 0);
		else if (ret == 0 && !read_user(pipefd, (char *)p - (memsz - 1), got, sizeof(got)) &&
			 memcmp(got, img, sizeof(img)))
			note_bad("uninitialised block", KSTLS_IOC_GET_ADDR, 0);
		else if (ret && !allowed(-ret))
			note_bad("get_addr", KSTLS_IOC_GET_ADDR, -ret);
		__u64 old = atomic_exchange(&ids[rand_r(&s) % NIDS], id);

		if (old && rand_r(&s) % 2) {
			ret = kstls_unreg(fd, old);
			atomic_fetch_add(&nioctls, 1);
			if (ret && ret != -EINVAL)
				note_bad("unregister", KSTLS_IOC_UNREGISTER, -ret);
		}
	}
	close(pipefd[0]);
	close(pipefd[1]);
	return NULL;
}

static void *short_lived(void *arg)
{
	unsigned int s = (unsigned int)(uintptr_t)arg;

	for (int i = 0; i < 4; i++)
		kstls_get(fd, atomic_load(&ids[rand_r(&s) % NIDS]), rand_r(&s) % 64, NULL);
	atomic_fetch_add(&nioctls, 4);
	return NULL;
}

static void *churn_thread(void *arg)
{
	unsigned int s = seed + 200 + (unsigned int)(uintptr_t)arg;

	while (!done()) {
		pthread_t t[8];
		int n = 0;

		for (int i = 0; i < 8; i++)
			n += pthread_create(&t[n], NULL, short_lived, (void *)(uintptr_t)rand_r(&s)) == 0;
		for (int i = 0; i < n; i++)
			pthread_join(t[i], NULL);
		atomic_fetch_add(&nexits, n);
	}
	return NULL;
}

/* Children: the inherited fd must be refused, ADOPT must work, exec must drop everything. */
static int child_checks(unsigned int s)
{
	struct kstls_adopt a = { .parent_fd = (__u32)fd };
	int own, sv[2];

	if (kstls_get(fd, atomic_load(&ids[0]), 0, NULL) != -EPERM)
		return 1;
	own = kstls_open();
	if (own < 0)
		return 2;
	if (ioctl(own, KSTLS_IOC_ADOPT, &a)) {
		/*
		 * Another thread of the parent was changing the context (mapping or unmapping its
		 * memory) as the parent forked: the state at the fork cannot be had, and ADOPT says
		 * so rather than hand a later one. Anything else is a problem.
		 */
		if (errno == ESTALE)
			return CHILD_STALE;
		ksft_print_msg("child: ADOPT: %s\n", strerror(errno));
		return 3;
	}
	for (int i = 0; i < 20; i++)
		kstls_get(own, atomic_load(&ids[rand_r(&s) % NIDS]), rand_r(&s) % 64, NULL);
	/* Pass our own context to a grandchild, which must not be able to use it. */
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0) {
		pid_t g = fork();

		if (g == 0) {
			int got = kstls_recv_fd(sv[1]);
			struct kstls_info info;

			_exit(got >= 0 && kstls_info_get(got, &info) == -EPERM ? 0 : 1);
		}
		kstls_send_fd(sv[0], own);
		int st;

		if (g > 0 && (waitpid(g, &st, 0) != g || !WIFEXITED(st) || WEXITSTATUS(st)))
			return 4;
	}
	if (rand_r(&s) % 4 == 0)
		execl("/bin/true", "true", (char *)NULL);
	return 0;
}

static void *fork_thread(void *arg)
{
	unsigned int s = seed + 300;

	(void)arg;
	while (!done()) {
		pid_t pid = fork();
		int st;

		if (pid == 0)
			_exit(child_checks(rand_r(&s)));
		if (pid < 0)
			continue;
		atomic_fetch_add(&nforks, 1);
		if (waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == CHILD_STALE) {
			atomic_fetch_add(&nstale, 1);
		} else if (!WIFEXITED(st) || WEXITSTATUS(st)) {
			if (atomic_fetch_add(&nbad, 1) == 0)
				snprintf(badmsg, sizeof(badmsg), "child failed: status %#x", st);
		}
		usleep(20000);
	}
	return NULL;
}

/* --- fork-heavy workers, on fd_fork --------------------------------------------------------- */

#define NFORKERS 2
#define NOWN 4		/* modules of each forking thread */
#define NNEW 2		/* modules a fork-heavy child registers */
#define STAMP_MAGIC 0x6b73746c00000000ULL

struct own_module {
	__u64 id, memsz, align, off;
	unsigned char img[64];
	unsigned char *block;	/* the forking thread's block (offset 0) */
	__u64 stamp;		/* written at the start of the block before the fork */
};

/* Each forking thread's modules, published for the other one's children (ids only). */
static _Atomic __u64 forker_ids[NFORKERS][NOWN];
static atomic_long nfh_forks, nfh_adopted, nfh_stale, nfh_refused;
/* Counted by the fork-heavy children, in memory they share with the test (MAP_SHARED). */
static atomic_long *nfh_grandchildren;
static atomic_long ndl_regs, ndl_touches, ndl_threads;

/* A module of random geometry (packed or not) with a recognisable image. */
static int new_module(int cfd, unsigned int *s, struct own_module *m, unsigned int pattern)
{
	m->align = 1ULL << (3 + rand_r(s) % 10);
	m->off = m->align > 8 ? (rand_r(s) % (m->align / 8)) * 8 : 0;
	m->memsz = rand_r(s) % 2 ? 64 + rand_r(s) % (KSTLS_PACKED_MAX - 64) : 1024 + rand_r(s) % 8192;
	kstls_pattern(m->img, sizeof(m->img), pattern);
	return kstls_reg(cfd, m->img, sizeof(m->img), m->memsz, m->align, m->off, &m->id);
}

/*
 * In a fork-heavy child or grandchild: module @m, after ADOPT on @own, is where the forking
 * thread had it, with the stamp, the rest of its image, and its alignment. 0 or why not.
 */
static int check_adopted(int own, const struct own_module *m)
{
	void *p;
	int ret = kstls_get(own, m->id, 0, &p);

	if (ret)
		return ret == -ENOMEM || ret == -EDQUOT ? CHILD_REFUSED : 20;
	if (p != m->block)
		return 21;
	if (memcmp(p, &m->stamp, 8) || memcmp((char *)p + 8, m->img + 8, sizeof(m->img) - 8))
		return 22;
	if ((uintptr_t)p % m->align != m->off)
		return 23;
	return 0;
}

/* A module the forking thread never touched: a fresh block, its image as registered. */
static int check_fresh(int own, __u64 id, unsigned int pattern)
{
	unsigned char img[64];
	void *p;
	int ret = kstls_get(own, id, 0, &p);

	if (ret == -EINVAL)	/* unregistered before the fork */
		return 0;
	if (ret)
		return ret == -ENOMEM || ret == -EDQUOT ? CHILD_REFUSED : 30;
	kstls_pattern(img, sizeof(img), pattern);
	return memcmp(p, img, sizeof(img)) ? 31 : 0;
}

static int adopt(int own, int parent)
{
	struct kstls_adopt a = { .parent_fd = (__u32)parent };

	return kstls_ioctl(own, KSTLS_IOC_ADOPT, &a);
}

/* A grandchild: forked by a child with one thread, so ADOPT must work; all of it again. */
static int grandchild(int parent, const struct own_module *mods, int n)
{
	int own = kstls_open(), ret;

	if (own < 0)
		return 40;
	ret = adopt(own, parent);
	if (ret)
		return ret == -ENOMEM || ret == -EDQUOT ? CHILD_REFUSED : 41;	/* ESTALE too */
	for (int i = 0; i < n; i++)
		if ((ret = check_adopted(own, &mods[i])))
			return ret;
	return 0;
}

/* A fork-heavy child of forking thread @f: the checks of the header. 0 or a failure code. */
static int fork_child(int f, unsigned int s, struct own_module *mods, const __u64 *other_ids)
{
	struct own_module all[NOWN + NNEW];
	int own, ret, st;
	pid_t g;

	if (kstls_get(fd_fork, mods[0].id, 0, NULL) != -EPERM)
		return 50;
	own = kstls_open();
	if (own < 0)
		return 51;
	ret = adopt(own, fd_fork);
	if (ret == -ESTALE)
		return CHILD_STALE;
	if (ret)
		return ret == -ENOMEM || ret == -EDQUOT ? CHILD_REFUSED : 52;
	for (int i = 0; i < NOWN; i++)
		if ((ret = check_adopted(own, &mods[i])))
			return ret;
	for (int i = 0; i < NOWN; i++)
		if (other_ids[i] && (ret = check_fresh(own, other_ids[i], (1 - f) * 16 + i)))
			return ret;
	/* New modules of the child's own, touched and stamped too. */
	memcpy(all, mods, NOWN * sizeof(*mods));
	for (int i = NOWN; i < NOWN + NNEW; i++) {
		struct own_module *m = &all[i];
		void *p;

		ret = new_module(own, &s, m, 100 + i);
		if (!ret)
			ret = kstls_get(own, m->id, 0, &p);
		if (ret)
			return ret == -ENOMEM || ret == -EDQUOT || ret == -ENOSPC ||
			       ret == -E2BIG ? CHILD_REFUSED : 53;
		if (memcmp(p, m->img, sizeof(m->img)) || (uintptr_t)p % m->align != m->off)
			return 54;
		m->block = p;
		m->stamp = STAMP_MAGIC | rand_r(&s);
		memcpy(p, &m->stamp, 8);
	}
	g = fork();
	if (g == 0)
		_exit(grandchild(own, all, NOWN + NNEW));
	if (g < 0)
		return 0;
	if (waitpid(g, &st, 0) != g || !WIFEXITED(st))
		return 55;
	if (WEXITSTATUS(st) == 0)
		atomic_fetch_add(nfh_grandchildren, 1);
	return WEXITSTATUS(st) == CHILD_REFUSED ? 0 : WEXITSTATUS(st);
}

static void fh_bad(const char *what, int code)
{
	if (atomic_fetch_add(&nbad, 1) == 0)
		snprintf(badmsg, sizeof(badmsg), "fork-heavy: %s (status %#x)", what, code);
}

/* A forking thread: its modules touched and stamped, a fork, the child's verdict. */
static void *forker_thread(void *arg)
{
	int f = (int)(uintptr_t)arg;
	unsigned int s = seed + 400 + f;
	struct own_module mods[NOWN] = { 0 };
	__u64 iter = 0;

	while (!done()) {
		__u64 other[NOWN];
		int ok = 1, st;
		pid_t pid;

		iter++;
		for (int i = 0; i < NOWN && ok; i++) {
			struct own_module *m = &mods[i];
			void *p, *q;
			int ret;

			/* Now and then a module of its own goes and another comes (dlclose, dlopen). */
			if (m->id && rand_r(&s) % 12 == 0) {
				atomic_store(&forker_ids[f][i], 0);
				if ((ret = kstls_unreg(fd_fork, m->id)))
					fh_bad("unregister of an own module", ret);
				m->id = 0;
			}
			if (!m->id) {
				ret = new_module(fd_fork, &s, m, f * 16 + i);
				if (ret) {
					if (!allowed(-ret))
						fh_bad("register", ret);
					m->id = 0;
					ok = 0;
					break;
				}
				atomic_store(&forker_ids[f][i], m->id);
			}
			ret = kstls_get(fd_fork, m->id, 0, &p);
			if (ret == 0)
				ret = kstls_get(fd_fork, m->id, m->memsz - 1, &q);
			if (ret) {
				if (ret != -ENOMEM && ret != -EDQUOT)
					fh_bad("get_addr of an own module", ret);
				ok = 0;
				break;
			}
			if ((char *)q != (char *)p + m->memsz - 1 || (uintptr_t)p % m->align != m->off)
				fh_bad("own block moved or misaligned", 0);
			m->block = p;
			m->stamp = STAMP_MAGIC | (iter << 8) | (__u64)(f * NOWN + i);
			memcpy(p, &m->stamp, 8);
		}
		if (!ok) {
			usleep(1000);
			continue;
		}
		for (int i = 0; i < NOWN; i++)
			other[i] = atomic_load(&forker_ids[1 - f][i]);
		pid = fork();
		if (pid == 0)
			_exit(fork_child(f, rand_r(&s), mods, other));
		if (pid < 0)
			continue;
		atomic_fetch_add(&nfh_forks, 1);
		if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st)) {
			fh_bad("child died", st);
		} else if (WEXITSTATUS(st) == CHILD_STALE) {
			atomic_fetch_add(&nfh_stale, 1);
		} else if (WEXITSTATUS(st) == CHILD_REFUSED) {
			atomic_fetch_add(&nfh_refused, 1);
		} else if (WEXITSTATUS(st)) {
			fh_bad("child check failed (20s: adopted module, 30s: fresh module, 40s:"
			       " grandchild ADOPT, 50s: child)", WEXITSTATUS(st));
		} else {
			atomic_fetch_add(&nfh_adopted, 1);
		}
	}
	return NULL;
}

/* Another thread of the forking process: registers, first-touches, unregisters on fd_fork. */
static void *fork_churn_thread(void *arg)
{
	unsigned int s = seed + 500 + (unsigned int)(uintptr_t)arg;
	__u64 mine[8] = { 0 };

	while (!done()) {
		struct own_module m;
		int k = rand_r(&s) % 8, ret;

		if (mine[k]) {
			ret = kstls_unreg(fd_fork, mine[k]);
			if (ret)
				fh_bad("churn: unregister", ret);
			mine[k] = 0;
		}
		ret = new_module(fd_fork, &s, &m, 200 + k);
		if (ret) {
			if (!allowed(-ret))
				fh_bad("churn: register", ret);
			continue;
		}
		mine[k] = m.id;
		ret = kstls_get(fd_fork, m.id, rand_r(&s) % m.memsz, NULL);
		if (ret && ret != -ENOMEM && ret != -EDQUOT)
			fh_bad("churn: get_addr", ret);
		/* First touches of the forking threads' modules by this thread. */
		ret = kstls_get(fd_fork, atomic_load(&forker_ids[rand_r(&s) % NFORKERS][k % NOWN]), 0,
				NULL);
		if (ret && ret != -EINVAL && ret != -ENOMEM && ret != -EDQUOT)
			fh_bad("churn: get_addr of a forking thread's module", ret);
		/* Quiet spells now and then, so that some forks see no change under way. */
		if (rand_r(&s) % 2 == 0)
			usleep(rand_r(&s) % 5000);
	}
	return NULL;
}

/* --- dlopen-heavy workers, on fd_dl ---------------------------------------------------------- */

#define NDL_SLOTS 8

/* The modules live now, for the touching threads; entry.id 0: none. */
static struct dl_entry {
	__u64 id, memsz, align, off;
	unsigned int pattern;
} dl_slots[NDL_SLOTS];
static pthread_mutex_t dl_lock = PTHREAD_MUTEX_INITIALIZER;

static void dl_bad(const char *what, int err)
{
	if (atomic_fetch_add(&nbad, 1) == 0)
		snprintf(badmsg, sizeof(badmsg), "dlopen-heavy: %s (%d)", what, err);
}

/* Registers a module, puts it in a slot, unregisters the one that was there: dlopen, dlclose. */
static void *dl_thread(void *arg)
{
	unsigned int s = seed + 600 + (unsigned int)(uintptr_t)arg;

	while (!done()) {
		struct own_module m;
		struct dl_entry e, old;
		unsigned int pattern = rand_r(&s);
		int k = rand_r(&s) % NDL_SLOTS, ret = new_module(fd_dl, &s, &m, pattern);

		atomic_fetch_add(&ndl_regs, 1);
		if (ret) {
			if (!allowed(-ret))
				dl_bad("register", ret);
			continue;
		}
		e = (struct dl_entry){ m.id, m.memsz, m.align, m.off, pattern };
		pthread_mutex_lock(&dl_lock);
		old = dl_slots[k];
		dl_slots[k] = e;
		pthread_mutex_unlock(&dl_lock);
		if (old.id && (ret = kstls_unreg(fd_dl, old.id)))
			dl_bad("unregister", ret);
	}
	return NULL;
}

/* A short-lived thread: first touches of the live modules, each checked. */
static void *dl_toucher(void *arg)
{
	unsigned int s = (unsigned int)(uintptr_t)arg;
	unsigned char img[64], got[64];
	int pipefd[2];

	if (pipe(pipefd))
		return NULL;
	for (int n = 0; n < 32 && !done(); n++) {
		struct dl_entry e;
		void *p, *q;
		__u64 off;
		int ret;

		pthread_mutex_lock(&dl_lock);
		e = dl_slots[rand_r(&s) % NDL_SLOTS];
		pthread_mutex_unlock(&dl_lock);
		if (!e.id)
			continue;
		off = rand_r(&s) % e.memsz;
		ret = kstls_get(fd_dl, e.id, off, &p);
		atomic_fetch_add(&ndl_touches, 1);
		if (ret) {
			if (ret != -EINVAL && ret != -ENOMEM && ret != -EDQUOT)
				dl_bad("get_addr", ret);
			continue;
		}
		p = (char *)p - off;
		if ((uintptr_t)p % e.align != e.off)
			dl_bad("misaligned block", (int)e.align);
		kstls_pattern(img, sizeof(img), e.pattern);
		/* Through a pipe: a block unmapped by the racing UNREGISTER is an EFAULT. */
		if (read_user(pipefd, p, got, sizeof(got)) || !memcmp(got, img, sizeof(img)))
			continue;
		/* Live again after the read: it was live during it (ids are never reused). */
		if (kstls_get(fd_dl, e.id, 0, &q) == 0)
			dl_bad(q == p ? "a live module's block does not hold its image"
				      : "a live module's block moved", 0);
	}
	close(pipefd[0]);
	close(pipefd[1]);
	return NULL;
}

static void *dl_touch_thread(void *arg)
{
	unsigned int s = seed + 700 + (unsigned int)(uintptr_t)arg;

	while (!done()) {
		pthread_t t;

		if (pthread_create(&t, NULL, dl_toucher, (void *)(uintptr_t)rand_r(&s)) == 0) {
			pthread_join(t, NULL);
			atomic_fetch_add(&ndl_threads, 1);
		}
	}
	return NULL;
}

static void *map_pages(int prot)
{
	void *p = mmap(NULL, page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p != MAP_FAILED && prot != (PROT_READ | PROT_WRITE))
		mprotect(p, page, prot);
	return p;
}

FIXTURE(fuzz)
{
};

FIXTURE_SETUP(fuzz)
{
}

FIXTURE_TEARDOWN(fuzz)
{
}

TEST_F_TIMEOUT(fuzz, random_ioctls_with_threads_forks_and_exits, 7200)
{
	const char *e;
	long secs = (e = getenv("KSTLS_FUZZ_SECONDS")) ? atol(e) : 40;
	long churners = (e = getenv("KSTLS_FUZZ_CHURNERS")) ? atol(e) : 1;
	pthread_t t[NFUZZ + 3 + 16 + 8];
	struct kstls_info info;
	int n = 0;

	seed = (e = getenv("KSTLS_FUZZ_SEED")) ? (unsigned int)strtoul(e, NULL, 0)
					      : (unsigned int)(time(NULL) ^ getpid());
	max_ioctls = (e = getenv("KSTLS_FUZZ_IOCTLS")) ? atol(e) : 0;
	min_exits = (e = getenv("KSTLS_FUZZ_EXITS")) ? atol(e) : 0;
	ksft_print_msg("seed %u (replay with KSTLS_FUZZ_SEED=%u), %ld s\n", seed, seed, secs);
	page = sysconf(_SC_PAGESIZE);
	/* Before the hole after edge is made: a mapping of one page would fill it. */
	nfh_grandchildren = mmap(NULL, page, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
				 -1, 0);
	ASSERT_NE(MAP_FAILED, nfh_grandchildren);
	rw = map_pages(PROT_READ | PROT_WRITE);
	ro = map_pages(PROT_READ);
	hole = map_pages(PROT_NONE);
	edge = mmap(NULL, 2 * page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ASSERT_NE(MAP_FAILED, edge);
	ASSERT_EQ(0, munmap(edge + page, page));
	fd = kstls_open();
	ASSERT_LE(0, fd);
	ASSERT_EQ(0, kstls_info_get(fd, &info));
	/* With the cache mapped, GET_ADDR also exercises the fill and exit paths. */
	if (info.cache_size)
		ASSERT_NE(MAP_FAILED, mmap(NULL, info.cache_size, PROT_READ, MAP_SHARED, fd, 0));
	/* The fork-heavy and dlopen-heavy workers' contexts, cached too. */
	fd_fork = kstls_open();
	ASSERT_LE(0, fd_fork);
	fd_dl = kstls_open();
	ASSERT_LE(0, fd_dl);
	if (info.cache_size) {
		ASSERT_NE(MAP_FAILED, mmap(NULL, info.cache_size, PROT_READ, MAP_SHARED, fd_fork, 0));
		ASSERT_NE(MAP_FAILED, mmap(NULL, info.cache_size, PROT_READ, MAP_SHARED, fd_dl, 0));
	}
	deadline = time(NULL) + secs;
	for (long i = 0; i < NFUZZ; i++)
		ASSERT_EQ(0, pthread_create(&t[n++], NULL, fuzz_thread, (void *)i));
	for (long i = 0; i < 2; i++)
		ASSERT_EQ(0, pthread_create(&t[n++], NULL, module_thread, (void *)i));
	for (long i = 0; i < churners && i < 16; i++)
		ASSERT_EQ(0, pthread_create(&t[n++], NULL, churn_thread, (void *)i));
	ASSERT_EQ(0, pthread_create(&t[n++], NULL, fork_thread, NULL));
	for (long i = 0; i < NFORKERS; i++)
		ASSERT_EQ(0, pthread_create(&t[n++], NULL, forker_thread, (void *)i));
	for (long i = 0; i < 2; i++)
		ASSERT_EQ(0, pthread_create(&t[n++], NULL, fork_churn_thread, (void *)i));
	for (long i = 0; i < 2; i++)
		ASSERT_EQ(0, pthread_create(&t[n++], NULL, dl_thread, (void *)i));
	for (long i = 0; i < 2; i++)
		ASSERT_EQ(0, pthread_create(&t[n++], NULL, dl_touch_thread, (void *)i));
	for (int i = 0; i < n; i++)
		ASSERT_EQ(0, pthread_join(t[i], NULL));
	ksft_print_msg("%ld ioctls, %ld thread exits, %ld forks (%ld of them ESTALE), %ld problems in %ld s\n",
		       atomic_load(&nioctls), atomic_load(&nexits), atomic_load(&nforks),
		       atomic_load(&nstale), atomic_load(&nbad), secs - (long)(deadline - time(NULL)));
	ksft_print_msg("fork-heavy: %ld forks: %ld adopted and checked, %ld ESTALE, %ld refused (memory, quota), %ld grandchildren adopted and checked\n",
		       atomic_load(&nfh_forks), atomic_load(&nfh_adopted), atomic_load(&nfh_stale),
		       atomic_load(&nfh_refused), atomic_load(nfh_grandchildren));
	ksft_print_msg("dlopen-heavy: %ld registrations, %ld first touches by %ld short-lived threads\n",
		       atomic_load(&ndl_regs), atomic_load(&ndl_touches), atomic_load(&ndl_threads));
	ASSERT_EQ(0, atomic_load(&nbad)) TH_LOG("seed %u: %s", seed, badmsg);
	/* The context still answers sensibly, and a fresh one starts empty. */
	ASSERT_EQ(0, kstls_info_get(fd, &info));
	ASSERT_LE(info.block_bytes, info.max_block_bytes);
	close(fd);
	close(fd_fork);
	close(fd_dl);
	fd = kstls_open();
	ASSERT_LE(0, fd);
	ASSERT_EQ(0, kstls_info_get(fd, &info));
	ASSERT_EQ(0, info.nr_modules);
	close(fd);
}

TEST_HARNESS_MAIN
