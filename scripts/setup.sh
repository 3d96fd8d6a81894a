#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# setup.sh - install everything kstls needs on a Debian 12 machine, idempotently.
#
# Steps (default: all, in order):
#   deps     Debian packages from the machine's own configured suites (never another suite).
#   bindgen  bindgen-cli 0.72.1 via `cargo install --locked` into $KSTLS_CACHE/tools.
#   source   Debian's linux-source-7.3 (suite trixie-backports, arch all) fetched with
#            `apt-get download` through a private apt configuration whose archive URI is read
#            from the machine's existing Debian source; unpacked with `dpkg -x` + tar.
#   env      print the make variables that the rest of the build uses.
#
# Everything lives below $KSTLS_CACHE (default ~/.cache/kstls), outside the checkout, so that
# later runs and CI on the same machine reuse it.
set -euo pipefail

KSTLS_CACHE=${KSTLS_CACHE:-$HOME/.cache/kstls}
# The kernel version known to work; the newest 7.3.x offered is the fallback.
KSTLS_KVER_PIN=${KSTLS_KVER_PIN:-7.3.4-1~bpo13+1}
BINDGEN_VERSION=0.72.1
TOOLS=$KSTLS_CACHE/tools
APTDIR=$KSTLS_CACHE/apt
SRCROOT=$KSTLS_CACHE/src

export PATH=$TOOLS/bin:/usr/bin:/bin:/usr/sbin:/sbin
export DEBIAN_FRONTEND=noninteractive

log() { echo "setup: $*" >&2; }
die() { echo "setup: error: $*" >&2; exit 1; }

PKGS=(rustc-web cargo-web rust-web-src rustfmt-web clang-19 libclang-19-dev lld-19 llvm-19
      gcc make flex bison bc libelf-dev libssl-dev cpio xz-utils dwarves
      qemu-system-x86 busybox-static musl-tools pkg-config python3 python3-matplotlib kmod dkms)

step_deps() {
	local missing=() p
	for p in "${PKGS[@]}"; do
		dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed' ||
			missing+=("$p")
	done
	if ((${#missing[@]} == 0)); then
		log "packages: all present"
		return 0
	fi
	log "packages: installing ${missing[*]}"
	apt-get update -qq >/dev/null
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
	# rustc-web and its rust-src must match: the kernel builds core/alloc from that source.
	local rv sv
	rv=$(dpkg-query -W -f='${Version}' rustc-web)
	sv=$(dpkg-query -W -f='${Version}' rust-web-src)
	[ "$rv" = "$sv" ] || die "rustc-web $rv and rust-web-src $sv differ"
}

step_bindgen() {
	if "$TOOLS/bin/bindgen" --version 2>/dev/null | grep -q "bindgen $BINDGEN_VERSION"; then
		log "bindgen $BINDGEN_VERSION: present"
		return 0
	fi
	log "bindgen: cargo install bindgen-cli $BINDGEN_VERSION (takes ~3 min)"
	mkdir -p "$TOOLS"
	# /usr/bin/cargo is Debian's cargo-web: the rustup one must not be used.
	CARGO_HOME=$KSTLS_CACHE/cargo-home RUSTC=/usr/bin/rustc \
		/usr/bin/cargo install bindgen-cli --version "$BINDGEN_VERSION" --locked \
		--root "$TOOLS" >"$KSTLS_CACHE/bindgen-install.log" 2>&1 ||
		{ tail -20 "$KSTLS_CACHE/bindgen-install.log"; die "cargo install bindgen-cli failed"; }
}

# The archive URI of the machine's own Debian source (deb822 or one-line format).
debian_uri() {
	local f uri
	for f in /etc/apt/sources.list.d/*.sources; do
		[ -f "$f" ] || continue
		uri=$(awk 'tolower($1)=="uris:" && $2 ~ /\/debian\/?$/ {print $2; exit}' "$f")
		[ -n "$uri" ] && { echo "${uri%/}"; return 0; }
	done
	for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
		[ -f "$f" ] || continue
		uri=$(awk '$1=="deb" {for (i=2;i<=NF;i++) if ($i ~ /^[a-z+]+:\/\/.*\/debian\/?$/) {print $i; exit}}' "$f")
		[ -n "$uri" ] && { echo "${uri%/}"; return 0; }
	done
	return 1
}

apt_priv() {
	apt-get -o Dir::Etc::SourceList=/dev/null -o Dir::Etc::SourceParts="$APTDIR/parts" \
		-o Dir::State::Lists="$APTDIR/lists" -o Dir::Cache="$APTDIR/cache" \
		-o Debug::NoLocking=1 -o APT::Sandbox::User=root "$@"
}

kernel_src_dir() { ls -d "$SRCROOT"/linux-source-7.3-* 2>/dev/null | sort -V | tail -1; }

step_source() {
	local have
	have=$(kernel_src_dir || true)
	if [ -n "$have" ] && [ -f "$have/Makefile" ] && [ -f "$have/.kstls-unpacked" ]; then
		log "kernel source: $have"
		return 0
	fi
	local uri
	uri=$(debian_uri) || die "no Debian archive URI found in the machine's apt sources"
	mkdir -p "$APTDIR/parts" "$APTDIR/lists/partial" "$APTDIR/cache/archives/partial" "$SRCROOT/dl"
	cat >"$APTDIR/parts/kstls-backports.sources" <<SRC
Types: deb
URIs: $uri
Suites: trixie-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
	apt_priv update -qq >/dev/null 2>"$APTDIR/update.err" ||
		{ cat "$APTDIR/update.err" >&2; die "private apt update failed"; }
	# `apt-get download` writes to the current directory.
	cd "$SRCROOT/dl"
	local ver
	if apt_priv download -qq "linux-source-7.3=$KSTLS_KVER_PIN" >/dev/null 2>&1; then
		ver=$KSTLS_KVER_PIN
	else
		ver=$(apt_priv -qq list -a linux-source-7.3 2>/dev/null | awk '{print $2}' | sort -V | tail -1)
		[ -n "$ver" ] || die "linux-source-7.3 is not offered by trixie-backports"
		log "kernel source: pinned $KSTLS_KVER_PIN not offered, falling back to $ver"
		apt_priv download -qq "linux-source-7.3=$ver" >/dev/null ||
			die "apt-get download linux-source-7.3=$ver failed"
	fi
	cd - >/dev/null
	local deb tmp upstream
	deb=$(ls "$SRCROOT"/dl/linux-source-7.3_*_all.deb | sort -V | tail -1)
	tmp=$(mktemp -d "$SRCROOT/x.XXXX")
	dpkg -x "$deb" "$tmp"
	tar -xf "$tmp"/usr/src/linux-source-7.3.tar.xz -C "$tmp"
	upstream=${ver%%-*}
	rm -rf "$SRCROOT/linux-source-7.3-$upstream"
	mv "$tmp/linux-source-7.3" "$SRCROOT/linux-source-7.3-$upstream"
	rm -rf "$tmp"
	echo "$ver" >"$SRCROOT/linux-source-7.3-$upstream/.kstls-unpacked"
	log "kernel source: Debian linux-source-7.3 $ver in $SRCROOT/linux-source-7.3-$upstream"
}

step_env() {
	local src
	src=$(kernel_src_dir) || die "no kernel source; run setup.sh source"
	echo "KSRC=$src"
	echo "KSRC_DEBVER=$(cat "$src/.kstls-unpacked")"
	echo "BINDGEN=$TOOLS/bin/bindgen"
}

(($# == 0)) && set -- deps bindgen source
mkdir -p "$KSTLS_CACHE"
for s in "$@"; do
	case $s in
	deps | bindgen | source | env) "step_$s" ;;
	*) die "unknown step '$s'" ;;
	esac
done
