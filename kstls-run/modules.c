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

void note(const char *fmt, ...)
{
	char buf[512];
	va_list ap;
	int n;

	n = snprintf(buf, sizeof(buf), "kstls-run[%d]: ", getpid());
	va_start(ap, fmt);
	vsnprintf(buf + n, sizeof(buf) - n - 1, fmt, ap);
	va_end(ap);
	strcat(buf, "\n");
	if (write(2, buf, strlen(buf)) < 0)
		return;
}

const char *module_short_name(const struct module *m)
{
	const char *s = strrchr(m->name, '/');

	return s ? s + 1 : m->name[0] ? m->name : "the executable";
}

