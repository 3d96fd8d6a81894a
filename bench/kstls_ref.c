// SPDX-License-Identifier: GPL-2.0
/*
 * kstls_ref.c - libkb_kstls_ref.so, the kstls_ref path of the benchmark's user set: the lookup
 * of uapi/linux/kstls.h exactly as selftests/kstls_cache.h implements it for cache_test.c (the
 * reference C lookup), and the GET_ADDR ioctl on a miss, which fills the cache. It is measured
 * beside libkstls's own fast path (kstls_cached), never in its place.
 *
 * The shape is that of a general-dynamic access linked against a private copy of libkstls: the
 * caller passes the address of a (module, offset) pair to a non-inlined function with hidden
 * visibility (a direct call, no PLT), which returns the variable's address.
 */
#include "bench.h"
#include "kstls_cache.h"

static int kb_fd = -1;
static const void *kb_cache;
static unsigned long kb_misses;
/* What a failed slow path answers: 0, so the harness's checksum catches it. */
static const long kb_failed;

int kb_kstls_setup(int fd, const void *cache)
{
	const struct kstls_cache_header *h = cache;

	if (h->magic != KSTLS_CACHE_MAGIC || h->version != KSTLS_CACHE_VERSION)
		return -1;
	kb_fd = fd;
	kb_cache = cache;
	return 0;
}

unsigned long kb_kstls_misses(void)
{
	return kb_misses;
}

static __attribute__((noinline, cold)) void *kstls_ref_slow(const struct kstls_tls_index *ti)
{
	struct kstls_get_addr g = { .ti = *ti };

	kb_misses++;
	if (kb_raw_ioctl(kb_fd, KSTLS_IOC_GET_ADDR, &g))
		return (void *)&kb_failed;
	return (void *)(unsigned long)g.addr;
}

__attribute__((noinline, visibility("hidden"))) void *
kstls_ref_tls_get_addr(const struct kstls_tls_index *ti)
{
	unsigned long a = cache_lookup(kb_cache, kb_thread_pointer(), ti->module, ti->offset);

	if (__builtin_expect(a != 0, 1))
		return (void *)a;
	return kstls_ref_slow(ti);
}

long kb_kstls_cached(void *arg)
{
	return *(long *)kstls_ref_tls_get_addr(arg);
}
