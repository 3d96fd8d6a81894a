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

# The kernel build directory for this source + config fragment (the cache key).
kbuild_dir() {
	local src key
	src=$(ksrc) || return 1
	key=$( (cat "$src/.kstls-unpacked" "$KSTLS_ROOT/selftests/config"
		sed -n '/^# --- config key ---$/,$p' "$KSTLS_ROOT/scripts/kernel.sh") |
		sha256sum | cut -c1-12)
	echo "$KSTLS_CACHE/kernel/$(basename "$src")-$key"
}

# copy_module_sources DIR: the module's sources into DIR, as a source package holds them: the
# tracked files, or without git what the module's build reads.
copy_module_sources() {
	if git -C "$KSTLS_ROOT" rev-parse --git-dir >/dev/null 2>&1; then
		(cd "$KSTLS_ROOT" && git ls-files -z | xargs -0 cp --parents -t "$1")
	else
		(cd "$KSTLS_ROOT" && cp -r --parents -t "$1" Kbuild Makefile dkms.conf uapi/linux/kstls.h \
			scripts rust/*.rs)
	fi
}

say() { echo "kstls: $*" >&2; }
die() { echo "kstls: error: $*" >&2; exit 1; }
