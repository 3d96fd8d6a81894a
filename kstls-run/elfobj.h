/* SPDX-License-Identifier: GPL-2.0 */
/*
 * elfobj.h - a loaded ELF object as the audit library sees it in la_objopen: mapped, its dynamic
 * section read by the dynamic linker, nothing relocated yet. One struct elf_obj per object the
 * audit library looks at; it points into the object's own mapping and owns nothing.
 */
#ifndef KSTLS_RUN_ELFOBJ_H
#define KSTLS_RUN_ELFOBJ_H

#include <elf.h>
#include <link.h>
#include <stddef.h>
#include <stdint.h>

struct elf_obj {
	struct link_map *map;
	uintptr_t base;			/* load bias, map->l_addr */
	const Elf64_Phdr *phdr;
	int phnum;
	const Elf64_Phdr *tls;		/* PT_TLS, or NULL */
	const Elf64_Sym *symtab;
	const char *strtab;
	size_t strsz;
	const uint32_t *gnu_hash;	/* DT_GNU_HASH, or NULL */
	const uint32_t *sysv_hash;	/* DT_HASH, or NULL */
	Elf64_Rela *rela;		/* DT_RELA without the DT_JMPREL entries it may contain */
	size_t nrela;
	Elf64_Rela *jmprel;		/* DT_JMPREL (always RELA here) */
	size_t njmprel;
	const uint16_t *versym;		/* DT_VERSYM, or NULL */
	const Elf64_Verneed *verneed;	/* DT_VERNEED, or NULL */
	size_t nverneed;
	const uint64_t *relr;		/* DT_RELR */
	size_t nrelr;
	uint64_t flags;			/* DT_FLAGS */
	int textrel;			/* DT_TEXTREL or DF_TEXTREL */
	int symbolic;			/* DT_SYMBOLIC or DF_SYMBOLIC: binds to itself first */
	int has_rel;			/* DT_REL: REL relocations, which x86-64 does not use */
};

/*
 * Fills @o for @map from the object's own headers. Returns 0, or -1 with a reason in @why (the
 * ELF header or the dynamic section could not be found or read).
 */
int elf_obj_init(struct elf_obj *o, struct link_map *map, const char **why);

/* The address of the relocation's target (the GOT slot, the descriptor). */
static inline void *elf_obj_slot(const struct elf_obj *o, const Elf64_Rela *r)
{
	return (void *)(o->base + r->r_offset);
}

/* The symbol a relocation names (index 0 is the null symbol). */
static inline const Elf64_Sym *elf_obj_sym(const struct elf_obj *o, const Elf64_Rela *r)
{
	return &o->symtab[ELF64_R_SYM(r->r_info)];
}

static inline const char *elf_obj_name(const struct elf_obj *o, const Elf64_Sym *s)
{
	return s->st_name < o->strsz ? o->strtab + s->st_name : "?";
}

/* The symbol @name if @o defines it for others to bind to (global or weak, not hidden), or NULL.
 * Versions are not looked at. */
const Elf64_Sym *elf_obj_lookup(const struct elf_obj *o, const char *name);

/* The version that @o requires of its undefined symbol @sym ("GLIBC_2.3"), or NULL when the
 * reference is unversioned. */
const char *elf_obj_version(const struct elf_obj *o, const Elf64_Sym *sym);

/* Whether [addr, addr + len) lies in a PT_LOAD of @o that is writable (PF_W). */
int elf_obj_writable(const struct elf_obj *o, uintptr_t addr, size_t len);

/* The mprotect() flags of the PT_LOAD segment holding @addr, or -1. */
int elf_obj_prot(const struct elf_obj *o, uintptr_t addr);

/* Calls @fn for every address a DT_RELR entry relocates; stops when it returns non-zero. */
int elf_obj_each_relr(const struct elf_obj *o, int (*fn)(uintptr_t vaddr, void *arg), void *arg);

#endif /* KSTLS_RUN_ELFOBJ_H */
