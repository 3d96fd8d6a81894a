// SPDX-License-Identifier: GPL-2.0
/*
 * kstls_lib.c - libkb_kstls.so when libkstls is built: the kstls_cached path through libkstls's
 * own __tls_get_addr fast path. libkstls.a is linked in privately (its symbols are hidden), so
 * this object's calls to __tls_get_addr bind to libkstls, never to glibc's. Built a second time
 * with -DKB_SELF as libkb_kstls_gd.so, the kstls_gd path: its own copy of libkstls, so that
 * each context holds exactly the modules its path measures (a thread caches 256 module slots).
 * The same built with -mtls-dialect=gnu2 is libkb_kstls_tlsdesc.so, the kstls_tlsdesc path: its
 * kb_gd() is a TLS descriptor call, which registration pointed at libkstls's kstls_tlsdesc.
 *
 *   kb_kstls_cached(ti)  __tls_get_addr(ti) for a module registered with kstls_register(): the
 *                        call a general-dynamic access makes, with a kstls id in the tls_index
 *   kb_gd()              (KB_SELF) a compiler-generated general-dynamic access to this object's
 *                        own __thread variable, redirected to kstls by kstls_register_self() in
 *                        the constructor (the path a real two-libc module takes)
 *   kb_kstls_misses()    GET_ADDR calls answered in this copy's context so far
 *                        (KSTLS_IOC_STATS): every slow-path call of the library is one
 *   kb_kstls_slot_distance()  how far from its home slot the calling thread is cached in this
 *                        copy's cache (0: home; -1: not cached), read from a mapping of its own
 */
#include <stddef.h>
#include <sys/ioctl.h>
#include <sys/mman.h>

#include <kstls.h>

void *__tls_get_addr(struct kstls_tls_index *ti);

static long kb_failed;

#ifdef KB_SELF
__thread long kb_gd_var = 1;
static int kb_self_error = 1;

__attribute__((constructor)) static void kb_register_self(void)
{
	kb_self_error = KSTLS_REGISTER_SELF(NULL);
}

/* 0 when the constructor's self-registration worked, else its -errno. */
int kb_kstls_self_error(void)
{
	return kb_self_error;
}

long kb_gd(void *arg)
{
	(void)arg;
	return kb_gd_var;
}
#endif

int kb_kstls_lib_register(unsigned long long *id)
{
	static const long image[1] = { 1 };
	struct kstls_image img = {
		.image = image,
		.filesz = sizeof(image),
		.memsz = sizeof(image),
		.align = sizeof(image),
	};
	uint64_t m;
	int ret = kstls_register(&img, &m);

	*id = m;
	return ret;
}

unsigned long kb_kstls_misses(void)
{
	struct kstls_stats st = { 0 };
	int fd = kstls_fd();

	if (fd < 0 || ioctl(fd, KSTLS_IOC_STATS, &st))
		return ~0UL;
	return st.lookups;
}

long kb_kstls_cached(void *ti)
{
	void *p = __tls_get_addr(ti);

	return *(long *)(p ? p : &kb_failed);
}

int kb_kstls_slot_distance(void)
{
	struct kstls_info info = { 0 };
	const struct kstls_cache_header *h;
	const struct kstls_cache_slot *slots;
	unsigned long tp;
	int fd = kstls_fd(), d = -1;
	__u64 home;
	void *m;

	if (fd < 0 || ioctl(fd, KSTLS_IOC_INFO, &info) || !info.cache_size)
		return -1;
	m = mmap(NULL, info.cache_size, PROT_READ, MAP_SHARED, fd, 0);
	if (m == MAP_FAILED)
		return -1;
	h = m;
	slots = (const void *)((const char *)m + h->slots_offset);
	__asm__ volatile("mov %%fs:0, %0" : "=r"(tp));
	home = (tp * KSTLS_CACHE_HASH_MUL) >> (64 - h->nr_slots_log2);
	for (__u32 i = 0; i < h->nr_probes && d < 0; i++) {
		if (slots[(home + i) & (h->nr_slots - 1)].tp == tp)
			d = i;
	}
	munmap(m, info.cache_size);
	return d;
}
