// SPDX-License-Identifier: GPL-2.0
/*
 * kstls_ref.c - libkb_kstls.so, the kstls_cached path measured while libkstls does not exist
 * yet: the lookup of uapi/kstls.h exactly as selftests/cache_test.c implements it (the
 * reference C lookup), and the GET_ADDR ioctl on a miss, which fills the cache.
 *
 * The shape is that of a general-dynamic access linked against a private copy of libkstls: the
 * caller passes the address of a (module, offset) pair to a non-inlined function with hidden
 * visibility (a direct call, no PLT), which returns the variable's address.
 */
#include "bench.h"

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

/* The lookup of uapi/kstls.h, copied from selftests/cache_test.c: 0 on a miss. */
static unsigned long cache_lookup(const void *cache, unsigned long tp, __u64 id, __u64 offset)
{
	const struct kstls_cache_header *h = cache;
	const struct kstls_cache_slot *slots = (const void *)((const char *)cache + h->slots_offset);
	__u64 home = (tp * KSTLS_CACHE_HASH_MUL) >> (64 - h->nr_slots_log2);
	__u32 mslot = (__u32)id;

	if (mslot >= h->dtv_entries)
		return 0;
	for (__u32 i = 0; i < h->nr_probes; i++) {
		const struct kstls_cache_slot *s = &slots[(home + i) & (h->nr_slots - 1)];
		__u64 seq = __atomic_load_n(&s->seq, __ATOMIC_ACQUIRE);
		const struct kstls_cache_dtv_entry *e;
		__u64 module, block;

		if (__atomic_load_n(&s->tp, __ATOMIC_RELAXED) != tp)
			continue;
		if (seq & 1)
			return 0;
		e = (const void *)((const char *)cache + __atomic_load_n(&s->dtv_offset,
									  __ATOMIC_RELAXED));
		module = __atomic_load_n(&e[mslot].module, __ATOMIC_RELAXED);
		block = __atomic_load_n(&e[mslot].block, __ATOMIC_RELAXED);
		__atomic_thread_fence(__ATOMIC_ACQUIRE);
		if (__atomic_load_n(&s->seq, __ATOMIC_RELAXED) != seq || module != id || !block)
			return 0;
		return block + offset;
	}
	return 0;
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
