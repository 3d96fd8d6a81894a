#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# kernel.sh - configure and build the kstls kernels in the cache, outside the checkout.
#
#   kernel.sh build [FLAVOUR]   build (or bring up to date) and print the build directory (KDIR)
#   kernel.sh dir [FLAVOUR]     print the build directory without building
#   kernel.sh seed [FLAVOUR]    only find and seed the build directory (below), print it
#
# FLAVOUR is one of
#   debug  the test kernel (the default): x86-64 for QEMU, tinyconfig + selftests/config, with
#          lockdep, kmemleak, SLUB debug, DEBUG_VM and fault injection
#   prod   the same kernel with that debugging off (kernel/prod.config over selftests/config):
#          the benchmark's system-call rows run on it
#   uml    User-Mode Linux (ARCH=um, x86-64): defconfig + kernel/uml.config; user code runs at
#          the host's speed there, so the benchmark's user-side rows run on it, and the selftests
#          run on it as the module's second platform
#
# Each build directory is keyed by its flavour, the Debian source version, its config fragments
# and the config steps below, so a change to any of them builds a new kernel and an unchanged
# key is reused. A flock serialises concurrent runs of one flavour.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

cmd=${1:-build}
flavour=${2:-debug}
case $cmd in build | dir | seed) ;; *) die "usage: kernel.sh build|dir|seed [debug|prod|uml]" ;; esac
kflavour_known "$flavour" || die "kernel.sh: unknown flavour '$flavour' (debug, prod or uml)"
B=$(kbuild_dir "$flavour") || die "no kernel source: run scripts/setup.sh first"
[ "$cmd" = dir ] && { echo "$B"; exit 0; }

SRC=$(ksrc)
mkdir -p "$(dirname "$B")"
exec 9>"$B.lock"
flock 9
# A new key (a config change) starts from the newest finished build of the same source and
# flavour: Kbuild tracks dependencies per config symbol, so only what the change touches is
# rebuilt. Another flavour is never a seed (another architecture, or debugging that every object
# depends on). An interrupted copy leaves $B.tmp behind; it is never a seed and is redone.
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

# --- config key ---  (everything from here on is part of the cache key)
KMAKE=(make -s -C "$SRC" O="$B" "${KTOOLS[@]}" -j"$JOBS")
case $flavour in
uml)
	KMAKE+=(ARCH=um)
	base=defconfig
	targets=(linux modules)
	;;
*)
	base=tinyconfig
	targets=(bzImage modules)
	;;
esac
mapfile -t fragments < <(kconfig_fragments "$flavour")

# wanted: every symbol the fragments set, the last setting of each winning (as in
# merge_config.sh), one line each as .config spells it.
wanted() {
	awk '/^CONFIG_[A-Za-z0-9_]+=/ { s = $0; sub(/=.*/, "", s) }
		/^# CONFIG_[A-Za-z0-9_]+ is not set$/ { s = $2 }
		/^CONFIG_|^# CONFIG_.* is not set$/ { if (!(s in v)) order[n++] = s; v[s] = $0 }
		END { for (i = 0; i < n; i++) print v[order[i]] }' "${fragments[@]}"
}

configure() {
	"${KMAKE[@]}" rustavailable >/dev/null
	"${KMAKE[@]}" "$base" >/dev/null
	"$SRC/scripts/kconfig/merge_config.sh" -m -O "$B" "$B/.config" "${fragments[@]}" \
		>"$B/merge.log" 2>&1
	"${KMAKE[@]}" olddefconfig >/dev/null
	# Every symbol asked for must have survived dependency resolution.
	local bad=0 want sym got
	while IFS= read -r want; do
		case $want in
		CONFIG_*) sym=${want%%=*} ;;
		*) sym=$(echo "$want" | cut -d' ' -f2) ;;
		esac
		got=$(grep -E "^$sym=|^# $sym is not set" "$B/.config" || true)
		case $want in '# '*) [ -z "$got" ] && got=$want ;; esac
		[ "$got" = "$want" ] || { say "config: wanted '$want', got '${got:-nothing}'"; bad=1; }
	done < <(wanted)
	[ $bad = 0 ] || die "config fragments did not apply (see $B/merge.log)"
}

if [ ! -f "$B/.config" ] || [ ! -f "$B/.kstls-configured" ]; then
	say "configuring the $flavour kernel in $B"
	configure
	touch "$B/.kstls-configured"
fi
if [ ! -f "$B/.kstls-built" ]; then
	say "building the $flavour kernel $(basename "$SRC") in $B (8-10 min from clean on 2 cores)"
	t0=$(date +%s)
	"${KMAKE[@]}" "${targets[@]}" >"$B/build.log" 2>&1 ||
		{ tail -40 "$B/build.log" >&2; die "kernel build failed (log: $B/build.log)"; }
	echo "$(($(date +%s) - t0))" >"$B/.kstls-built"
	say "$flavour kernel built in $(cat "$B/.kstls-built") s"
fi
echo "$B"
