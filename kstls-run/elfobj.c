// SPDX-License-Identifier: GPL-2.0
/*
 * elfobj.c - the headers, dynamic section, symbols and relocation tables of an object the
 * dynamic linker has just mapped (see elfobj.h).
 *
 * The public struct link_map gives the load bias (l_addr) and the dynamic section (l_ld), not
 * the program headers. The ELF header of a shared object sits at l_addr (its first PT_LOAD maps
 * file offset 0 at p_vaddr 0, as every linker lays them out); for anything else (an executable
 * linked at a fixed address) the header is searched downwards from the dynamic section, page by
 * page, probing each page with mincore() so that an unmapped one is never touched.
 *
 * glibc adds l_addr to the address-valued entries of the dynamic section it has read
 * (elf/get-dynamic-info.h) unless the section is read-only (PT_DYNAMIC without PF_W, the vDSO's
 * case: dl_relocate_ld in sysdeps/generic/ldsodefs.h), so those are read back accordingly.
 */
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "elfobj.h"

#define PAGE_SIZE_ 4096UL
#define PAGE_DOWN(a) ((uintptr_t)(a) & ~(PAGE_SIZE_ - 1))
/* How far below the dynamic section an ELF header is looked for. */
#define EHDR_SEARCH (64UL << 20)

/* Whether every page of [addr, addr + len) is mapped. */
static int mapped(uintptr_t addr, size_t len)
{
	unsigned char vec[16];
	uintptr_t p = PAGE_DOWN(addr), end = addr + len;

	for (; p < end; p += PAGE_SIZE_)
		if (mincore((void *)p, PAGE_SIZE_, vec))
			return 0;
	return 1;
}

/* The program headers of the ELF header at @at if it is the one of @map's object, else NULL. */
static const Elf64_Phdr *phdrs_at(uintptr_t at, const struct link_map *map, int *phnum)
{
	const Elf64_Ehdr *eh = (const Elf64_Ehdr *)at;
	const Elf64_Phdr *ph;

	if (!mapped(at, sizeof(*eh)) || memcmp(eh->e_ident, ELFMAG, SELFMAG) ||
	    eh->e_ident[EI_CLASS] != ELFCLASS64 || eh->e_machine != EM_X86_64 ||
	    eh->e_phentsize != sizeof(Elf64_Phdr) || eh->e_phnum == 0 || eh->e_phoff > (1UL << 20))
		return NULL;
	ph = (const Elf64_Phdr *)(at + eh->e_phoff);
	if (!mapped((uintptr_t)ph, eh->e_phnum * sizeof(*ph)))
		return NULL;
	for (int i = 0; i < eh->e_phnum; i++)
		if (ph[i].p_type == PT_DYNAMIC && map->l_addr + ph[i].p_vaddr == (uintptr_t)map->l_ld) {
			*phnum = eh->e_phnum;
			return ph;
		}
	return NULL;
}

static const Elf64_Phdr *find_phdrs(const struct link_map *map, int *phnum)
{
	const Elf64_Phdr *ph = phdrs_at(map->l_addr, map, phnum);
	uintptr_t p = PAGE_DOWN(map->l_ld);

	for (uintptr_t n = 0; !ph && p >= PAGE_SIZE_ && n < EHDR_SEARCH; n += PAGE_SIZE_, p -= PAGE_SIZE_)
		if (mapped(p, 1))
			ph = phdrs_at(p, map, phnum);
	return ph;
}

int elf_obj_init(struct elf_obj *o, struct link_map *map, const char **why)
{
	uintptr_t rela = 0, relasz = 0, jmprel = 0, pltrelsz = 0, relr = 0, relrsz = 0;
	int adjusted = 0, pltrel_rela = 1;

	memset(o, 0, sizeof(*o));
	o->map = map;
	o->base = map->l_addr;
	o->phdr = find_phdrs(map, &o->phnum);
	if (!o->phdr) {
		*why = "its ELF header was not found";
		return -1;
	}
	for (int i = 0; i < o->phnum; i++) {
		if (o->phdr[i].p_type == PT_TLS)
			o->tls = &o->phdr[i];
		if (o->phdr[i].p_type == PT_DYNAMIC)
			adjusted = (o->phdr[i].p_flags & PF_W) != 0;
	}
#define PTR(v) ((adjusted ? 0 : o->base) + (v))
	for (const Elf64_Dyn *d = map->l_ld; d->d_tag != DT_NULL; d++) {
		switch (d->d_tag) {
		case DT_SYMTAB:
			o->symtab = (const Elf64_Sym *)PTR(d->d_un.d_ptr);
			break;
		case DT_STRTAB:
			o->strtab = (const char *)PTR(d->d_un.d_ptr);
			break;
		case DT_STRSZ:
			o->strsz = d->d_un.d_val;
			break;
		case DT_GNU_HASH:
			o->gnu_hash = (const uint32_t *)PTR(d->d_un.d_ptr);
			break;
		case DT_HASH:
			o->sysv_hash = (const uint32_t *)PTR(d->d_un.d_ptr);
			break;
		case DT_RELA:
			/* With DT_RELR, DT_RELA may be 0, which glibc leaves unadjusted. */
			rela = d->d_un.d_ptr ? PTR(d->d_un.d_ptr) : 0;
			break;
		case DT_RELASZ:
			relasz = d->d_un.d_val;
			break;
		case DT_JMPREL:
			jmprel = PTR(d->d_un.d_ptr);
			break;
		case DT_PLTRELSZ:
			pltrelsz = d->d_un.d_val;
			break;
		case DT_PLTREL:
			pltrel_rela = d->d_un.d_val == DT_RELA;
			break;
		case DT_RELR:
			relr = PTR(d->d_un.d_ptr);
			break;
		case DT_RELRSZ:
			relrsz = d->d_un.d_val;
			break;
		case DT_REL:
			o->has_rel = 1;
			break;
		case DT_VERSYM:
			o->versym = (const uint16_t *)PTR(d->d_un.d_ptr);
			break;
		case DT_VERNEED:
			/* Not among the entries glibc adjusts. */
			o->verneed = (const Elf64_Verneed *)(o->base + d->d_un.d_ptr);
			break;
		case DT_VERNEEDNUM:
			o->nverneed = d->d_un.d_val;
			break;
		case DT_TEXTREL:
			o->textrel = 1;
			break;
		case DT_SYMBOLIC:
			o->symbolic = 1;
			break;
		case DT_FLAGS:
			o->flags = d->d_un.d_val;
			if (o->flags & DF_TEXTREL)
				o->textrel = 1;
			if (o->flags & DF_SYMBOLIC)
				o->symbolic = 1;
			break;
		}
	}
#undef PTR
	if (!o->symtab || !o->strtab) {
		*why = "it has no dynamic symbol table";
		return -1;
	}
	if (!pltrel_rela && jmprel)
		o->has_rel = 1;
	/* glibc's ranges (elf/dynamic-link.h): DT_JMPREL may be the tail of DT_RELA. */
	if (rela && jmprel && rela + relasz == jmprel + pltrelsz && relasz >= pltrelsz)
		relasz -= pltrelsz;
	o->rela = (Elf64_Rela *)rela;
	o->nrela = rela ? relasz / sizeof(Elf64_Rela) : 0;
	o->jmprel = (Elf64_Rela *)jmprel;
	o->njmprel = jmprel ? pltrelsz / sizeof(Elf64_Rela) : 0;
	o->relr = (const uint64_t *)relr;
	o->nrelr = relr ? relrsz / sizeof(uint64_t) : 0;
	return 0;
}

static uint32_t gnu_hash(const char *s)
{
	uint32_t h = 5381;

	for (; *s; s++)
		h = h * 33 + (unsigned char)*s;
	return h;
}

static uint32_t sysv_hash(const char *s)
{
	uint32_t h = 0, g;

	for (; *s; s++) {
		h = (h << 4) + (unsigned char)*s;
		g = h & 0xf0000000;
		if (g)
			h ^= g >> 24;
		h &= ~g;
	}
	return h;
}

/* Whether symbol @i of @o is @name and defined for others to bind to. */
static const Elf64_Sym *match(const struct elf_obj *o, uint32_t i, const char *name)
{
	const Elf64_Sym *s = &o->symtab[i];
	int bind = ELF64_ST_BIND(s->st_info), vis = ELF64_ST_VISIBILITY(s->st_other);

	if (s->st_shndx == SHN_UNDEF || strcmp(elf_obj_name(o, s), name))
		return NULL;
	if (bind != STB_GLOBAL && bind != STB_WEAK && bind != STB_GNU_UNIQUE)
		return NULL;
	if (vis != STV_DEFAULT && vis != STV_PROTECTED)
		return NULL;
	return s;
}

const Elf64_Sym *elf_obj_lookup(const struct elf_obj *o, const char *name)
{
	const Elf64_Sym *s;

	if (o->gnu_hash) {
		const uint32_t *h = o->gnu_hash;
		uint32_t nbuckets = h[0], symoffset = h[1], bloom_size = h[2], shift = h[3];
		const uint64_t *bloom = (const uint64_t *)&h[4];
		const uint32_t *buckets = (const uint32_t *)&bloom[bloom_size];
		const uint32_t *chain = &buckets[nbuckets];
		uint32_t hash = gnu_hash(name), i;
		uint64_t word, mask;

		if (!nbuckets || !bloom_size)
			return NULL;
		word = bloom[(hash / 64) % bloom_size];
		mask = (1UL << (hash % 64)) | (1UL << ((hash >> shift) % 64));
		if ((word & mask) != mask)
			return NULL;
		i = buckets[hash % nbuckets];
		if (i < symoffset)
			return NULL;
		for (;; i++) {
			uint32_t h2 = chain[i - symoffset];

			if ((hash | 1) == (h2 | 1) && (s = match(o, i, name)))
				return s;
			if (h2 & 1)
				return NULL;
		}
	}
	if (o->sysv_hash) {
		const uint32_t *h = o->sysv_hash;
		uint32_t nbucket = h[0];
		const uint32_t *bucket = &h[2], *chain = &bucket[nbucket];

		if (!nbucket)
			return NULL;
		for (uint32_t i = bucket[sysv_hash(name) % nbucket]; i; i = chain[i])
			if ((s = match(o, i, name)))
				return s;
	}
	return NULL;
}

const char *elf_obj_version(const struct elf_obj *o, const Elf64_Sym *sym)
{
	const Elf64_Verneed *vn = o->verneed;
	uint16_t ndx;

	if (!o->versym || !vn)
		return NULL;
	ndx = o->versym[sym - o->symtab] & 0x7fff;
	if (ndx <= 1)
		return NULL;
	for (size_t i = 0; i < o->nverneed; i++) {
		const Elf64_Vernaux *a = (const Elf64_Vernaux *)((const char *)vn + vn->vn_aux);

		for (int k = 0; k < vn->vn_cnt; k++) {
			if (a->vna_other == ndx)
				return a->vna_name < o->strsz ? o->strtab + a->vna_name : NULL;
			a = (const Elf64_Vernaux *)((const char *)a + a->vna_next);
		}
		if (!vn->vn_next)
			break;
		vn = (const Elf64_Verneed *)((const char *)vn + vn->vn_next);
	}
	return NULL;
}

static const Elf64_Phdr *load_of(const struct elf_obj *o, uintptr_t addr)
{
	for (int i = 0; i < o->phnum; i++) {
		const Elf64_Phdr *p = &o->phdr[i];

		if (p->p_type == PT_LOAD && addr >= o->base + p->p_vaddr &&
		    addr < o->base + p->p_vaddr + p->p_memsz)
			return p;
	}
	return NULL;
}

int elf_obj_writable(const struct elf_obj *o, uintptr_t addr, size_t len)
{
	const Elf64_Phdr *p = load_of(o, addr);

	return p && (p->p_flags & PF_W) && addr + len <= o->base + p->p_vaddr + p->p_memsz;
}

int elf_obj_prot(const struct elf_obj *o, uintptr_t addr)
{
	const Elf64_Phdr *p = load_of(o, addr);

	if (!p)
		return -1;
	return (p->p_flags & PF_R ? PROT_READ : 0) | (p->p_flags & PF_W ? PROT_WRITE : 0) |
	       (p->p_flags & PF_X ? PROT_EXEC : 0);
}

int elf_obj_each_relr(const struct elf_obj *o, int (*fn)(uintptr_t vaddr, void *arg), void *arg)
{
	uintptr_t where = 0;
	int r;

	for (size_t i = 0; i < o->nrelr; i++) {
		uint64_t e = o->relr[i];

		if (!(e & 1)) {
			where = e;
			if ((r = fn(where, arg)))
				return r;
			where += 8;
			continue;
		}
		for (int bit = 0; (e >>= 1) != 0; bit++)
			if ((e & 1) && (r = fn(where + bit * 8, arg)))
				return r;
		where += 63 * 8;
	}
	return 0;
}
