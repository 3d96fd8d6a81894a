# SPDX-License-Identifier: GPL-2.0
#
# kstls: the out-of-tree Rust module, its library, tests and guest.
#
#   make demo        set everything up, boot the guest with kstls loaded, show it working
#   make check       set everything up and run every test (KUnit + selftests in the guest)
#   make vm-run CMD='...' [VM_EXTRA=dir]   run a command in the guest with kstls loaded
#   make bench                             the benchmark in the guest (docs/BENCHMARKS.md)
#   make fuzz [DURATION=s] [SEED=n] [IOCTLS=n EXITS=n]   the fuzzer alone, long (600 s, or
#                                          until both counts are reached)
#   make KDIR=... [LLVM=1]                 build kstls.ko against your own Rust-enabled kernel
#                                          (an x86-64 one, or an x86-64 User-Mode Linux build)
#
# Without KDIR, the project's own test kernel (built by scripts/kernel.sh in the cache,
# ~/.cache/kstls) is used.

KSTLS_CACHE ?= $(HOME)/.cache/kstls
export KSTLS_CACHE
KDIR ?= $(shell scripts/kernel.sh dir 2>/dev/null)
# Debian's rustc-web (which ships the matching rust-src), never a rustup toolchain.
RUSTC ?= /usr/bin/rustc
HOSTRUSTC ?= $(RUSTC)
BINDGEN ?= $(firstword $(wildcard $(KSTLS_CACHE)/tools/bin/bindgen) bindgen)
LIBCLANG_PATH ?= $(wildcard /usr/lib/llvm-19/lib)
export LIBCLANG_PATH
# A KDIR that is a User-Mode Linux build (CONFIG_UML) is built with ARCH=um, like any other.
KDIR_UML := $(shell grep -qs '^CONFIG_UML=y' '$(KDIR)/.config' && echo y)
KMAKE_VARS = RUSTC=$(RUSTC) HOSTRUSTC=$(HOSTRUSTC) BINDGEN=$(BINDGEN) $(if $(LLVM),LLVM=$(LLVM)) \
	$(if $(KDIR_UML),ARCH=um)
# The project's prod and uml kernels get their kstls.ko in build/module/FLAVOUR (scripts/lib.sh,
# module_ko), built from a copy of the module's sources there, so that they never overwrite the
# test kernel's at the top (Kbuild's MO= would want a source tree with no build in it).
MODULE_KO := $(shell KSTLS_ROOT='$(CURDIR)' bash -c '. scripts/lib.sh && module_ko "$$1"' _ '$(KDIR)' 2>/dev/null)
MODULE_OUT := $(patsubst %/,%,$(dir $(MODULE_KO)))
MODULE_M := $(if $(filter-out $(CURDIR),$(MODULE_OUT)),$(MODULE_OUT),$(CURDIR))

all: modules

modules modules_install clean rust-analyzer:
	@test -n "$(KDIR)" -a -d "$(KDIR)" || { echo "KDIR is not a kernel build directory (run 'make kernel' or pass KDIR=...)"; exit 1; }
	$(if $(filter-out $(CURDIR),$(MODULE_M)),KSTLS_ROOT='$(CURDIR)' bash -c '. scripts/lib.sh && sync_module_sources "$$1"' _ '$(MODULE_M)')
	$(MAKE) -C $(KDIR) M=$(MODULE_M) $(KMAKE_VARS) $@
	$(if $(filter rust-analyzer,$@),scripts/rust-analyzer-module.py rust-project.json rust/kstls_main.rs $(KDIR))

# Installation: the module (modules_install, needs KDIR), the uapi header, the udev rule giving
# /dev/kstls mode 0666, the man pages, libkstls (libkstls.{a,so}, kstls.h, kstls.pc, through
# userspace-lib's own install) and kstls-run (bin/, lib/kstls/libkstls-audit.so, its man page,
# through kstls-run's own install). DESTDIR and PREFIX are honoured; scripts/install-test.sh checks
# the tree, pkg-config and the man pages.
PREFIX ?= /usr/local
UDEVDIR ?= /etc/udev/rules.d
INSTALL ?= install
INST_FILES = $(PREFIX)/include/linux/kstls.h $(UDEVDIR)/60-kstls.rules \
	$(PREFIX)/share/man/man4/kstls.4 $(PREFIX)/share/man/man3/libkstls.3 \
	$(PREFIX)/include/kstls.h $(PREFIX)/lib/libkstls.a $(PREFIX)/lib/libkstls.so \
	$(PREFIX)/lib/pkgconfig/kstls.pc $(PREFIX)/bin/kstls-run $(PREFIX)/lib/kstls/libkstls-audit.so \
	$(PREFIX)/share/man/man1/kstls-run.1

install: modules
	$(MAKE) -C $(KDIR) M=$(MODULE_M) $(KMAKE_VARS) INSTALL_MOD_PATH=$(DESTDIR) modules_install
	$(INSTALL) -D -m 0644 uapi/linux/kstls.h $(DESTDIR)$(PREFIX)/include/linux/kstls.h
	$(INSTALL) -D -m 0644 packaging/60-kstls.rules $(DESTDIR)$(UDEVDIR)/60-kstls.rules
	$(INSTALL) -D -m 0644 man/kstls.4 $(DESTDIR)$(PREFIX)/share/man/man4/kstls.4
	$(INSTALL) -D -m 0644 man/libkstls.3 $(DESTDIR)$(PREFIX)/share/man/man3/libkstls.3
	$(MAKE) -C userspace-lib install PREFIX=$(PREFIX) DESTDIR=$(DESTDIR)
	$(MAKE) -C kstls-run install PREFIX=$(PREFIX) DESTDIR=$(DESTDIR)

# The module is removed for one kernel release: KERNELRELEASE, or that of KDIR when KDIR is
# given. Neither given (the default KDIR is the project's test kernel, not necessarily the one
# installed for), or a KDIR that is no kernel build: a clear error, and the releases that have
# kstls.ko installed, rather than a module quietly left behind.
uninstall:
	@rel='$(KERNELRELEASE)'; \
	if [ -z "$$rel" ] && [ '$(origin KDIR)' != file ]; then \
		rel=$$(cat '$(KDIR)/include/config/kernel.release' 2>/dev/null) || \
		{ echo "make uninstall: KDIR=$(KDIR) is not a kernel build directory (no include/config/kernel.release)" >&2; exit 2; }; \
	fi; \
	if [ -z "$$rel" ]; then \
		echo "make uninstall: for which kernel? Pass KDIR=<the build dir you installed with> or KERNELRELEASE=<release>, e.g. KERNELRELEASE=$$(uname -r)" >&2; \
		echo "  kstls.ko is installed for: $$(cd '$(DESTDIR)/lib/modules' 2>/dev/null && ls -d */updates/kstls.ko 2>/dev/null | cut -d/ -f1 | tr '\n' ' ')" >&2; \
		exit 2; \
	fi; \
	rm -f $(addprefix '$(DESTDIR),$(addsuffix ',$(INST_FILES))); \
	ko='$(DESTDIR)'/lib/modules/$$rel/updates/kstls.ko; \
	if [ -e "$$ko" ]; then rm -f "$$ko" && echo "removed $$ko"; \
	else echo "make uninstall: note: no kstls.ko installed for kernel $$rel ($$ko)" >&2; fi

setup:
	scripts/setup.sh

# The three kernels of scripts/kernel.sh: the test kernel (debug), prod and uml.
kernel: setup
	scripts/kernel.sh build $(or $(FLAVOUR),debug)

selftests:
	$(MAKE) -C selftests KDIR=$(KDIR)

check:
	scripts/check.sh

demo:
	scripts/demo.sh

# shquote: $(1) (a variable's name) as one single-quoted shell word, from its unexpanded value,
# so that neither make ($VAR) nor the host shell (; | > globs quotes) reads any of it.
shquote = '$(subst ','\'',$(value $(1)))'

# CMD reaches the guest's shell byte for byte and runs there (vm.sh gives one word to sh -c).
vm-run:
	@test -n $(call shquote,CMD) || { echo "usage: make vm-run CMD='...' [VM_EXTRA=dir]" >&2; exit 2; }
	scripts/vm.sh run $(if $(VM_EXTRA),--extra $(call shquote,VM_EXTRA)) -- $(call shquote,CMD)

bench:
	scripts/check.sh --build-only >/dev/null
	scripts/bench.sh

DURATION ?= 600
fuzz:
	scripts/fuzz.sh DURATION=$(call shquote,DURATION) SEED=$(call shquote,SEED) \
		IOCTLS=$(call shquote,IOCTLS) EXITS=$(call shquote,EXITS)

.PHONY: all modules modules_install clean rust-analyzer setup kernel selftests check demo vm-run bench fuzz install uninstall
