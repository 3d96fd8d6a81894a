// SPDX-License-Identifier: GPL-2.0
/*
 * serve.c - which modules kstls serves, and the rewrite of their relocation entries that makes
 * glibc's own relocation pass produce kstls's values.
 *
 * Everything here runs in la_objopen: the object is mapped and glibc has read its dynamic
 * section and given it a TLS module id, but has applied no relocation yet (elf/dl-load.c calls
 * la_objopen at the end of _dl_map_object_from_fd; relocation comes later, in dl_main in
 * elf/rtld.c for the start-up objects and in dl_open_worker_begin in elf/dl-open.c for dlopen,
 * both before any constructor). An entry rewritten now is the one glibc applies:
 *
 *  - R_X86_64_NONE is skipped by elf_machine_rela (sysdeps/x86_64/dl-machine.h), so a slot
 *    written now and made NONE keeps our value: the module's own R_X86_64_DTPMOD64 slots get its
 *    kstls id, a GLOB_DAT against __tls_get_addr (-fno-plt) kstls's __tls_get_addr, an own
 *    R_X86_64_TLSDESC in DT_RELA the pair {kstls resolver, &tls_index}.
 *  - In DT_JMPREL, NONE is a bad PLT relocation for the lazy pass (elf_machine_lazy_rel calls
 *    _dl_reloc_bad_type), so a JUMP_SLOT against __tls_get_addr (or a TLSDESC there) becomes
 *    R_X86_64_IRELATIVE with an addend that makes l_addr + addend a function of ours returning
 *    the address to store: both elf_machine_lazy_rel and elf_machine_rela call l_addr + addend
 *    and store its result, and elf/do-rel.h only defers IRELATIVE entries to the end of their
 *    range. A TLSDESC's second word (the argument) is written now; IRELATIVE stores the first.
 *  - R_X86_64_DTPOFF64 stays: an offset in the module's TLS image means the same to kstls.
 *
 * This is why the JUMP_SLOT is rewritten rather than bound through la_symbind64: la_symbind64
 * is called only for objects whose la_objopen asked for LA_FLG_BINDFROM, for bind-now
 * relocations only from glibc 2.35 on, never for GLOB_DAT, and a symbind audit library makes
 * glibc call it on every lazy binding of every symbol.
 *
 * A module stays on the host (with the reason kept for --stats) when serving it could give two
 * threads' views of one variable or lose a value: initial-exec access to its own TLS
 * (R_X86_64_TPOFF64/TPOFF32, as libc.so.6 itself does), from itself or from another object
 * loaded with it; a dynamic relocation inside its .tdata (the kernel copies the image at
 * registration, before relocation); TLS descriptors without a kstls resolver; a
 * __tls_get_addr of its own; text relocations; anything not parsed.
 *
 * Relocations that name another module's TLS symbol are resolved the way glibc's lookup would,
 * in la_objopen order within the namespace: one that reaches a served module gets that module's
 * kstls id (and its own __tls_get_addr calls go to kstls's, which forwards host ids to the
 * host); one that reaches a module on the host keeps glibc's value.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>

#include "audit.h"

/* libkstls.a's entry, hidden in this library. */
extern void *__tls_get_addr(void *ti) __attribute__((visibility("hidden")));
/* libkstls's TLS descriptor resolver, for descriptors {kstls_tlsdesc, &tls_index{id, offset}}
 * (it returns the variable's address minus the thread pointer, every other register kept), if
 * this copy of libkstls.a has one: the reference is weak, NULL without. */
extern void kstls_tlsdesc(void) __attribute__((weak, visibility("hidden")));

#define PAGE 4096UL

/* What IRELATIVE entries call: the value glibc stores in the slot. */
static void *tga_ifunc(void)
{
	return (void *)__tls_get_addr;
}

static void *tlsdesc_ifunc(void)
{
	return (void *)kstls_tlsdesc;
}

static int have_tlsdesc(void)
{
	return kstls_tlsdesc != NULL;
}

static const char *type_name(unsigned t)
{
	switch (t) {
	case R_X86_64_DTPMOD64:
		return "R_X86_64_DTPMOD64";
	case R_X86_64_TPOFF64:
		return "R_X86_64_TPOFF64";
	case R_X86_64_TPOFF32:
		return "R_X86_64_TPOFF32";
	case R_X86_64_TLSDESC:
		return "R_X86_64_TLSDESC";
	case R_X86_64_64:
		return "R_X86_64_64";
	case R_X86_64_RELATIVE:
		return "R_X86_64_RELATIVE";
	}
	return "a relocation";
}

static int is_tls_type(unsigned t)
{
	return t == R_X86_64_DTPMOD64 || t == R_X86_64_TPOFF64 || t == R_X86_64_TPOFF32 ||
	       t == R_X86_64_TLSDESC;
}

/* One relocation table of a module: DT_RELA (RELA entries) or DT_JMPREL (PLT entries). */
struct table {
	Elf64_Rela *r;
	size_t n;
	int plt;
};

static int tables(const struct module *m, struct table t[2])
{
	t[0] = (struct table){ m->obj.rela, m->obj.nrela, 0 };
	t[1] = (struct table){ m->obj.jmprel, m->obj.njmprel, 1 };
	return 2;
}

#define FOR_EACH_RELA(m, tab, r)                                                              \
	for (struct table tab##_t[2], *tab = (tables((m), tab##_t), tab##_t); tab < tab##_t + 2; \
	     tab++)                                                                             \
		for (Elf64_Rela *r = tab->r; r && r < tab->r + tab->n; r++)

/* Whether @m, which names TLS symbol @name, may be searched: open, read, in @lmid. */
static int searchable(const struct module *m, Lmid_t lmid)
{
	return m->has_obj && !m->closed && m->lmid == lmid;
}

/* The first module of namespace @lmid, in scope order and up to @upto included, that defines
 * the TLS symbol @name; NULL if none does (yet). */
static struct module *definer(Lmid_t lmid, const char *name, const struct module *upto)
{
	for (struct module *d = modules; d; d = d->next) {
		const Elf64_Sym *s;

		if (searchable(d, lmid) && (s = elf_obj_lookup(&d->obj, name)) &&
		    ELF64_ST_TYPE(s->st_info) == STT_TLS)
			return d;
		if (d == upto)
			break;
	}
	return NULL;
}

/* The module whose TLS the TLS relocation @r of @m names, as glibc will bind it: @m itself for
 * symbol 0 or a symbol that binds locally, else the first definer in scope up to @upto (@m, or
 * a module opened after it). */
static struct module *target(struct module *m, const Elf64_Rela *r, const struct module *upto)
{
	const Elf64_Sym *s = elf_obj_sym(&m->obj, r);
	int bind = ELF64_ST_BIND(s->st_info), vis = ELF64_ST_VISIBILITY(s->st_other);

	if (!ELF64_R_SYM(r->r_info))
		return m;
	if (s->st_shndx != SHN_UNDEF &&
	    (bind == STB_LOCAL || vis != STV_DEFAULT || m->obj.symbolic))
		return m;
	return definer(m->lmid, elf_obj_name(&m->obj, s), upto);
}

static int is_tga_ref(const struct module *m, const Elf64_Rela *r)
{
	unsigned t = ELF64_R_TYPE(r->r_info);
	const Elf64_Sym *s = elf_obj_sym(&m->obj, r);

	return (t == R_X86_64_JUMP_SLOT || t == R_X86_64_GLOB_DAT || t == R_X86_64_64) &&
	       ELF64_R_SYM(r->r_info) && s->st_shndx == SHN_UNDEF &&
	       !strcmp(elf_obj_name(&m->obj, s), "__tls_get_addr");
}

/*
 * Why @m's calls of __tls_get_addr do not reach the dynamic linker's (and must not be pointed at
 * kstls's: they go to a libkstls.so, whose ids this library's context does not know), or NULL:
 * a reference versioned other than GLIBC_2.3, or an unversioned one that an object opened
 * before @m defines.
 */
static const char *foreign_tga(struct module *m, char *buf, size_t len)
{
	FOR_EACH_RELA(m, tab, r) {
		const char *v;

		if (!is_tga_ref(m, r))
			continue;
		v = elf_obj_version(&m->obj, elf_obj_sym(&m->obj, r));
		if (v && strcmp(v, "GLIBC_2.3")) {
			snprintf(buf, len, "its __tls_get_addr is __tls_get_addr@%s, not the dynamic "
				 "linker's", v);
			return buf;
		}
		for (struct module *d = modules; !v && d && d != m; d = d->next)
			if (searchable(d, m->lmid) && !d->is_rtld &&
			    elf_obj_lookup(&d->obj, "__tls_get_addr")) {
				snprintf(buf, len, "its __tls_get_addr binds to %s's, not the dynamic "
					 "linker's", module_short_name(d));
				return buf;
			}
		return NULL;
	}
	return NULL;
}

static const char *sym_desc(const struct module *m, const Elf64_Rela *r, char *buf, size_t len)
{
	if (!ELF64_R_SYM(r->r_info))
		return "symbol 0";
	snprintf(buf, len, "'%s'", elf_obj_name(&m->obj, elf_obj_sym(&m->obj, r)));
	return buf;
}

/* --- writing relocation entries ---------------------------------------------------------- */

/* Makes @m's relocation tables writable (@on) or gives them their segment's protection back. */
static int tables_writable(struct module *m, int on)
{
	struct table t[2];

	tables(m, t);
	for (int i = 0; i < 2; i++) {
		uintptr_t start, end;
		int prot;

		if (!t[i].r || !t[i].n)
			continue;
		start = (uintptr_t)t[i].r & ~(PAGE - 1);
		end = ((uintptr_t)(t[i].r + t[i].n) + PAGE - 1) & ~(PAGE - 1);
		prot = elf_obj_prot(&m->obj, (uintptr_t)t[i].r);
		if (prot < 0)
			prot = PROT_READ;
		if (mprotect((void *)start, end - start, on ? prot | PROT_READ | PROT_WRITE : prot))
			return -errno;
	}
	return 0;
}

/* A DT_RELA entry becomes NONE after @n words of its target were written. */
static void write_now(struct module *m, Elf64_Rela *r, const uint64_t *v, int n)
{
	uint64_t *slot = elf_obj_slot(&m->obj, r);

	for (int i = 0; i < n; i++)
		slot[i] = v[i];
	r->r_info = ELF64_R_INFO(0, R_X86_64_NONE);
}

/* A DT_JMPREL entry becomes IRELATIVE: glibc stores what @fn returns into its first word. */
static void write_by_ifunc(struct module *m, Elf64_Rela *r, void *(*fn)(void))
{
	r->r_info = ELF64_R_INFO(0, R_X86_64_IRELATIVE);
	r->r_addend = (Elf64_Sxword)((uintptr_t)fn - m->obj.base);
}

/* Storage for the tls_index arguments of rewritten descriptors: one mapping per rewrite, kept
 * in a list through its first word until the module is closed. */
static struct kstls_tls_index *desc_storage(struct module *m, size_t n)
{
	size_t len = (n + 1) * sizeof(struct kstls_tls_index);
	void **p;

	len = (len + PAGE - 1) & ~(PAGE - 1);
	p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return NULL;
	p[0] = m->descs;
	p[1] = (void *)len;
	m->descs = p;
	return (struct kstls_tls_index *)p + 1;
}

/* The descriptor of @r gets {kstls_tlsdesc, ti}. */
static void write_desc(struct module *m, Elf64_Rela *r, int plt, struct kstls_tls_index *ti)
{
	uint64_t *slot = elf_obj_slot(&m->obj, r);

	if (plt) {
		slot[1] = (uintptr_t)ti;
		write_by_ifunc(m, r, tlsdesc_ifunc);
	} else {
		uint64_t v[2] = { (uintptr_t)kstls_tlsdesc, (uintptr_t)ti };

		write_now(m, r, v, 2);
	}
}

/* Points @m's references to __tls_get_addr at kstls's (once). */
static void route_tga(struct module *m)
{
	if (m->tga_routed)
		return;
	m->tga_routed = 1;
	FOR_EACH_RELA(m, tab, r) {
		uint64_t v = (uintptr_t)__tls_get_addr;

		if (!is_tga_ref(m, r) || ELF64_R_TYPE(r->r_info) == R_X86_64_64)
			continue;
		if (tab->plt)
			write_by_ifunc(m, r, tga_ifunc);
		else
			write_now(m, r, &v, 1);
	}
}

/* The tls_index a descriptor of @m against @r's symbol in module @t needs. */
static struct kstls_tls_index desc_index(const struct module *m, const Elf64_Rela *r,
					 const struct module *t)
{
	const Elf64_Sym *s = elf_obj_sym(&m->obj, r);
	uint64_t off = r->r_addend;

	if (ELF64_R_SYM(r->r_info)) {
		if (t != m)
			s = elf_obj_lookup(&t->obj, elf_obj_name(&m->obj, s));
		off += s ? s->st_value : 0;
	}
	return (struct kstls_tls_index){ t->id, off };
}

/*
 * Rewrites the TLS relocations of @m that name served module @t (the module itself, or one it
 * reaches, found in scope up to @upto): DTPMOD64 slots and descriptors, and then @m's calls of
 * __tls_get_addr. @m's relocation tables must be writable. Returns -errno when the descriptors'
 * storage could not be had (nothing is written then).
 */
static int rewrite_refs(struct module *m, struct module *t, const struct module *upto)
{
	size_t ndesc = 0, k = 0, done = 0;
	struct kstls_tls_index *ti = NULL;

	FOR_EACH_RELA(m, tab, r)
		if (ELF64_R_TYPE(r->r_info) == R_X86_64_TLSDESC && have_tlsdesc() &&
		    target(m, r, upto) == t)
			ndesc++;
	if (ndesc && !(ti = desc_storage(m, ndesc)))
		return -ENOMEM;
	FOR_EACH_RELA(m, tab, r) {
		unsigned type = ELF64_R_TYPE(r->r_info);

		if (!is_tls_type(type) || target(m, r, upto) != t)
			continue;
		if (type == R_X86_64_DTPMOD64 && !tab->plt) {
			write_now(m, r, &t->id, 1);
			done++;
		} else if (type == R_X86_64_TLSDESC && ti) {
			ti[k] = desc_index(m, r, t);
			write_desc(m, r, tab->plt, &ti[k]);
			k++;
			done++;
		}
	}
	if (ti)
		mprotect(m->descs, (size_t)((void **)m->descs)[1], PROT_READ);
	if (done)
		route_tga(m);
	return 0;
}

/* --- deciding ---------------------------------------------------------------------------- */

static int refuse(struct module *m, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int refuse(struct module *m, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(m->reason, sizeof(m->reason), fmt, ap);
	va_end(ap);
	return -1;
}

struct tdata_range {
	uintptr_t start, end;
};

static int in_tdata(uintptr_t vaddr, void *arg)
{
	struct tdata_range *t = arg;

	return vaddr + 8 > t->start && vaddr < t->end;
}

/* Whether @m's own relocations allow serving it; 0, or -1 with m->reason set. */
static int check_own(struct module *m)
{
	const Elf64_Phdr *tls = m->obj.tls;
	struct tdata_range td = { tls->p_vaddr, tls->p_vaddr + tls->p_filesz };
	int own_mod = 0, own_desc = 0, tga = 0;
	const char *tdata_rel = NULL;
	char buf[160];

	if (m->obj.textrel)
		return refuse(m, "it has text relocations");
	if (m->obj.has_rel)
		return refuse(m, "it has REL relocations");
	if (elf_obj_lookup(&m->obj, "__tls_get_addr"))
		return refuse(m, "it defines __tls_get_addr itself");
	if (m->tga_foreign)
		return refuse(m, "%s", foreign_tga(m, buf, sizeof(buf)));
	FOR_EACH_RELA(m, tab, r) {
		unsigned type = ELF64_R_TYPE(r->r_info);

		/* Reported after the loop: initial-exec access is the better reason. */
		if (type != R_X86_64_NONE && !tdata_rel && in_tdata(r->r_offset, &td))
			tdata_rel = type_name(type);
		if (is_tga_ref(m, r)) {
			if (type == R_X86_64_64)
				return refuse(m, "it uses the address of __tls_get_addr as data");
			tga++;
			continue;
		}
		if (!is_tls_type(type) || target(m, r, m) != m)
			continue;
		switch (type) {
		case R_X86_64_DTPMOD64:
			if (tab->plt)
				return refuse(m, "R_X86_64_DTPMOD64 in DT_JMPREL");
			if (!elf_obj_writable(&m->obj, (uintptr_t)elf_obj_slot(&m->obj, r), 8))
				return refuse(m, "a DTPMOD64 slot outside its writable segments");
			own_mod++;
			break;
		case R_X86_64_TPOFF64:
		case R_X86_64_TPOFF32:
			return refuse(m, "initial-exec access to its own TLS (%s against %s)",
				      type_name(type), sym_desc(m, r, buf, sizeof(buf)));
		case R_X86_64_TLSDESC:
			if (!elf_obj_writable(&m->obj, (uintptr_t)elf_obj_slot(&m->obj, r), 16))
				return refuse(m, "a TLS descriptor outside its writable segments");
			own_desc++;
			break;
		}
	}
	if (!tdata_rel && elf_obj_each_relr(&m->obj, in_tdata, &td))
		tdata_rel = "R_X86_64_RELATIVE in DT_RELR";
	if (tdata_rel)
		return refuse(m, "a relocation inside its .tdata (%s): the kernel copies the image "
			      "before relocation", tdata_rel);
	if (!own_mod && !own_desc)
		return refuse(m, "no general-dynamic, local-dynamic or TLSDESC access to its own TLS");
	if (own_mod && !tga)
		return refuse(m, "its dynamic TLS code calls a __tls_get_addr linked into it");
	if (own_desc && !have_tlsdesc())
		return refuse(m, "TLSDESC resolver unavailable");
	return 0;
}

/* Whether the not yet relocated modules loaded before @m reach @m's TLS only in ways kstls can
 * serve; 0, or -1 with m->reason set. */
static int check_earlier(struct module *m)
{
	char buf[96];

	for (struct module *p = modules; p && p != m; p = p->next) {
		if (!p->pending || !searchable(p, m->lmid) || p->is_rtld)
			continue;
		FOR_EACH_RELA(p, tab, r) {
			unsigned type = ELF64_R_TYPE(r->r_info);

			if (!is_tls_type(type) || !ELF64_R_SYM(r->r_info) || target(p, r, p) == p)
				continue;
			if (definer(m->lmid, elf_obj_name(&p->obj, elf_obj_sym(&p->obj, r)), m) != m)
				continue;
			if (type == R_X86_64_TPOFF64 || type == R_X86_64_TPOFF32)
				return refuse(m, "%s reaches its TLS with initial-exec (%s against %s)",
					      p->is_main ? "the executable" : module_short_name(p),
					      type_name(type), sym_desc(p, r, buf, sizeof(buf)));
			if (type == R_X86_64_TLSDESC && !have_tlsdesc())
				return refuse(m, "%s reaches its TLS through a TLS descriptor and the "
					      "TLSDESC resolver is unavailable", module_short_name(p));
			if (type == R_X86_64_DTPMOD64 && p->tga_foreign)
				return refuse(m, "%s reaches its TLS through a __tls_get_addr that is not "
					      "the dynamic linker's", module_short_name(p));
			if (type == R_X86_64_DTPMOD64 &&
			    (tab->plt || !elf_obj_writable(&p->obj, (uintptr_t)elf_obj_slot(&p->obj, r), 8)))
				return refuse(m, "%s has a DTPMOD64 slot for it that cannot be written",
					      module_short_name(p));
		}
	}
	return 0;
}

/* KSTLS_IOC_SET_MODE, strict, on this library's context (opened if need be). The mode belongs
 * to the context, which libkstls closes when its last module goes and opens again for the next
 * one: so it is set before every registration. */
int serve_strict(void)
{
	struct kstls_mode mode = { .mode = KSTLS_MODE_STRICT };
	int fd = kstls_fd();

	if (fd < 0)
		return fd;
	return ioctl(fd, KSTLS_IOC_SET_MODE, &mode) ? -errno : 0;
}

static int register_tls(struct module *m)
{
	const Elf64_Phdr *tls = m->obj.tls;
	uint64_t align = tls->p_align ? tls->p_align : 1;
	struct kstls_image img = {
		.image = (const void *)(m->obj.base + tls->p_vaddr),
		.filesz = tls->p_filesz,
		.memsz = tls->p_memsz,
		.align = align,
		.align_offset = tls->p_vaddr % align,
	};
	int err;

	if (cfg.strict && (err = serve_strict()))
		return refuse(m, "KSTLS_IOC_SET_MODE: %s", strerror(-err));
	if ((err = kstls_register(&img, &m->id)))
		return refuse(m, "KSTLS_IOC_REGISTER: %s", strerror(-err));
	return 0;
}

/* Serves @m: registers its TLS and rewrites its own references and those of the earlier,
 * not yet relocated modules that reach it. */
static void serve(struct module *m)
{
	int err;

	if (check_own(m) || check_earlier(m))
		return;
	if ((err = tables_writable(m, 1))) {
		tables_writable(m, 0);
		refuse(m, "mprotect of its relocation tables: %s", strerror(-err));
		return;
	}
	if (register_tls(m)) {
		tables_writable(m, 0);
		return;
	}
	m->served = 1;
	err = rewrite_refs(m, m, m);
	tables_writable(m, 0);
	if (err) {
		/* Nothing was written: its TLS stays the host's. */
		kstls_unregister(m->id);
		m->served = 0;
		refuse(m, "no memory for its TLS descriptors");
		return;
	}
	for (struct module *p = modules; p && p != m; p = p->next) {
		if (!p->pending || !searchable(p, m->lmid) || p->is_rtld)
			continue;
		if (tables_writable(p, 1) || rewrite_refs(p, m, m))
			note("warning: %s: could not point its references to %s at kstls", p->name,
			     m->name);
		tables_writable(p, 0);
	}
}

/* The references of @m to modules opened before it that kstls serves. */
static void reach_served(struct module *m)
{
	char buf[96];

	FOR_EACH_RELA(m, tab, r) {
		unsigned type = ELF64_R_TYPE(r->r_info);
		struct module *t;

		if (!is_tls_type(type) || !ELF64_R_SYM(r->r_info))
			continue;
		t = target(m, r, m);
		if (!t || t == m || !t->served || t->released)
			continue;
		if (type == R_X86_64_TPOFF64 || type == R_X86_64_TPOFF32 || m->tga_foreign ||
		    (type == R_X86_64_TLSDESC && !have_tlsdesc()) ||
		    (type == R_X86_64_DTPMOD64 &&
		     (tab->plt || !elf_obj_writable(&m->obj, (uintptr_t)elf_obj_slot(&m->obj, r), 8)))) {
			note("warning: %s reaches the TLS of %s (served by kstls) with %s against %s: it "
			     "sees the host's copy", m->name, t->name, type_name(type),
			     sym_desc(m, r, buf, sizeof(buf)));
			continue;
		}
		if (tables_writable(m, 1) || rewrite_refs(m, t, m))
			note("warning: %s: could not point its references to %s at kstls", m->name,
			     t->name);
		tables_writable(m, 0);
	}
}

void serve_open(struct module *m)
{
	char buf[160];

	if (!m->has_obj || m->is_rtld)
		return;
	m->tga_foreign = foreign_tga(m, buf, sizeof(buf)) != NULL;
	if (m->obj.tls && !m->is_main) {
		if (!cfg.device)
			refuse(m, "%s", cfg.device_error);
		else
			serve(m);
	} else if (m->obj.tls) {
		refuse(m, "an executable's own TLS is local-/initial-exec, %%fs-relative");
	}
	if (cfg.device)
		reach_served(m);
}

void serve_close(struct module *m)
{
	if (m->served && !m->released) {
		int err = kstls_unregister(m->id);

		if (err)
			note("warning: %s: KSTLS_IOC_UNREGISTER: %s", m->name, strerror(-err));
		m->released = 1;
	}
	while (m->descs) {
		void **p = m->descs;

		m->descs = p[0];
		munmap(p, (size_t)p[1]);
	}
}
