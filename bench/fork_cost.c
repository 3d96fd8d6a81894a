// SPDX-License-Identifier: GPL-2.0
/*
 * fork_cost.c - what one user's kstls contexts make every other fork on the machine cost: a
 * benchmark, not a test.
 *
 * kstls records every fork of a process that has a context (a probe on the sched_process_fork
 * tracepoint, rust/fork_log.rs), so a fork anywhere on the machine runs the probe, and a fork of
 * a process with N contexts records N children. The victim here is root, a process that never
 * opened /dev/kstls: it times fork + waitpid of a child that _exit(0)s at once, one operation
 * at a time, while another user (uid/gid 65534) forks in a loop (children that exit at once)
 * from a process that owns C contexts, each with a module registered and one block touched. The
 * phases are C = 0, 1 and -c CONTEXTS (default 8000). C = 0 is the baseline: the same other
 * user forking in the same loop, without a context, so the difference is what the contexts
 * cost the victim.
 *
 * Each phase has a holder process of its own, set up once, and a parker beside it, both
 * uid/gid 65534: the parker raises RLIMIT_NOFILE while it is still root, the holder opens its C
 * contexts and passes each fd to the parker over SCM_RIGHTS, closing its own copy, so the
 * holder's forks copy no big fd table: the contexts stay the holder's (they belong to the
 * process that opened them), held open by the parker. Holders are stopped (SIGSTOP) except for
 * the phase being measured. Every repeat measures the three phases one after the other, the
 * first phase rotating, so that the figures of one repeat are paired: the ratio of two phases'
 * medians in one repeat has the machine's drift taken out.
 *
 *   fork_cost [-r REPEATS] [-n OPS] [-c CONTEXTS] [-p PLATFORM]
 *
 * Defaults: 11 repeats (after one warm-up round) of 200 operations per phase. With two CPUs or
 * more the victim (and its children) run on CPU 0 and the holders on CPU 1, so that what the
 * victim waits for is the kernel's locks, not the CPU. The output is for bench/report.py:
 *   KB:fork_env:KEY=VALUE
 *   KB:fork_raw:contexts,repeat,holder_forks,elapsed_ns,ns ns ns ...   (one line per sample: the
 *       holder's forks during it, the sample's wall time and every operation's fork + waitpid)
 *   KB:fork_error:MESSAGE
 *   KB:fork_end:rc=N
 * and a readable table on "#" lines. The holders need 65534 to have room in its kstls quota for
 * CONTEXTS + 1 contexts (max_user_kbytes, ~5 KiB each): an EDQUOT is reported as an error.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <linux/kstls.h>

#define NPHASES 3
#define MAX_OPS 10000
#define MAX_REPEATS 101
#define OTHER_UID 65534
/* Fds passed to the parker per sendmsg. */
#define BATCH 64
/* Forks a holder makes before it is measured: past the 64 records a context keeps. */
#define PRIME_FORKS 72

/* What the holders and the victim share (MAP_SHARED, made before the holders are forked). */
struct shared {
	atomic_long forks[NPHASES];	/* each holder's forks so far */
	char error[NPHASES][256];	/* why a holder gave up */
};

static struct shared *sh;
static int ncpus;

static long long now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int cmp_ll(const void *a, const void *b)
{
	long long x = *(const long long *)a, y = *(const long long *)b;

	return x < y ? -1 : x > y;
}

static void pin(int cpu)
{
	cpu_set_t set;

	if (ncpus < 2)
		return;
	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	sched_setaffinity(0, sizeof(set), &set);
}

/* A holder's reason to give up, for the victim to print; then it exits. */
static void __attribute__((noreturn, format(printf, 2, 3))) holder_fail(int phase,
									 const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(sh->error[phase], sizeof(sh->error[phase]), fmt, ap);
	va_end(ap);
	_exit(1);
}

/* Sends @n fds over @sock in one message (SCM_RIGHTS). */
static int send_fds(int sock, const int *fds, int n)
{
	union {
		char buf[CMSG_SPACE(BATCH * sizeof(int))];
		struct cmsghdr align;
	} u;
	char c = 'f';
	struct iovec iov = { .iov_base = &c, .iov_len = 1 };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf,
			      .msg_controllen = CMSG_SPACE(n * sizeof(int)) };
	struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);

	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(n * sizeof(int));
	memcpy(CMSG_DATA(cm), fds, n * sizeof(int));
	return sendmsg(sock, &msg, 0) == 1 ? 0 : -1;
}

/*
 * The parker of phase @phase: uid/gid 65534 too, with room for @contexts fds; receives the
 * holder's fds and keeps them open until it is killed. It never uses them: they are the
 * holder's contexts. It is the victim's child, so that the victim, reaping it, knows that
 * every one of them has been released.
 */
static void __attribute__((noreturn)) park(int phase, int sock, int contexts)
{
	struct rlimit rl = { .rlim_cur = contexts + 64, .rlim_max = contexts + 64 };

	prctl(PR_SET_PDEATHSIG, SIGKILL);
	/* Room for the fds, while still allowed to raise the hard limit. */
	if (setrlimit(RLIMIT_NOFILE, &rl))
		holder_fail(phase, "parker: setrlimit(RLIMIT_NOFILE, %d): %s", contexts + 64,
			    strerror(errno));
	if (setgroups(0, NULL) || setresgid(OTHER_UID, OTHER_UID, OTHER_UID) ||
	    setresuid(OTHER_UID, OTHER_UID, OTHER_UID))
		holder_fail(phase, "parker: becoming uid/gid %d: %s", OTHER_UID, strerror(errno));
	for (;;) {
		union {
			char buf[CMSG_SPACE(BATCH * sizeof(int))];
			struct cmsghdr align;
		} u;
		char c;
		struct iovec iov = { .iov_base = &c, .iov_len = 1 };
		struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf,
				      .msg_controllen = sizeof(u.buf) };
		ssize_t n = recvmsg(sock, &msg, 0);

		if (n <= 0)
			break;
		/* The fds stay open: that is what parking them is. Refused ones: give up. */
		if (msg.msg_flags & MSG_CTRUNC)
			holder_fail(phase, "parker: fds refused (RLIMIT_NOFILE)");
		/* One byte back: the holder knows the batch arrived. */
		if (write(sock, "k", 1) != 1)
			break;
	}
	/* The holder is done (or gone): hold the fds until killed. */
	for (;;)
		pause();
}

/*
 * A holder: uid/gid 65534, @contexts contexts of its own, each with a module and one touched
 * block, each fd passed to the parker over @sock and closed here; stops itself when ready, then
 * forks in a loop, children that exit at once, whenever it is let run.
 */
static void __attribute__((noreturn)) holder(int phase, int sock, int contexts)
{
	static const unsigned char img[64] = "fork_cost image";
	int batch[BATCH], nb = 0;

	prctl(PR_SET_PDEATHSIG, SIGKILL);
	pin(1);
	if (setgroups(0, NULL) || setresgid(OTHER_UID, OTHER_UID, OTHER_UID) ||
	    setresuid(OTHER_UID, OTHER_UID, OTHER_UID))
		holder_fail(phase, "becoming uid/gid %d: %s", OTHER_UID, strerror(errno));
	for (int i = 0; i < contexts; i++) {
		struct kstls_register r = { .image = (__u64)(uintptr_t)img, .filesz = sizeof(img),
					    .memsz = sizeof(img), .align = 8 };
		struct kstls_get_addr g = { 0 };
		int fd = open(KSTLS_DEVICE_PATH, O_RDWR | O_CLOEXEC);

		if (fd < 0)
			holder_fail(phase, "context %d of %d: open: %s", i, contexts, strerror(errno));
		if (ioctl(fd, KSTLS_IOC_REGISTER, &r))
			holder_fail(phase, "context %d of %d: REGISTER: %s", i, contexts,
				    strerror(errno));
		g.ti.module = r.module;
		if (ioctl(fd, KSTLS_IOC_GET_ADDR, &g))
			holder_fail(phase, "context %d of %d: GET_ADDR: %s", i, contexts,
				    strerror(errno));
		batch[nb++] = fd;
		if (nb == BATCH || i == contexts - 1) {
			char c;

			if (send_fds(sock, batch, nb) || read(sock, &c, 1) != 1)
				holder_fail(phase, "parking contexts %d..%d: %s", i + 1 - nb, i,
					    sh->error[phase][0] ? sh->error[phase] :
					    errno ? strerror(errno) : "the parker is gone");
			for (int k = 0; k < nb; k++)
				close(batch[k]);
			nb = 0;
		}
	}
	close(sock);
	/*
	 * A context keeps a record of up to 64 forks awaiting adoption, and makes room among them
	 * once full: fork past that, so that every phase measures the holder's steady state.
	 */
	for (int i = 0; contexts && i < PRIME_FORKS; i++) {
		pid_t pid = fork();

		if (pid == 0)
			_exit(0);
		if (pid < 0 || waitpid(pid, NULL, 0) != pid)
			holder_fail(phase, "priming fork %d: %s", i, strerror(errno));
	}
	/* Ready: the victim lets it run (SIGCONT) only in its phase. */
	raise(SIGSTOP);
	for (;;) {
		pid_t pid = fork();

		if (pid == 0)
			_exit(0);
		if (pid > 0 && waitpid(pid, NULL, 0) == pid)
			atomic_fetch_add(&sh->forks[phase], 1);
	}
}

static pid_t holders[NPHASES], parkers[NPHASES];
/* The device's mode before the run, given back at its end (-1: not changed). */
static int dev_mode = -1;

/* /dev/kstls open to every user (mode 0666), as packaging/60-kstls.rules sets it. */
static int open_to_all(void)
{
	struct stat st;

	if (stat(KSTLS_DEVICE_PATH, &st) || chmod(KSTLS_DEVICE_PATH, 0666))
		return -1;
	dev_mode = st.st_mode & 07777;
	return 0;
}

/*
 * Kills the holders and the parkers and reaps them and whatever they left (the victim is their
 * subreaper): once reaped, a process has released its files and its memory, so no context is
 * left behind when fork_cost ends and kstls.ko can be unloaded.
 */
static void kill_holders(void)
{
	for (int p = 0; p < NPHASES; p++) {
		if (holders[p] > 0)
			kill(holders[p], SIGKILL);
		if (parkers[p] > 0)
			kill(parkers[p], SIGKILL);
		holders[p] = parkers[p] = 0;
	}
	while (waitpid(-1, NULL, 0) > 0 || errno == EINTR)
		;
	if (dev_mode >= 0)
		chmod(KSTLS_DEVICE_PATH, dev_mode);
	dev_mode = -1;
}

static int __attribute__((format(printf, 1, 2))) fail(const char *fmt, ...)
{
	va_list ap;

	printf("KB:fork_error:");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\nKB:fork_end:rc=1\n");
	fflush(stdout);
	kill_holders();
	return 1;
}

/* Waits until holder @p has stopped: 0, or -1 (it exited: its error is in sh->error). */
static int wait_stopped(int p)
{
	int st;

	if (waitpid(holders[p], &st, WUNTRACED) != holders[p])
		return -1;
	if (WIFSTOPPED(st))
		return 0;
	holders[p] = 0;
	return -1;
}

/*
 * Lets holder @p fork until it has forked at least twice (its loop is going), then times @ops
 * fork + waitpid of the victim into @ns; the holder's forks and the wall time of the sample go
 * to @forks and @elapsed. 0, or -1 with errno.
 */
static int sample(int p, int ops, long long *ns, long *forks, long long *elapsed)
{
	long f0 = atomic_load(&sh->forks[p]);
	long long t0 = now_ns(), start;

	if (kill(holders[p], SIGCONT))
		return -1;
	/* Up to 5 s for its loop to start (a fork of a holder of many contexts is slow). */
	while (atomic_load(&sh->forks[p]) < f0 + 2 && now_ns() - t0 < 5000000000LL)
		usleep(1000);
	f0 = atomic_load(&sh->forks[p]);
	start = now_ns();
	for (int i = 0; i < ops; i++) {
		long long a = now_ns();
		pid_t pid = fork();

		if (pid == 0)
			_exit(0);
		if (pid < 0 || waitpid(pid, NULL, 0) != pid)
			return -1;
		ns[i] = now_ns() - a;
	}
	*elapsed = now_ns() - start;
	*forks = atomic_load(&sh->forks[p]) - f0;
	if (kill(holders[p], SIGSTOP))
		return -1;
	return wait_stopped(p);
}

int main(int argc, char **argv)
{
	int repeats = 11, ops = 200, big = 8000, opt, counts[NPHASES];
	const char *platform = "?";
	static long long ns[MAX_OPS], all[NPHASES][MAX_REPEATS * 2];
	long long elapsed, sum_elapsed[NPHASES] = { 0 };
	long forks, sum_forks[NPHASES] = { 0 };
	struct utsname u;

	while ((opt = getopt(argc, argv, "r:n:c:p:")) != -1) {
		if (opt == 'r')
			repeats = atoi(optarg);
		else if (opt == 'n')
			ops = atoi(optarg);
		else if (opt == 'c')
			big = atoi(optarg);
		else if (opt == 'p')
			platform = optarg;
		else
			return fprintf(stderr, "usage: fork_cost [-r REPEATS] [-n OPS] [-c CONTEXTS]"
				       " [-p PLATFORM]\n"), 2;
	}
	if (repeats < 1 || repeats > MAX_REPEATS || ops < 1 || ops > MAX_OPS || big < 2 ||
	    big > 1000000)
		return fprintf(stderr, "fork_cost: 1 <= REPEATS <= %d, 1 <= OPS <= %d,"
			       " 2 <= CONTEXTS <= 1000000\n", MAX_REPEATS, MAX_OPS), 2;
	setvbuf(stdout, NULL, _IOLBF, 0);
	counts[0] = 0;
	counts[1] = 1;
	counts[2] = big;
	ncpus = (int)sysconf(_SC_NPROCESSORS_ONLN);
	uname(&u);
	printf("KB:fork_env:platform=%s\n", platform);
	printf("KB:fork_env:kernel=%s %s\n", u.release, u.version);
	printf("KB:fork_env:contexts=0 1 %d\n", big);
	printf("KB:fork_env:repeats=%d\n", repeats);
	printf("KB:fork_env:ops=%d\n", ops);
	printf("KB:fork_env:cpus=%d\n", ncpus);
	printf("KB:fork_env:pinned=%s\n", ncpus < 2 ? "no (one CPU)" :
	       "victim and its children on CPU 0, holders and theirs on CPU 1");
	printf("KB:fork_env:other_uid=%d\n", OTHER_UID);
	if (geteuid() != 0)
		return fail("fork_cost must run as root (it becomes uid %d for the holders)",
			    OTHER_UID);
	sh = mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (sh == MAP_FAILED)
		return fail("mmap: %s", strerror(errno));
	if (open_to_all())
		return fail("chmod 0666 %s: %s", KSTLS_DEVICE_PATH, strerror(errno));
	if (prctl(PR_SET_CHILD_SUBREAPER, 1))
		return fail("PR_SET_CHILD_SUBREAPER: %s", strerror(errno));
	pin(0);
	for (int p = 0; p < NPHASES; p++) {
		long long t0 = now_ns();
		int sv[2];

		if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv))
			return fail("socketpair: %s", strerror(errno));
		parkers[p] = fork();
		if (parkers[p] < 0)
			return fail("fork (parker): %s", strerror(errno));
		if (parkers[p] == 0) {
			close(sv[0]);
			park(p, sv[1], counts[p]);
		}
		holders[p] = fork();
		if (holders[p] < 0)
			return fail("fork (holder): %s", strerror(errno));
		if (holders[p] == 0) {
			close(sv[1]);
			holder(p, sv[0], counts[p]);
		}
		close(sv[0]);
		close(sv[1]);
		if (wait_stopped(p))
			return fail("the holder of %d contexts: %s", counts[p],
				    sh->error[p][0] ? sh->error[p] : "died");
		printf("# holder of %d contexts ready in %.1f s\n", counts[p],
		       (now_ns() - t0) / 1e9);
	}
	/* Warm-up: one sample per phase, not printed. */
	for (int p = 0; p < NPHASES; p++)
		if (sample(p, ops, ns, &forks, &elapsed))
			return fail("warm-up, %d contexts: %s", counts[p], strerror(errno));
	for (int r = 0; r < repeats; r++) {
		for (int k = 0; k < NPHASES; k++) {
			int p = (r + k) % NPHASES;

			if (sample(p, ops, ns, &forks, &elapsed))
				return fail("repeat %d, %d contexts: %s", r, counts[p],
					    sh->error[p][0] ? sh->error[p] : strerror(errno));
			printf("KB:fork_raw:%d,%d,%ld,%lld,", counts[p], r, forks, elapsed);
			for (int i = 0; i < ops; i++)
				printf(i ? " %lld" : "%lld", ns[i]);
			printf("\n");
			qsort(ns, ops, sizeof(ns[0]), cmp_ll);
			all[p][r] = ns[ops / 2];
			sum_elapsed[p] += elapsed;
			sum_forks[p] += forks;
		}
	}
	kill_holders();
	printf("# victim fork + waitpid, median ns of each repeat's %d operations\n", ops);
	printf("# %9s %12s %12s %14s\n", "contexts", "median", "x 0", "holder forks/s");
	for (int p = 0; p < NPHASES; p++) {
		long long m[MAX_REPEATS], m0[MAX_REPEATS];

		memcpy(m, all[p], repeats * sizeof(m[0]));
		memcpy(m0, all[0], repeats * sizeof(m0[0]));
		qsort(m, repeats, sizeof(m[0]), cmp_ll);
		qsort(m0, repeats, sizeof(m0[0]), cmp_ll);
		printf("# %9d %12lld %12.2f %14.1f\n", counts[p], m[repeats / 2],
		       (double)m[repeats / 2] / (double)m0[repeats / 2],
		       sum_forks[p] * 1e9 / (double)sum_elapsed[p]);
	}
	printf("KB:fork_end:rc=0\n");
	return 0;
}
