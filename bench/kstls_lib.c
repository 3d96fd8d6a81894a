// SPDX-License-Identifier: GPL-2.0
/*
 * kstls_lib.c - libkb_kstls.so when libkstls is built: the kstls_cached path through libkstls's
 * own __tls_get_addr fast path. libkstls.a is linked in privately (its symbols are hidden), so
 * this object's calls to __tls_get_addr bind to libkstls, never to glibc's. Built a second time
 * with -DKB_SELF as libkb_kstls_gd.so, the kstls_gd path: its own copy of libkstls, so that
 * each context holds exactly the modules its path measures (a thread caches 256 module slots).
 *
 *   kb_kstls_cached(ti)  __tls_get_addr(ti) for a module registered with kstls_register(): the
 *                        call a general-dynamic access makes, with a kstls id in the tls_index
 *   kb_gd()              (KB_SELF) a compiler-generated general-dynamic access to this object's
 *                        own __thread variable, redirected to kstls by kstls_register_self() in
 *                        the constructor (the path a real two-libc module takes)
 *   kb_kstls_misses()    GET_ADDR calls answered in this copy's context so far
 *                        (KSTLS_IOC_STATS): every slow-path call of the library is one
 */
#include <stddef.h>
#include <sys/ioctl.h>

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
