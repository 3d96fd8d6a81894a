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
KMAKE_VARS = RUSTC=$(RUSTC) HOSTRUSTC=$(HOSTRUSTC) BINDGEN=$(BINDGEN) $(if $(LLVM),LLVM=$(LLVM))

all: modules

modules modules_install clean rust-analyzer:
	@test -n "$(KDIR)" -a -d "$(KDIR)" || { echo "KDIR is not a kernel build directory (run 'make kernel' or pass KDIR=...)"; exit 1; }
	$(MAKE) -C $(KDIR) M=$(CURDIR) $(KMAKE_VARS) $@
	$(if $(filter rust-analyzer,$@),scripts/rust-analyzer-module.py rust-project.json rust/kstls_main.rs $(KDIR))

# Installation: the module (modules_install, needs KDIR), the uapi header, the udev rule giving
# /dev/kstls mode 0666, the man pages, and libkstls (libkstls.{a,so}, kstls.h, kstls.pc, through
# userspace-lib's own install). DESTDIR and PREFIX are honoured; scripts/install-test.sh checks
# the tree, pkg-config and the man pages.
PREFIX ?= /usr/local
UDEVDIR ?= /etc/udev/rules.d
INSTALL ?= install
INST_FILES = $(PREFIX)/include/linux/kstls.h $(UDEVDIR)/60-kstls.rules \
	$(PREFIX)/share/man/man4/kstls.4 $(PREFIX)/share/man/man3/libkstls.3 \
	$(PREFIX)/include/kstls.h $(PREFIX)/lib/libkstls.a $(PREFIX)/lib/libkstls.so \
	$(PREFIX)/lib/pkgconfig/kstls.pc

install: modules
	$(MAKE) -C $(KDIR) M=$(CURDIR) $(KMAKE_VARS) INSTALL_MOD_PATH=$(DESTDIR) modules_install
	$(INSTALL) -D -m 0644 uapi/linux/kstls.h $(DESTDIR)$(PREFIX)/include/linux/kstls.h
	$(INSTALL) -D -m 0644 packaging/60-kstls.rules $(DESTDIR)$(UDEVDIR)/60-kstls.rules
	$(INSTALL) -D -m 0644 man/kstls.4 $(DESTDIR)$(PREFIX)/share/man/man4/kstls.4
	$(INSTALL) -D -m 0644 man/libkstls.3 $(DESTDIR)$(PREFIX)/share/man/man3/libkstls.3
	$(MAKE) -C userspace-lib install PREFIX=$(PREFIX) DESTDIR=$(DESTDIR)

uninstall:
	rm -f $(addprefix $(DESTDIR),$(INST_FILES))
	rm -f $(DESTDIR)/lib/modules/$(shell $(MAKE) -s -C $(KDIR) kernelrelease 2>/dev/null)/updates/kstls.ko

setup:
	scripts/setup.sh

kernel: setup
	scripts/kernel.sh build

selftests:
	$(MAKE) -C selftests KDIR=$(KDIR)

check:
	scripts/check.sh

demo:
	scripts/demo.sh

vm-run:
	@test -n "$(CMD)" || { echo "usage: make vm-run CMD='...' [VM_EXTRA=dir]"; exit 2; }
	scripts/vm.sh run $(if $(VM_EXTRA),--extra $(VM_EXTRA)) -- $(CMD)

bench:
	scripts/check.sh --build-only >/dev/null
	scripts/bench.sh

DURATION ?= 600
fuzz:
	scripts/check.sh --build-only >/dev/null
	VM_TIMEOUT=$$(($(DURATION) + 600)) VM_TEST_TIMEOUT=$$(($(DURATION) + 300)) \
	scripts/vm.sh run -- 'KSTLS_FUZZ_SECONDS=$(DURATION) KSTLS_FUZZ_CHURNERS=4 \
		$(if $(SEED),KSTLS_FUZZ_SEED=$(SEED)) $(if $(IOCTLS),KSTLS_FUZZ_IOCTLS=$(IOCTLS)) \
		$(if $(EXITS),KSTLS_FUZZ_EXITS=$(EXITS)) ./build/selftests/fuzz_test'

.PHONY: all modules modules_install clean rust-analyzer setup kernel selftests check demo vm-run bench fuzz install uninstall
