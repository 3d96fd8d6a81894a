#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# test-scripts.sh - the project's own scripts and make targets, as a user drives them.
#
#   test-scripts.sh [--no-boot]
#
# Host-side, building nothing: scripts/kernel.sh's cache lookup and seeding (`kernel.sh seed`)
# against a fake cache that is empty, one with finished and unfinished builds, one with a stale
# copy ($B.tmp) from an interrupted run, one whose build directory already exists, and one with
# builds of the other flavours (prod, uml), which must never seed the test kernel; bench/ refusing
# to build without libkstls (no stand-in for its rows); `make fuzz`
# refusing values that are not numbers before anything is built; `make uninstall` refusing to
# guess the kernel, and removing the module of the release it is given.
# In the guest (skipped with --no-boot; needs the built kernel and kstls.ko, as check.sh leaves
# them): one `make vm-run` whose CMD holds ; && | > quotes $VAR $(...) and a glob, run with a host
# HOME that differs from the guest's, and a VM_EXTRA directory whose name has a space. Everything
# must happen in the guest, byte for byte, and nothing on the host. Then one `make vm-run` with a
# KDIR that is the project's UML build: UML, its kstls.ko, VM_EXTRA read-only through hostfs.
#
# Output is TAP; the last line is "N passed, N failed". Exit status 1 on any failure.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/tap.sh"

boot=1
case ${1:-} in
--no-boot) boot=0 ;;
'') ;;
*) die "usage: test-scripts.sh [--no-boot]" ;;
esac

work=$(mktemp -d /tmp/kstls-scripts.XXXXXX)
trap 'rm -rf "$work"' EXIT

# --- kernel.sh seed ---------------------------------------------------------------------------

# fake_cache DIR: a cache with an unpacked kernel source (what kbuild_dir keys on) and no build.
fake_cache() {
	mkdir -p "$1/src/linux-source-7.3-7.3.4"
	echo "7.3.4-1~test" >"$1/src/linux-source-7.3-7.3.4/.kstls-unpacked"
	touch "$1/src/linux-source-7.3-7.3.4/Makefile"
}
# finished_build DIR AGE-SECONDS: a finished kernel build directory, built AGE seconds ago.
finished_build() {
	mkdir -p "$1/arch"
	echo "$(basename "$1")" >"$1/arch/origin"
	touch "$1/.kstls-configured"
	echo 500 >"$1/.kstls-built"
	touch -d "@$(($(date +%s) - $2))" "$1/.kstls-built"
}
# seed CACHE: run `kernel.sh seed` on CACHE; its stdout goes to CACHE.out, stderr to CACHE.err.
seed() {
	KSTLS_CACHE=$1 "$KSTLS_ROOT/scripts/kernel.sh" seed >"$1.out" 2>"$1.err"
}

c=$work/empty
fake_cache "$c"
why=
seed "$c" || why="kernel.sh seed failed in an empty cache. "
B=$(cat "$c.out")
[[ $B == "$c/kernel/linux-source-7.3-7.3.4-"* ]] || why+="It printed '$B', not a directory of the cache. "
[ -d "$B" ] && [ -z "$(ls -A "$B")" ] || why+="The build directory is missing or not empty. "
! grep -q seeding "$c.err" || why+="It seeded from nothing. "
tap "kernel.sh: an empty cache gives an empty build directory" "$why" "$c.err"

c=$work/populated
fake_cache "$c"
B=$(KSTLS_CACHE=$c "$KSTLS_ROOT/scripts/kernel.sh" dir)
finished_build "${B%-*}-000000000old" 3000
finished_build "${B%-*}-000000000new" 60
mkdir -p "${B%-*}-00000unbuilt"
touch "${B%-*}-00000unbuilt/.kstls-configured"
why=
seed "$c" || why="kernel.sh seed failed. "
[ "$(cat "$B/arch/origin" 2>/dev/null)" = "$(basename "${B%-*}-000000000new")" ] ||
	why+="It did not seed from the newest finished build (origin: $(cat "$B/arch/origin" 2>/dev/null)). "
[ ! -e "$B/.kstls-built" ] && [ ! -e "$B/.kstls-configured" ] ||
	why+="The copy kept the seed's markers, so the new key would not be configured and built. "
grep -q "seeding $B from ${B%-*}-000000000new" "$c.err" || why+="It did not say what it seeded from. "
tap "kernel.sh: a new key is seeded from the newest finished build only" "$why" "$c.err"

echo kept >"$B/arch/mine"
why=
seed "$c" || why="kernel.sh seed failed the second time. "
[ "$(cat "$B/arch/mine" 2>/dev/null)" = kept ] || why+="An existing build directory was replaced. "
! grep -q seeding "$c.err" || why+="It seeded an existing build directory again. "
tap "kernel.sh: an existing build directory is reused, not seeded again" "$why" "$c.err"

c=$work/stale
fake_cache "$c"
B=$(KSTLS_CACHE=$c "$KSTLS_ROOT/scripts/kernel.sh" dir)
finished_build "${B%-*}-0000000seed1" 60
# What an interrupted `cp -a seed $B.tmp` leaves: part of a copy, with the markers.
mkdir -p "$B.tmp/arch"
echo half >"$B.tmp/arch/partial"
touch "$B.tmp/.kstls-built"
why=
seed "$c" || why="kernel.sh seed failed with a stale $B.tmp. "
[ "$(cat "$B/arch/origin" 2>/dev/null)" = "$(basename "${B%-*}-0000000seed1")" ] ||
	why+="The build directory is not a copy of the seed. "
[ ! -e "$B/arch/partial" ] || why+="The stale copy's files survived. "
[ ! -e "$B/$(basename "${B%-*}-0000000seed1")" ] || why+="The copy nested inside the stale one. "
[ ! -e "$B.tmp" ] || why+="$B.tmp is still there. "
tap "kernel.sh: a stale .tmp from an interrupted copy is discarded, never nested into" "$why" "$c.err"

c=$work/flavours
fake_cache "$c"
B=$(KSTLS_CACHE=$c "$KSTLS_ROOT/scripts/kernel.sh" dir)
U=$(KSTLS_CACHE=$c "$KSTLS_ROOT/scripts/kernel.sh" dir uml)
P=$(KSTLS_CACHE=$c "$KSTLS_ROOT/scripts/kernel.sh" dir prod)
# A finished uml and prod build, newer than anything else: never a seed for the test kernel.
finished_build "$U" 30
finished_build "$P" 20
why=
[ "$B" != "$U" ] && [ "$B" != "$P" ] && [ "$U" != "$P" ] ||
	why+="Two flavours share a build directory ($B, $U, $P). "
seed "$c" || why+="kernel.sh seed failed. "
[ ! -e "$B/arch/origin" ] || why+="The test kernel was seeded from $(cat "$B/arch/origin"). "
! grep -q seeding "$c.err" || why+="It seeded across flavours. "
KSTLS_CACHE=$c "$KSTLS_ROOT/scripts/kernel.sh" dir tiny >/dev/null 2>"$c.err2" && why+="An unknown flavour was accepted. "
grep -q "unknown flavour 'tiny'" "$c.err2" || why+="An unknown flavour was not named. "
tap "kernel.sh: each flavour (debug, prod, uml) has its own build directory and seeds only from its own" "$why" "$c.err"

# --- the benchmark needs libkstls ------------------------------------------------------------

# The kstls_cached rows are libkstls's: without it, bench/ must not build a stand-in.
b=$work/bench
why=
if make -s -C "$KSTLS_ROOT/bench" progs OUT="$b" LIBKSTLS="$work/no/libkstls.a" >"$b.out" 2>&1; then
	why+="make -C bench built without libkstls.a. "
fi
grep -q "libkstls.a is missing: build it with \`make -C userspace-lib\`" "$b.out" ||
	why+="It did not say what is missing and how to build it. "
[ ! -e "$b/libkb_kstls.so" ] || why+="It built libkb_kstls.so without libkstls. "
tap "make -C bench refuses to build without libkstls.a, and says how to build it" "$why" "$b.out"

# --- make fuzz --------------------------------------------------------------------------------

# Refused values must stop make fuzz before it builds: the cache is a fresh empty directory, and
# the time limit ends a run that went on to set the machine up.
for bad in "SEED=12abc" "IOCTLS=1;reboot" "EXITS=-5" "DURATION=10m" "DURATION=0" "SEED=\$(id)"; do
	name=${bad%%=*}
	out=$work/fuzz-$n.txt
	rc=0
	KSTLS_CACHE=$work/fuzz-cache timeout 60 make -s -C "$KSTLS_ROOT" fuzz "$bad" >"$out" 2>&1 || rc=$?
	why=
	[ "$rc" != 0 ] && [ "$rc" != 124 ] || why="make fuzz $bad exited with $rc. "
	grep -q "make fuzz: $name must be" "$out" || why+="It did not say that $name is wrong. "
	[ ! -e "$work/fuzz-cache" ] || why+="It began to set up or build before refusing. "
	tap "make fuzz refuses $bad before building" "$why" "$out"
done

# --- make uninstall ---------------------------------------------------------------------------

dest=$work/dest
mkdir -p "$dest/lib/modules/9.9.9-test/updates" "$dest/usr/local/include/linux"
touch "$dest/lib/modules/9.9.9-test/updates/kstls.ko" "$dest/usr/local/include/linux/kstls.h"
out=$work/uninstall-1.txt
rc=0
(cd "$KSTLS_ROOT" && env -u KDIR make -s uninstall DESTDIR="$dest" PREFIX=/usr/local) >"$out" 2>&1 || rc=$?
why=
[ "$rc" != 0 ] || why="make uninstall without KDIR succeeded. "
grep -q "for which kernel" "$out" || why+="It did not ask which kernel. "
grep -q "installed for: 9.9.9-test" "$out" || why+="It did not name the release that has kstls.ko. "
[ -e "$dest/usr/local/include/linux/kstls.h" ] || why+="It removed files before refusing. "
tap "make uninstall without KDIR refuses and names the installed releases" "$why" "$out"

out=$work/uninstall-2.txt
rc=0
make -s -C "$KSTLS_ROOT" uninstall DESTDIR="$dest" PREFIX=/usr/local KDIR="$work/no-such-kdir" >"$out" 2>&1 || rc=$?
why=
[ "$rc" != 0 ] || why="make uninstall with a KDIR that is no build succeeded. "
grep -q "is not a kernel build directory" "$out" || why+="It did not say what is wrong with KDIR. "
[ -e "$dest/lib/modules/9.9.9-test/updates/kstls.ko" ] || why+="It removed the module anyway. "
tap "make uninstall with a KDIR that is no kernel build refuses" "$why" "$out"

out=$work/uninstall-3.txt
rc=0
make -s -C "$KSTLS_ROOT" uninstall DESTDIR="$dest" PREFIX=/usr/local KERNELRELEASE=9.9.9-test >"$out" 2>&1 || rc=$?
why=
[ "$rc" = 0 ] || why="make uninstall KERNELRELEASE=9.9.9-test exited with $rc. "
[ ! -e "$dest/lib/modules/9.9.9-test/updates/kstls.ko" ] || why+="kstls.ko is still installed. "
[ ! -e "$dest/usr/local/include/linux/kstls.h" ] || why+="The header is still installed. "
tap "make uninstall KERNELRELEASE=... removes that release's module" "$why" "$out"

# --- make vm-run, in the guest ----------------------------------------------------------------

if [ "$boot" = 1 ]; then
	marker=kstls-vmrun-marker-$$
	rm -f "/tmp/$marker" "$KSTLS_ROOT/$marker" "$work/$marker"
	extra="$work/extra dir"
	mkdir -p "$extra"
	echo "shared with a space" >"$extra/note file.txt"
	# Each line checks one thing; the host would read ; > | $ quotes and the glob differently.
	cmd="cd /tmp; touch $marker && ls $marker; printf '<%s>\\n' 'a b'; echo \"HOME=\$HOME\""
	cmd+="; echo glob: /kstls/k*.ko | tr a-z A-Z >/tmp/up; cat /tmp/up; echo \"sub: \$(echo in guest)\""
	cmd+="; cat '/mnt/extra/note file.txt'"
	out=$work/vm-run.txt
	rc=0
	(cd "$work" && HOME=$work/host-home make -s -C "$KSTLS_ROOT" vm-run CMD="$cmd" \
		VM_EXTRA="$extra") >"$out" 2>"$work/vm-run.err" || rc=$?
	tr -d '\r' <"$out" >"$out.clean"
	has() { grep -qxF -- "$1" "$out.clean"; }
	why=
	[ "$rc" = 0 ] || why="make vm-run exited with $rc. "
	has "$marker" || why+="The guest did not list its marker. "
	for d in /tmp "$KSTLS_ROOT" "$work"; do
		[ ! -e "$d/$marker" ] || why+="The marker was written on the host, in $d. "
	done
	tap "vm-run: a CMD with ';' writes its marker in the guest only" "$why" "$out.clean" "$work/vm-run.err"
	why=
	has "<a b>" || why="No line '<a b>': the quoted argument was split or unquoted. "
	tap "vm-run: printf '<%s>\\n' 'a b' prints <a b>" "$why" "$out.clean"
	why=
	has "HOME=/root" || why="No line 'HOME=/root' (the guest's HOME; the host's is $work/host-home). "
	tap "vm-run: echo \$HOME prints the guest's HOME" "$why" "$out.clean"
	why=
	has "GLOB: /KSTLS/KSTLS.KO" || why="The glob, pipe and redirection did not run in the guest. "
	has "sub: in guest" || why+="\$(...) did not run in the guest. "
	tap "vm-run: globs, pipes, > and \$(...) are the guest's" "$why" "$out.clean"
	why=
	has "shared with a space" || why="The VM_EXTRA directory with a space was not shared. "
	tap "vm-run: VM_EXTRA may name a directory with a space" "$why" "$out.clean" "$work/vm-run.err"

	# A KDIR that is a UML build boots UML, with its own kstls.ko; --extra is hostfs there.
	uml=$(bash "$KSTLS_ROOT/scripts/kernel.sh" dir uml)
	if [ -f "$uml/.kstls-built" ]; then
		uextra=$work/uml-extra
		mkdir -p "$uextra"
		echo "shared by hostfs" >"$uextra/note"
		out=$work/vm-run-uml.txt
		rc=0
		KDIR=$uml make -s -C "$KSTLS_ROOT" vm-run VM_EXTRA="$uextra" \
			CMD='grep -m1 vendor_id /proc/cpuinfo; ls /dev/kstls; cat /mnt/extra/note; touch /mnt/extra/w 2>/dev/null || echo read-only' \
			>"$out" 2>"$work/vm-run-uml.err" || rc=$?
		tr -d '\r' <"$out" >"$out.clean"
		why=
		[ "$rc" = 0 ] || why="make vm-run exited with $rc. "
		grep -q 'User Mode Linux' "$out.clean" || why+="The guest is not User-Mode Linux. "
		has /dev/kstls || why+="/dev/kstls is missing: the UML kstls.ko did not load. "
		has "shared by hostfs" || why+="VM_EXTRA was not mounted at /mnt/extra. "
		has read-only && [ ! -e "$uextra/w" ] || why+="The guest could write into VM_EXTRA. "
		tap "vm-run: KDIR of a UML build boots UML with its kstls.ko and a read-only VM_EXTRA" "$why" \
			"$out.clean" "$work/vm-run-uml.err"
	else
		tap "vm-run: KDIR of a UML build boots UML with its kstls.ko and a read-only VM_EXTRA" \
			"The uml kernel is not built (scripts/kernel.sh build uml; check.sh builds it). "
	fi
fi

tap_totals
