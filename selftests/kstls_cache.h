/* SPDX-License-Identifier: GPL-2.0 */
/*
 * kstls_cache.h - a C implementation of the fast-path cache lookup documented in
 * uapi/linux/kstls.h, independent of libkstls: used by cache_test.c to check the kernel's side of
 * the protocol and by the benchmark as the reference lookup.
 */
#ifndef KSTLS_CACHE_H
#define KSTLS_CACHE_H

#include <linux/kstls.h>

/* The lookup of uapi/linux/kstls.h: 0 on a miss, else the address of (id, offset). */
static inline unsigned long cache_lookup(const void *cache, unsigned long tp, __u64 id, __u64 offset)
{
	const struct kstls_cache_header *h = cache;
	const struct kstls_cache_slot *slots = (const void *)((const char *)cache + h->slots_offset);
	__u64 home = (tp * KSTLS_CACHE_HASH_MUL) >> (64 - h->nr_slots_log2);
	/* The id's index modulo dtv_entries: the entry may hold another module's id. */
	__u32 index = (__u32)id & (h->dtv_entries - 1);

	for (__u32 i = 0; i < h->nr_probes; i++) {
		const struct kstls_cache_slot *s = &slots[(home + i) & (h->nr_slots - 1)];
		const struct kstls_cache_dtv_entry *e;
		__u64 module, block;

		/* The order of uapi/linux/kstls.h: dtv_offset, block, module, and tp last. */
		e = (const void *)((const char *)cache + __atomic_load_n(&s->dtv_offset,
									  __ATOMIC_ACQUIRE));
		block = __atomic_load_n(&e[index].block, __ATOMIC_ACQUIRE);
		module = __atomic_load_n(&e[index].module, __ATOMIC_ACQUIRE);
		if (__atomic_load_n(&s->tp, __ATOMIC_ACQUIRE) != tp)
			continue;
		if (module != id || !block)
			return 0;
		return block + offset;
	}
	return 0;
}

#endif /* KSTLS_CACHE_H */
