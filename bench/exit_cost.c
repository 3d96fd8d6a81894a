// SPDX-License-Identifier: GPL-2.0
/*
 * exit_cost.c - what one thread exit costs while kstls caches exist: a benchmark, not a test.
 *
 * For each count N of mapped caches (default 0 1 200), the program opens N contexts of its own
 * and maps the cache of each, then times short-lived threads that never touch kstls (the exit
 * probe's worst case: a thread it has no record of), pthread_create + pthread_join per
 * operation, in two processes: "own", the one that holds the N caches, and "other", a forked
 * child with no context at all (every exit on the machine pays the probe). N=0 is the baseline:
 * the difference is what the probe costs.
 *
 *   exit_cost [-r RUNS] [-n OPS] [N...]
 *
 * Each of RUNS runs (default 11, after one warm-up run) times OPS operations (default 100);
 * printed: ns/op median, p10 and p90 over the runs, and the raw per-run figures on "#" lines.
 * 200 caches of the default 1024 threads are 900 MiB of kernel memory: load kstls with
 * cache_threads=1 (and a per-user cap that allows 200 caches) for this, e.g. in the guest
 *   insmod /kstls/kstls.ko cache_threads=1 max_user_kbytes=262144 && ./build/bench/exit_cost
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <linux/kstls.h>

#define MAX_RUNS 101

static void *nothing(void *arg)
{
	return arg;
}

static long long now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/* ns per thread create + exit + join, one run of @ops operations. */
static double one_run(int ops)
{
	long long t0 = now_ns();

	for (int i = 0; i < ops; i++) {
		pthread_t t;

		if (pthread_create(&t, NULL, nothing, NULL) || pthread_join(t, NULL)) {
			perror("pthread");
			exit(1);
		}
	}
	return (double)(now_ns() - t0) / ops;
}

static void measure(const char *who, int caches, int runs, int ops)
{
	double v[MAX_RUNS];

	one_run(ops);	/* warm-up */
	for (int r = 0; r < runs; r++)
		v[r] = one_run(ops);
	printf("# %s caches=%d raw ns/op:", who, caches);
	for (int r = 0; r < runs; r++)
		printf(" %.0f", v[r]);
	printf("\n");
	qsort(v, runs, sizeof(v[0]), cmp);
	printf("%-6s %7d %12.0f %12.0f %12.0f\n", who, caches, v[runs / 2], v[runs / 10],
	       v[runs - 1 - runs / 10]);
	fflush(stdout);
}

int main(int argc, char **argv)
{
	int runs = 11, ops = 100, opt, def[] = { 0, 1, 200 }, *counts = def, ncounts = 3;

	while ((opt = getopt(argc, argv, "r:n:")) != -1) {
		if (opt == 'r')
			runs = atoi(optarg);
		else if (opt == 'n')
			ops = atoi(optarg);
		else
			return fprintf(stderr, "usage: exit_cost [-r RUNS] [-n OPS] [N...]\n"), 2;
	}
	if (runs < 1 || runs > MAX_RUNS || ops < 1)
		return fprintf(stderr, "exit_cost: 1 <= RUNS <= %d, OPS >= 1\n", MAX_RUNS), 2;
	if (optind < argc) {
		ncounts = argc - optind;
		counts = calloc(ncounts, sizeof(*counts));
		for (int i = 0; i < ncounts; i++)
			counts[i] = atoi(argv[optind + i]);
	}
	printf("# one thread create + exit + join, %d runs of %d after a warm-up\n", runs, ops);
	printf("%-6s %7s %12s %12s %12s\n", "who", "caches", "median", "p10", "p90");
	for (int c = 0; c < ncounts; c++) {
		int n = counts[c], *fds = calloc(n ? n : 1, sizeof(int));
		void **maps = calloc(n ? n : 1, sizeof(void *));
		struct kstls_info info = { 0 };
		pid_t pid;

		for (int i = 0; i < n; i++) {
			void *m;

			fds[i] = open(KSTLS_DEVICE_PATH, O_RDWR | O_CLOEXEC);
			if (fds[i] < 0 || ioctl(fds[i], KSTLS_IOC_INFO, &info) || !info.cache_size) {
				fprintf(stderr, "exit_cost: context %d: %s\n", i, strerror(errno));
				return 1;
			}
			m = mmap(NULL, info.cache_size, PROT_READ, MAP_SHARED, fds[i], 0);
			if (m == MAP_FAILED) {
				fprintf(stderr, "exit_cost: cache %d: %s\n", i, strerror(errno));
				return 1;
			}
			maps[i] = m;
		}
		measure("own", n, runs, ops);
		pid = fork();
		if (pid == 0) {
			for (int i = 0; i < n; i++)
				close(fds[i]);
			measure("other", n, runs, ops);
			_exit(0);
		}
		waitpid(pid, NULL, 0);
		/* The mapping holds the file: both must go for the context to. */
		for (int i = 0; i < n; i++) {
			munmap(maps[i], info.cache_size);
			close(fds[i]);
		}
		free(maps);
		free(fds);
	}
	return 0;
}
