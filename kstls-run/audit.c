// SPDX-License-Identifier: GPL-2.0
/*
 * audit.c - libkstls-audit.so, the LD_AUDIT library that kstls-run loads into a glibc-hosted
 * program: it serves the dynamic TLS of the program's shared objects from /dev/kstls, without
 * the objects being built for it.
 *
 * glibc loads an audit library into a namespace of its own, with its own libc, before the
 * program's objects, and reports to it (elf/rtld.c, elf/dl-load.c, elf/dl-open.c,
 * elf/dl-close.c, elf/dl-fini.c of glibc 2.36):
 *  - la_objopen for every object it maps, at start-up and in dlopen, after mapping and before
 *    relocation; the executable and the dynamic linker are reported first (load_audit_modules).
 *    This is the one hook before relocation on both paths (la_activity(LA_ACT_CONSISTENT) comes
 *    before relocation in dlopen but after it at start-up; la_preinit after the start-up
 *    objects' constructors): serve.c does its work here.
 *  - la_objclose after the object's destructors ran (_dl_close_worker, _dl_fini): a dlclosed
 *    module's kstls module is released then, after its counters were read. At exit, _dl_fini
 *    reports the executable first; from then on modules are not released, since threads that
 *    still run may still use their TLS until the process ends.
 *  - la_activity(LA_ACT_CONSISTENT) when the namespace's object list is consistent again:
 *    objects opened before it are relocated (at start-up) or are about to be (dlopen), so
 *    their relocation entries are no longer rewritten for modules opened later.
 * --stats are printed by this library's destructor, which glibc's _dl_fini runs after all the
 * program's (audit namespaces come last).
 *
 * The library links libkstls.a privately (its __tls_get_addr is hidden here) and has no TLS of
 * its own. Options come from kstls-run in the environment: KSTLS_RUN_STRICT=1, and
 * KSTLS_RUN_STATS=- (stderr) or a file name (appended to: a forked child reports too).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "audit.h"
#include "path.h"

/* _dl_fini has begun (the executable was closed): modules are no longer released. */
static int exiting;
static int seen_main;

/* A freshly opened context is in the mode the module parameter gives; strict is set before the
 * first registration (serve.c) and checked here, so that a refusal is reported up front. */
unsigned int la_version(unsigned int version)
{
	const char *s = getenv("KSTLS_RUN_STATS");
	int err;

	cfg.strict = getenv("KSTLS_RUN_STRICT") && !strcmp(getenv("KSTLS_RUN_STRICT"), "1");
	cfg.stats = s && *s ? s : NULL;
	err = kstls_init();
	cfg.device = !err;
	if (err) {
		snprintf(cfg.device_error, sizeof(cfg.device_error), "/dev/kstls: %s",
			 strerror(-err));
		note("%s: every module stays on the host", cfg.device_error);
	} else if (cfg.strict && (err = serve_strict())) {
		note("--strict: KSTLS_IOC_SET_MODE: %s", strerror(-err));
	}
	return version < LAV_CURRENT ? version : LAV_CURRENT;
}

unsigned int la_objopen(struct link_map *map, Lmid_t lmid, uintptr_t *cookie)
{
	struct module *m = calloc(1, sizeof(*m));
	const char *why = NULL;

	*cookie = (uintptr_t)m;
	if (!m)
		return 0;
	m->map = map;
	m->lmid = lmid;
	m->pending = 1;
	m->is_main = !seen_main && lmid == LM_ID_BASE && (!map->l_name || !map->l_name[0]);
	seen_main = 1;
	if (m->is_main) {
		/* glibc names the executable "": its path, if the kernel can say it (not when it
		 * is longer than PATH_MAX). */
		m->name = path_readlink("/proc/self/exe");
		if (!m->name)
			m->name = strdup("");
	} else {
		m->name = strdup(map->l_name ? map->l_name : "");
	}
	if (!m->name) {
		/* No memory: the object is not looked at (its TLS stays the host's). */
		free(m);
		*cookie = 0;
		return 0;
	}
	m->is_rtld = map->l_addr && map->l_addr == getauxval(AT_BASE);
	m->has_obj = !elf_obj_init(&m->obj, map, &why);
	if (!m->has_obj)
		snprintf(m->reason, sizeof(m->reason), "%s", why);
	module_add(m);
	serve_open(m);
	return 0;
}

unsigned int la_objclose(uintptr_t *cookie)
{
	struct module *m = (struct module *)*cookie;

	if (!m)
		return 0;
	if (m->is_main)
		exiting = 1;
	if (m->served && !m->released) {
		if (cfg.stats) {
			struct kstls_stats st = { .module = m->id };
			int fd = kstls_fd();

			if (fd >= 0 && !ioctl(fd, KSTLS_IOC_STATS, &st)) {
				m->st = st;
				m->have_stats = 1;
			}
		}
		if (!exiting)
			serve_close(m);
	}
	m->closed = 1;
	if (!cfg.stats && !exiting)
		module_forget(m);
	return 0;
}

void la_activity(uintptr_t *cookie, unsigned int flag)
{
	(void)cookie;
	if (flag == LA_ACT_CONSISTENT)
		for (struct module *m = modules; m; m = m->next)
			m->pending = 0;
}

/* --- --stats ----------------------------------------------------------------------------- */

static void report(FILE *f)
{
	int ntls = 0, nserved = 0;
	const char *path = cfg.strict ? "strict" : "kstls";

	for (struct module *m = modules; m; m = m->next) {
		if (!m->has_obj || !m->obj.tls)
			continue;
		ntls++;
		nserved += m->served;
	}
	fprintf(f, "kstls-run[%d]: %d module%s with TLS, %d served by kstls%s\n", getpid(), ntls,
		ntls == 1 ? "" : "s", nserved, cfg.strict ? " (strict: every access a kernel lookup)" : "");
	for (struct module *m = modules; m; m = m->next) {
		if (m->has_obj && !m->obj.tls)
			continue;
		if (!m->has_obj && !m->reason[0])
			continue;
		if (m->served && !m->have_stats && !m->released) {
			struct kstls_stats st = { .module = m->id };
			int fd = kstls_fd();

			if (fd >= 0 && !ioctl(fd, KSTLS_IOC_STATS, &st)) {
				m->st = st;
				m->have_stats = 1;
			}
		}
		if (m->served && m->have_stats)
			fprintf(f, "kstls-run[%d]: %s: %s, %llu kernel lookups, %llu first touches (%s)\n",
				getpid(), module_short_name(m), path,
				(unsigned long long)m->st.lookups, (unsigned long long)m->st.allocs,
				m->name);
		else if (m->served)
			fprintf(f, "kstls-run[%d]: %s: %s, counters unavailable (%s)\n", getpid(),
				module_short_name(m), path, m->name);
		else
			fprintf(f, "kstls-run[%d]: %s: host: %s (%s)\n", getpid(), module_short_name(m),
				m->reason, m->name);
	}
}

__attribute__((destructor)) static void print_stats(void)
{
	FILE *f;
	int fd;

	if (!cfg.stats)
		return;
	if (!strcmp(cfg.stats, "-")) {
		fflush(stderr);
		report(stderr);
		fflush(stderr);
		return;
	}
	/* kstls-run made the name absolute, perhaps longer than PATH_MAX. */
	fd = path_open(cfg.stats, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	f = fd < 0 ? NULL : fdopen(fd, "a");
	if (!f) {
		if (fd >= 0)
			close(fd);
		note("--stats=%s: %s", cfg.stats, strerror(errno));
		return;
	}
	report(f);
	fclose(f);
}
