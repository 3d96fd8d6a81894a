// SPDX-License-Identifier: GPL-2.0
/*
 * kstls-demo.c - what `make demo` shows in the guest: /dev/kstls answering INFO, a TLS module
 * registered, four threads each getting their own initialised block from the kernel (first on
 * the ioctl path, then from the mapped cache), the counters, and the context in fdinfo.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <linux/kstls.h>
#include "demo.h"

#define NTHREADS 4

/* The module's PT_TLS image: 16 bytes of .tdata, then 48 bytes of .tbss. */
static const char tdata[16] = "hello, .tdata!";
static int fd;
static __u64 module_id;

static void *worker(void *arg)
{
	long n = (long)arg;
	struct kstls_get_addr ga = { .ti = { .module = module_id, .offset = 0 } };
	char *block;

	if (ioctl(fd, KSTLS_IOC_GET_ADDR, &ga)) {
		perror("GET_ADDR");
		return (void *)1;
	}
	block = (char *)(uintptr_t)ga.addr;
	printf("thread %ld (tid %ld): block %p, .tdata \"%s\", .tbss %s\n", n,
	       (long)syscall(SYS_gettid), block, block, block[16] || block[63] ? "dirty" : "zero");
	snprintf(block + 16, 48, "thread %ld was here", n);
	/* The same thread asking again gets the same block, with its own value. */
	ioctl(fd, KSTLS_IOC_GET_ADDR, &ga);
	printf("thread %ld: again %p: \"%s\"\n", n, (void *)(uintptr_t)ga.addr, block + 16);
	return NULL;
}

int main(void)
{
	struct kstls_info info = { 0 };
	struct kstls_register reg = {
		.image = (__u64)(uintptr_t)tdata, .filesz = sizeof(tdata), .memsz = 64,
		.align = 64, .align_offset = 0,
	};
	struct kstls_stats st = { 0 };
	pthread_t t[NTHREADS];
	void *cache;
	long rc = 0;

	fd = open(KSTLS_DEVICE_PATH, O_RDWR | O_CLOEXEC);
	if (fd < 0 || ioctl(fd, KSTLS_IOC_INFO, &info)) {
		perror(KSTLS_DEVICE_PATH);
		return 1;
	}
	printf("kstls ABI %u, features %#x: up to %u modules, align <= %u, %llu bytes of blocks, "
	       "cache %u bytes\n", info.abi_version, info.features, info.max_modules, info.max_align,
	       (unsigned long long)info.max_block_bytes, info.cache_size);
	cache = info.cache_size ? mmap(NULL, info.cache_size, PROT_READ, MAP_SHARED, fd, 0) : NULL;
	printf("fast-path cache %s\n", cache && cache != MAP_FAILED ? "mapped read-only" : "off");

	if (ioctl(fd, KSTLS_IOC_REGISTER, &reg)) {
		perror("REGISTER");
		return 1;
	}
	printf("registered a TLS module (filesz 16, memsz 64, align 64): id %#llx\n",
	       (unsigned long long)reg.module);
	module_id = reg.module;
	for (long i = 0; i < NTHREADS; i++)
		pthread_create(&t[i], NULL, worker, (void *)i);
	for (int i = 0; i < NTHREADS; i++) {
		void *r;

		pthread_join(t[i], &r);
		rc |= (long)r;
	}
	st.module = module_id;
	ioctl(fd, KSTLS_IOC_STATS, &st);
	printf("module counters: %llu lookups, %llu first-touch allocations, %llu live blocks\n",
	       (unsigned long long)st.lookups, (unsigned long long)st.allocs,
	       (unsigned long long)st.blocks);
	{
		struct kstls_get_addr bad = { .ti = { .module = module_id, .offset = 64 } };

		if (ioctl(fd, KSTLS_IOC_GET_ADDR, &bad) == -1)
			printf("offset 64 of a 64-byte module: %s (as it must)\n", strerror(errno));
		else
			rc = 1;
	}
	show_fdinfo(fd);
	return (int)rc;
}
