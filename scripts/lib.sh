# SPDX-License-Identifier: GPL-2.0
#
# lib.sh - the environment every kstls script shares (sourced, not run).
#
# It pins the toolchain: Debian's /usr/bin/rustc (rustc-web, which has the matching rust-src) for
# the kernel, its proc macros and the module, and the bindgen that setup.sh installs. The rustup
# toolchains in ~/.cargo/bin have no rust-src and must never be picked up, so /usr/bin comes first
# in PATH and RUSTC/HOSTRUSTC/BINDGEN are passed explicitly to every make.

KSTLS_ROOT=${KSTLS_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
KSTLS_CACHE=${KSTLS_CACHE:-$HOME/.cache/kstls}
export KSTLS_ROOT KSTLS_CACHE
export PATH=$KSTLS_CACHE/tools/bin:/usr/bin:/bin:/usr/sbin:/sbin
export LIBCLANG_PATH=/usr/lib/llvm-19/lib
export CARGO_HOME=${KSTLS_CARGO_HOME:-$KSTLS_CACHE/cargo-home}
unset RUSTUP_TOOLCHAIN RUSTFLAGS CARGO_BUILD_TARGET RUST_LIB_SRC || true
JOBS=${JOBS:-$(nproc)}
BINDGEN=$KSTLS_CACHE/tools/bin/bindgen
KTOOLS=(RUSTC=/usr/bin/rustc HOSTRUSTC=/usr/bin/rustc BINDGEN="$BINDGEN")

# The unpacked kernel source (newest 7.3.x that setup.sh fetched).
ksrc() {
	local d
	d=$(ls -d "$KSTLS_CACHE"/src/linux-source-7.3-* 2>/dev/null | sort -V | tail -1)
	[ -n "$d" ] && [ -f "$d/.kstls-unpacked" ] || return 1
	echo "$d"
}

# The kernel flavours scripts/kernel.sh builds: debug (the test kernel), prod, uml.
kflavour_known() { case $1 in debug | prod | uml) return 0 ;; esac; return 1; }

# kconfig_fragments FLAVOUR: the config fragments of FLAVOUR, one path a line, in merge order.
kconfig_fragments() {
	case $1 in
	debug) echo "$KSTLS_ROOT/selftests/config" ;;
	prod) printf '%s\n' "$KSTLS_ROOT/selftests/config" "$KSTLS_ROOT/kernel/prod.config" ;;
	uml) echo "$KSTLS_ROOT/kernel/uml.config" ;;
	esac
}

# kbuild_dir [FLAVOUR]: the kernel build directory for this source, flavour (default debug) and
# its config fragments (the cache key).
kbuild_dir() {
	local src key flavour=${1:-debug} f
	kflavour_known "$flavour" || return 1
	src=$(ksrc) || return 1
	key=$( (cat "$src/.kstls-unpacked"
		echo "$flavour"
		kconfig_fragments "$flavour" | while IFS= read -r f; do cat "$f"; done
		sed -n '/^# --- config key ---$/,$p' "$KSTLS_ROOT/scripts/kernel.sh") |
		sha256sum | cut -c1-12)
	echo "$KSTLS_CACHE/kernel/$(basename "$src")-$flavour-$key"
}

# kdir_flavour KDIR: the flavour of a kernel build directory, from its .config: uml for a
# User-Mode Linux build, prod for an x86 build without lockdep, debug otherwise.
kdir_flavour() {
	if grep -q '^CONFIG_UML=y' "$1/.config" 2>/dev/null; then
		echo uml
	elif grep -q '^CONFIG_PROVE_LOCKING=y' "$1/.config" 2>/dev/null; then
		echo debug
	else
		echo prod
	fi
}

# module_ko KDIR: where kstls.ko built against KDIR is (the root Makefile puts it there):
# build/module/FLAVOUR/ for the project's prod and uml kernels, so that they never overwrite the
# test kernel's; the checkout's top directory for the test kernel and for a KDIR of the user's.
module_ko() {
	local k f
	k=$(realpath -m "$1")
	for f in prod uml; do
		if [ "$k" = "$(realpath -m "$(kbuild_dir "$f" 2>/dev/null || echo /nonexistent)")" ]; then
			echo "$KSTLS_ROOT/build/module/$f/kstls.ko"
			return
		fi
	done
	echo "$KSTLS_ROOT/kstls.ko"
}

# copy_module_sources DIR: the module's sources into DIR, as a source package holds them: the
# tracked files, or without git what the module's build reads.
copy_module_sources() {
	if git -C "$KSTLS_ROOT" rev-parse --git-dir >/dev/null 2>&1; then
		(cd "$KSTLS_ROOT" && git ls-files -z | xargs -0 cp --parents -t "$1")
	else
		(cd "$KSTLS_ROOT" && cp -r --parents -t "$1" Kbuild Makefile dkms.conf uapi/linux/kstls.h \
			scripts rust)
	fi
}

# sync_module_sources DIR: what the module's build reads (Kbuild, the uapi header, rust/), copied
# into DIR with their times, and only when newer, so that Kbuild there rebuilds what changed.
sync_module_sources() {
	mkdir -p "$1"
	(cd "$KSTLS_ROOT" && find Kbuild uapi/linux/kstls.h rust -name uapi_generated.rs -prune -o \
		\( -name Kbuild -o -name '*.h' -o -name '*.rs' \) -type f -print0 |
		xargs -0 cp -pu --parents -t "$1")
}

say() { echo "kstls: $*" >&2; }
die() { echo "kstls: error: $*" >&2; exit 1; }
