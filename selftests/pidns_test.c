// SPDX-License-Identifier: GPL-2.0
/*
 * pidns_test.c - a process in a pid namespace (a container) sees its own ids: STATS narrowed to
 * a thread takes the tid that thread has in the caller's namespace (gettid()), and fdinfo shows
 * the owner's tgid as the reader's namespace numbers it.
 *
 * The test unshares a pid and a mount namespace, forks the namespace's init (pid 1) and mounts a
 * proc of its own there; everything is checked inside, and reported through the exit status.
 */
#define _GNU_SOURCE	/* unshare, CLONE_NEW* */
#include <pthread.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/wait.h>

#include "kselftest_harness.h"
#include "kstls_test.h"

static const char image[16] = "in a container";

struct job {
	int fd;
	__u64 id;
	pid_t tid;
	int ret;
};

static void *touch(void *arg)
{
	struct job *j = arg;

	j->tid = kstls_gettid();
	j->ret = kstls_get(j->fd, j->id, 0, NULL);
	return NULL;
}

#define CHECK(cond, code, fmt, ...)						\
	do {									\
		if (!(cond)) {							\
			ksft_print_msg("in the namespace: " fmt "\n", ##__VA_ARGS__);	\
			return code;						\
		}								\
	} while (0)

/* Runs as pid 1 of a new pid namespace with a proc of its own. */
static int inside(void)
{
	struct kstls_stats st;
	struct job j = { 0 };
	pthread_t t;
	long owner;
	int ret;

	j.fd = kstls_open();
	CHECK(j.fd >= 0, 20, "open: %s", strerror(errno));
	CHECK(!kstls_reg(j.fd, image, sizeof(image), 64, 16, 0, &j.id), 21, "REGISTER");
	/* The main thread: two lookups; a second thread: one. */
	CHECK(!kstls_get(j.fd, j.id, 0, NULL) && !kstls_get(j.fd, j.id, 0, NULL), 22, "GET_ADDR");
	CHECK(!pthread_create(&t, NULL, touch, &j) && !pthread_join(t, NULL) && !j.ret, 23,
	      "the thread's GET_ADDR");

	ret = kstls_stats_get(j.fd, 0, kstls_gettid(), &st);
	CHECK(!ret, 24, "STATS: %s", strerror(-ret));
	CHECK(st.lookups == 2 && st.blocks == 1, 25,
	      "STATS of tid %d (this thread): %llu lookups, %llu blocks, want 2 and 1",
	      kstls_gettid(), (unsigned long long)st.lookups, (unsigned long long)st.blocks);
	ret = kstls_stats_get(j.fd, j.id, kstls_gettid(), &st);
	CHECK(!ret && st.lookups == 2, 26, "STATS of this thread and module: %llu lookups",
	      (unsigned long long)st.lookups);

	owner = kstls_fdinfo_value(j.fd, "owner-tgid");
	CHECK(owner == getpid(), 27, "fdinfo owner-tgid %ld, but this process is %d here", owner,
	      getpid());
	close(j.fd);
	return 0;
}

TEST(ids_are_those_of_the_callers_namespace)
{
	int status;
	pid_t pid;

	if (unshare(CLONE_NEWPID | CLONE_NEWNS))
		SKIP(return, "no pid namespaces: %s", strerror(errno));
	pid = fork();
	ASSERT_LE(0, pid);
	if (pid == 0) {
		if (getpid() != 1)
			_exit(10);
		if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) ||
		    mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL)) {
			ksft_print_msg("mount proc: %s\n", strerror(errno));
			_exit(11);
		}
		_exit(inside());
	}
	ASSERT_EQ(pid, waitpid(pid, &status, 0));
	ASSERT_TRUE(WIFEXITED(status)) TH_LOG("status %#x", status);
	ASSERT_EQ(0, WEXITSTATUS(status));
}

TEST_HARNESS_MAIN
