// SPDX-License-Identifier: GPL-2.0
/*
 * modules.c - the audit library's state, below both the rtld-audit entry points (audit.c) and
 * the serving (serve.c): the options, the list of modules in la_objopen order, and how a module
 * is named and a message written.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "audit.h"

struct config cfg;
struct module *modules;
static struct module **tail = &modules;

void module_add(struct module *m)
{
	*tail = m;
	tail = &m->next;
}

/* Drops a closed module that --stats will not report: a program that loads and unloads objects
 * without end does not make the list grow. */
void module_forget(struct module *m)
{
	struct module **p = &modules;

	while (*p && *p != m)
		p = &(*p)->next;
	if (!*p)
		return;
	*p = m->next;
	if (tail == &m->next)
		tail = p;
	free(m->name);
	free(m);
}

/* One write of the whole line, however long the names in it, so that the lines of processes
 * that share stderr do not mix. */
void note(const char *fmt, ...)
{
	static const char oom[] = "kstls-run: out of memory for a message\n";
	char *msg, *line = NULL;
	va_list ap;
	ssize_t w;

	va_start(ap, fmt);
	if (vasprintf(&msg, fmt, ap) < 0)
		msg = NULL;
	va_end(ap);
	if (msg && asprintf(&line, "kstls-run[%d]: %s\n", getpid(), msg) < 0)
		line = NULL;
	w = line ? write(2, line, strlen(line)) : write(2, oom, sizeof(oom) - 1);
	(void)w;
	free(msg);
	free(line);
}

const char *module_short_name(const struct module *m)
{
	const char *s = strrchr(m->name, '/');

	return s ? s + 1 : m->name[0] ? m->name : "the executable";
}

