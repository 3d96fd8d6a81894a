/* SPDX-License-Identifier: GPL-2.0 */
/*
 * audit.h - the audit library's view of the process: one struct module per object the dynamic
 * linker reported with la_objopen, in the order it reported them (the order of the lookup scope
 * within a namespace). With --stats every one is kept until exit, so that the report has every
 * module that ever had TLS; without, a dlclosed one is dropped.
 */
#ifndef KSTLS_RUN_AUDIT_H
#define KSTLS_RUN_AUDIT_H

#include <link.h>
#include <stdint.h>

#include <kstls.h>

#include "elfobj.h"

#define REASON_LEN 200

struct module {
	struct module *next;		/* in la_objopen order */
	struct link_map *map;
	Lmid_t lmid;
	char *name;			/* a copy of l_name ("" for the executable) */
	int has_obj;			/* obj could be read */
	struct elf_obj obj;
	int is_main, is_rtld;
	/* Not relocated yet: opened since the namespace was last consistent. */
	int pending;
	int closed;			/* la_objclose seen: obj must not be read any more */
	int tga_routed;			/* its references to __tls_get_addr go to kstls's */
	int tga_foreign;		/* they bind to another __tls_get_addr than glibc's */
	int served;			/* its TLS is a kstls module */
	uint64_t id;			/* the kstls id, when served */
	int released;			/* unregistered (dlclose): the id is dead */
	char reason[REASON_LEN];	/* why it stays on the host, when not served */
	struct kstls_stats st;		/* counters read at la_objclose (have_stats) */
	int have_stats;
	/* The tls_index arguments of its rewritten TLS descriptors: mappings chained through their
	 * first word, their length in the second. */
	void *descs;
};

/* Options from the launcher's environment (KSTLS_RUN_STRICT, KSTLS_RUN_STATS). */
struct config {
	int strict;
	const char *stats;		/* NULL: no --stats, "-": stderr, else a file (appended to) */
	int device;			/* /dev/kstls could be opened in la_version */
	char device_error[64];
};

extern struct config cfg;
extern struct module *modules;

/* Appends @m to the list (modules.c). */
void module_add(struct module *m);

/* Drops the closed @m from the list and frees it (modules.c). */
void module_forget(struct module *m);

/* Decides how the just-opened @m is served, registers it and rewrites relocations (serve.c). */
void serve_open(struct module *m);

/* KSTLS_IOC_SET_MODE strict on this library's context (opened if need be). 0 or -errno. */
int serve_strict(void);

/* dlclose: releases @m's kstls module and its descriptors' storage, after its counters were
 * read (serve.c). */
void serve_close(struct module *m);

/* Reasons and warnings go to stderr at once, prefixed like every line of kstls-run
 * (modules.c). */
void note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* The name --stats shows for @m: the last path component of its l_name (modules.c). */
const char *module_short_name(const struct module *m);

#endif /* KSTLS_RUN_AUDIT_H */
