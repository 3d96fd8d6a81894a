/* SPDX-License-Identifier: GPL-2.0 */
/*
 * clobber.h - every register across one TLS descriptor call: the register file clobber_call()
 * (clobber_call.S) loads before the call and stores after it, and the helpers that fill it with
 * patterns and compare. Shared by the libc-free object libclobber.so (a compiler-style call site,
 * `lea x@tlsdesc(%rip), %rax; call *x@tlscall(%rax)`), its glibc and musl programs, and the
 * no-libc program (a descriptor it fills itself, as a loader would, CLOBBER_DESC_ARG).
 *
 * The TLSDESC convention: the resolver returns the variable's offset from the thread pointer in
 * %rax and preserves every other register, the vector registers, the AVX-512 mask registers and
 * MXCSR included; only the flags may change.
 */
#ifndef CLOBBER_H
#define CLOBBER_H

/* The layout of struct clobber_regs, for the assembly. */
#define CLOBBER_GPR	0	/* uint64_t gpr[16], by register number: rax rcx rdx rbx rsp rbp rsi rdi r8-r15 */
#define CLOBBER_VEC	128	/* uint8_t vec[32][64]: zmm0-31; xmm and ymm are their low 16 and 32 bytes */
#define CLOBBER_K	2176	/* uint64_t k[8]: AVX-512 mask registers */
#define CLOBBER_MXCSR	2240	/* uint32_t */
#define CLOBBER_SIZE	2304

/* Which vector registers clobber_call loads and stores. */
#define CLOBBER_SSE	0	/* xmm0-15 */
#define CLOBBER_AVX	1	/* ymm0-15 */
#define CLOBBER_AVX512	2	/* zmm0-31, k0-7 */

#ifndef __ASSEMBLER__
#include <stdint.h>
#include <cpuid.h>

struct clobber_regs {
	uint64_t gpr[16];
	uint8_t vec[32][64] __attribute__((aligned(64)));
	uint64_t k[8];
	uint32_t mxcsr;
} __attribute__((aligned(64)));

_Static_assert(__builtin_offsetof(struct clobber_regs, vec) == CLOBBER_VEC, "vec");
_Static_assert(__builtin_offsetof(struct clobber_regs, k) == CLOBBER_K, "k");
_Static_assert(__builtin_offsetof(struct clobber_regs, mxcsr) == CLOBBER_MXCSR, "mxcsr");
_Static_assert(sizeof(struct clobber_regs) == CLOBBER_SIZE, "size");

/*
 * Loads every register from @in but %rax and %rsp (and the vector registers of @level), makes
 * one TLS descriptor call, and stores every register into @out: gpr[0] is the call's result (the
 * variable's offset from the thread pointer), gpr[4] how far %rsp moved (0). MXCSR is restored
 * before returning. With CLOBBER_DESC_ARG the call goes through the descriptor @desc instead of
 * the object's own variable.
 */
#ifdef CLOBBER_DESC_ARG
void clobber_call(const struct clobber_regs *in, struct clobber_regs *out, int level, void *desc);
#else
void clobber_call(const struct clobber_regs *in, struct clobber_regs *out, int level);
#endif

static const char *const clobber_gpr_names[16] = {
	"rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi",
	"r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15",
};

static inline uint64_t clobber_xgetbv(void)
{
	uint32_t lo, hi;

	__asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
	return (uint64_t)hi << 32 | lo;
}

/* The widest vector registers this CPU and kernel offer: CLOBBER_AVX512, _AVX or _SSE. */
static inline int clobber_level(void)
{
	unsigned int a, b, c, d;
	uint64_t xcr0;

	if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & bit_OSXSAVE) || !(c & bit_AVX))
		return CLOBBER_SSE;
	xcr0 = clobber_xgetbv();
	if ((xcr0 & 0x6) != 0x6)
		return CLOBBER_SSE;
	if (__get_cpuid_count(7, 0, &a, &b, &c, &d) && (b & bit_AVX512F) && (xcr0 & 0xe6) == 0xe6)
		return CLOBBER_AVX512;
	return CLOBBER_AVX;
}

static inline const char *clobber_level_name(int level)
{
	return level == CLOBBER_AVX512 ? "zmm0-31, k0-7" : level == CLOBBER_AVX ? "ymm0-15" : "xmm0-15";
}

/* Patterns that differ in every register and byte, varied by @seed. */
static inline void clobber_fill(struct clobber_regs *r, unsigned int seed)
{
	uint8_t *p = (uint8_t *)r;

	for (unsigned int i = 0; i < sizeof(*r); i++)
		p[i] = 0;
	for (int i = 0; i < 16; i++)
		r->gpr[i] = 0x0101010101010101ULL * (uint64_t)(i + 1) ^ ((uint64_t)seed << 40) ^ 0x8000000000000001ULL;
	for (int i = 0; i < 32; i++)
		for (int k = 0; k < 64; k++)
			r->vec[i][k] = (uint8_t)(i * 64 + k + seed * 7 + 1);
	for (int i = 0; i < 8; i++)
		r->k[i] = 0xf0e1d2c3b4a59687ULL ^ ((uint64_t)i << 56) ^ seed;
	/* Round toward zero, all exceptions masked: not the default, so a reset shows. */
	r->mxcsr = 0x1f80 | 0x6000;
}

/*
 * 0 when @out holds @in's registers for @level (all but rax; rsp did not move), else the name
 * of the first that differs: a vector or mask register's number in @which, else -1 there.
 */
static inline const char *clobber_compare(const struct clobber_regs *in,
					  const struct clobber_regs *out, int level, int *which)
{
	int nvec = level == CLOBBER_AVX512 ? 32 : 16;
	int width = level == CLOBBER_AVX512 ? 64 : level == CLOBBER_AVX ? 32 : 16;

	*which = -1;
	if (out->gpr[4] != 0)
		return "rsp";
	for (int i = 1; i < 16; i++) {
		if (i != 4 && in->gpr[i] != out->gpr[i])
			return clobber_gpr_names[i];
	}
	for (int i = 0; i < nvec; i++) {
		for (int k = 0; k < width; k++) {
			if (in->vec[i][k] != out->vec[i][k]) {
				*which = i;
				return level == CLOBBER_AVX512 ? "zmm" : level == CLOBBER_AVX ? "ymm" : "xmm";
			}
		}
	}
	if (level == CLOBBER_AVX512) {
		for (int i = 0; i < 8; i++) {
			if (in->k[i] != out->k[i]) {
				*which = i;
				return "k";
			}
		}
	}
	if (in->mxcsr != out->mxcsr)
		return "mxcsr";
	return 0;
}
#endif /* __ASSEMBLER__ */

#endif /* CLOBBER_H */
