#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# kernel.sh - configure and build the kstls test kernel in the cache, outside the checkout.
#
#   kernel.sh build   build (or bring up to date) and print the build directory (the KDIR)
#   kernel.sh dir     print the build directory without building
#   kernel.sh seed    only find and seed the build directory (below), print it; builds nothing
#
# The build directory is keyed by the Debian source version, selftests/config and the config
# steps below, so a change to any of them builds a new kernel and an unchanged key is reused.
# A flock serialises concurrent runs.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

cmd=${1:-build}
B=$(kbuild_dir) || die "no kernel source: run scripts/setup.sh first"
[ "$cmd" = dir ] && { echo "$B"; exit 0; }
case $cmd in build | seed) ;; *) die "usage: kernel.sh build|dir|seed" ;; esac

SRC=$(ksrc)
mkdir -p "$(dirname "$B")"
exec 9>"$B.lock"
flock 9
# A new key (a config change) starts from the newest finished build of the same source: Kbuild
# tracks dependencies per config symbol, so only what the change touches is rebuilt.
# An interrupted copy leaves $B.tmp behind; it is never a seed and is redone from scratch.
seed_for() {
	local d best= newest=0 t
	for d in "${1%-*}"-*/; do
		d=${d%/}
		[ -d "$d" ] && [ "$d" != "$1" ] && [ -f "$d/.kstls-built" ] || continue
		case $d in *.tmp) continue ;; esac
		t=$(stat -c %Y "$d/.kstls-built")
		((t > newest)) && { newest=$t; best=$d; }
	done
	echo "$best"
}
if [ ! -d "$B" ]; then
	rm -rf "$B.tmp"
	seed=$(seed_for "$B")
	if [ -n "$seed" ]; then
		say "seeding $B from $seed"
		cp -a "$seed" "$B.tmp"
		rm -f "$B.tmp/.kstls-configured" "$B.tmp/.kstls-built"
		mv "$B.tmp" "$B"
	fi
fi
mkdir -p "$B"
[ "$cmd" = seed ] && { echo "$B"; exit 0; }
KMAKE=(make -s -C "$SRC" O="$B" "${KTOOLS[@]}" -j"$JOBS")

# --- config key ---  (everything from here on is part of the cache key)
configure() {
	"${KMAKE[@]}" rustavailable >/dev/null
	"${KMAKE[@]}" tinyconfig >/dev/null
	"$SRC/scripts/kconfig/merge_config.sh" -m -O "$B" "$B/.config" \
		"$KSTLS_ROOT/selftests/config" >"$B/merge.log" 2>&1
	"${KMAKE[@]}" olddefconfig >/dev/null
	# Every symbol asked for must have survived dependency resolution.
	local bad=0 want sym got
	while IFS= read -r want; do
		case $want in
		CONFIG_*) sym=${want%%=*} ;;
		'# CONFIG_'*' is not set') sym=$(echo "$want" | cut -d' ' -f2) ;;
		*) continue ;;
		esac
		got=$(grep -E "^$sym=|^# $sym is not set" "$B/.config" || true)
		case $want in '# '*) [ -z "$got" ] && got=$want ;; esac
		[ "$got" = "$want" ] || { say "config: wanted '$want', got '${got:-nothing}'"; bad=1; }
	done <"$KSTLS_ROOT/selftests/config"
	[ $bad = 0 ] || die "config fragment did not apply (see $B/merge.log)"
}

if [ ! -f "$B/.config" ] || [ ! -f "$B/.kstls-configured" ]; then
	say "configuring kernel in $B"
	configure
	touch "$B/.kstls-configured"
fi
if [ ! -f "$B/.kstls-built" ]; then
	say "building kernel $(basename "$SRC") in $B (about 10 min from clean on 2 cores)"
	t0=$(date +%s)
	"${KMAKE[@]}" bzImage modules >"$B/build.log" 2>&1 ||
		{ tail -40 "$B/build.log" >&2; die "kernel build failed (log: $B/build.log)"; }
	echo "$(($(date +%s) - t0))" >"$B/.kstls-built"
	say "kernel built in $(cat "$B/.kstls-built") s"
fi
echo "$B"
