/* SPDX-License-Identifier: GPL-2.0 */
/*
 * clobber_call.S - clobber_call(in, out, level[, desc]) of clobber.h: every register but %rax and
 * %rsp loaded with a pattern, one TLS descriptor call, every register stored. Written in assembly
 * so that nothing between the loads, the call and the stores is the compiler's.
 *
 * The call site is the one GCC emits for -mtls-dialect=gnu2, against clobber_var of the object
 * (libclobber.so); with CLOBBER_DESC_ARG (the no-libc program) it calls the descriptor passed in
 * %rcx, filled by the caller the way a loader fills one. The stack is left as it comes: at the
 * call it is 16-byte aligned in the object's variant and 8 bytes off in the other.
 */
#include "clobber.h"

/* Below the six callee-saved registers: out, level, the caller's MXCSR, (the descriptor,) and
 * after the call the pattern's rdi. Nothing static: threads may run it at once. */
#ifdef CLOBBER_DESC_ARG
#define FRAME	40
#else
#define FRAME	32
#endif
#define OUT_AT	(FRAME - 8)
#define LEVEL_AT	(FRAME - 16)
#define MXCSR_AT	(FRAME - 24)

	.text
	.globl	clobber_call
	.type	clobber_call, @function
	.p2align 4
clobber_call:
	.cfi_startproc
	push	%rbx
	push	%rbp
	push	%r12
	push	%r13
	push	%r14
	push	%r15
	.cfi_adjust_cfa_offset 48
	push	%rsi			/* out */
	push	%rdx			/* level */
	sub	$8, %rsp
	stmxcsr	(%rsp)			/* the caller's MXCSR */
#ifdef CLOBBER_DESC_ARG
	push	%rcx			/* the descriptor */
#endif
	.cfi_adjust_cfa_offset FRAME - 8
	ldmxcsr	CLOBBER_MXCSR(%rdi)

	cmp	$CLOBBER_AVX512, %edx
	je	.Lload_zmm
	cmp	$CLOBBER_AVX, %edx
	je	.Lload_ymm
	.irp	i, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15
	movdqu	CLOBBER_VEC+\i*64(%rdi), %xmm\i
	.endr
	jmp	.Lload_gpr
.Lload_ymm:
	.irp	i, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15
	vmovdqu	CLOBBER_VEC+\i*64(%rdi), %ymm\i
	.endr
	jmp	.Lload_gpr
.Lload_zmm:
	.irp	i, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
	vmovdqu64 CLOBBER_VEC+\i*64(%rdi), %zmm\i
	.endr
	.irp	i, 0,1,2,3,4,5,6,7
	kmovq	CLOBBER_K+\i*8(%rdi), %k\i
	.endr

.Lload_gpr:
	mov	%rsp, CLOBBER_GPR+4*8(%rsi)	/* %rsp before the call, in out */
	mov	CLOBBER_GPR+1*8(%rdi), %rcx
	mov	CLOBBER_GPR+2*8(%rdi), %rdx
	mov	CLOBBER_GPR+3*8(%rdi), %rbx
	mov	CLOBBER_GPR+5*8(%rdi), %rbp
	mov	CLOBBER_GPR+6*8(%rdi), %rsi
	mov	CLOBBER_GPR+8*8(%rdi), %r8
	mov	CLOBBER_GPR+9*8(%rdi), %r9
	mov	CLOBBER_GPR+10*8(%rdi), %r10
	mov	CLOBBER_GPR+11*8(%rdi), %r11
	mov	CLOBBER_GPR+12*8(%rdi), %r12
	mov	CLOBBER_GPR+13*8(%rdi), %r13
	mov	CLOBBER_GPR+14*8(%rdi), %r14
	mov	CLOBBER_GPR+15*8(%rdi), %r15
	mov	CLOBBER_GPR+7*8(%rdi), %rdi
#ifdef CLOBBER_DESC_ARG
	mov	(%rsp), %rax
	call	*(%rax)
#else
	lea	clobber_var@tlsdesc(%rip), %rax
	call	*clobber_var@tlscall(%rax)
#endif
	push	%rdi			/* the pattern's rdi: rdi now points to out */
	.cfi_adjust_cfa_offset 8
	mov	OUT_AT(%rsp), %rdi
	mov	%rax, CLOBBER_GPR+0*8(%rdi)
	mov	%rcx, CLOBBER_GPR+1*8(%rdi)
	mov	%rdx, CLOBBER_GPR+2*8(%rdi)
	mov	%rbx, CLOBBER_GPR+3*8(%rdi)
	mov	%rbp, CLOBBER_GPR+5*8(%rdi)
	mov	%rsi, CLOBBER_GPR+6*8(%rdi)
	mov	%r8, CLOBBER_GPR+8*8(%rdi)
	mov	%r9, CLOBBER_GPR+9*8(%rdi)
	mov	%r10, CLOBBER_GPR+10*8(%rdi)
	mov	%r11, CLOBBER_GPR+11*8(%rdi)
	mov	%r12, CLOBBER_GPR+12*8(%rdi)
	mov	%r13, CLOBBER_GPR+13*8(%rdi)
	mov	%r14, CLOBBER_GPR+14*8(%rdi)
	mov	%r15, CLOBBER_GPR+15*8(%rdi)
	mov	(%rsp), %rax
	mov	%rax, CLOBBER_GPR+7*8(%rdi)
	lea	8(%rsp), %rax		/* %rsp after the call, less before it */
	sub	CLOBBER_GPR+4*8(%rdi), %rax
	mov	%rax, CLOBBER_GPR+4*8(%rdi)
	stmxcsr	CLOBBER_MXCSR(%rdi)

	mov	LEVEL_AT(%rsp), %edx
	cmp	$CLOBBER_AVX512, %edx
	je	.Lstore_zmm
	cmp	$CLOBBER_AVX, %edx
	je	.Lstore_ymm
	.irp	i, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15
	movdqu	%xmm\i, CLOBBER_VEC+\i*64(%rdi)
	.endr
	jmp	.Ldone
.Lstore_ymm:
	.irp	i, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15
	vmovdqu	%ymm\i, CLOBBER_VEC+\i*64(%rdi)
	.endr
	vzeroupper
	jmp	.Ldone
.Lstore_zmm:
	.irp	i, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
	vmovdqu64 %zmm\i, CLOBBER_VEC+\i*64(%rdi)
	.endr
	.irp	i, 0,1,2,3,4,5,6,7
	kmovq	%k\i, CLOBBER_K+\i*8(%rdi)
	.endr
	vzeroupper

.Ldone:
	ldmxcsr	MXCSR_AT(%rsp)
	add	$FRAME, %rsp
	.cfi_adjust_cfa_offset -FRAME
	pop	%r15
	pop	%r14
	pop	%r13
	pop	%r12
	pop	%rbp
	pop	%rbx
	.cfi_adjust_cfa_offset -48
	ret
	.cfi_endproc
	.size	clobber_call, . - clobber_call

	.section .note.GNU-stack, "", @progbits
