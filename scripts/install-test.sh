#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# install-test.sh - what a user of `make install` gets, checked on the host: the installed tree
# under a DESTDIR (exactly the expected files, with their modes), `pkg-config --cflags --libs
# kstls` against it, a C program and a shared object built from nothing but that tree (the
# program runs: with no /dev/kstls on the host, kstls_init() must say -ENOENT), the man pages
# rendered by `man -l` without a warning, the installed kstls-run finding its audit library, and `make uninstall` removing every file it installed.
# Then the two developer entry points: `dkms build` from dkms.conf (in a private DKMS tree, the
# system's untouched) and `make rust-analyzer` (rust-project.json must hold the module's crate).
#
#   install-test.sh    needs KDIR (the kernel build dir) in the environment, as check.sh sets it
#
# Prints "ok N what" / "not ok N what" lines and ends with "N passed, N failed".
set -euo pipefail
. "$(dirname "$0")/lib.sh"

: "${KDIR:?install-test.sh needs KDIR (the kernel build directory)}"
dest=$(mktemp -d /tmp/kstls-install.XXXXXX)
trap 'rm -rf "$dest"' EXIT
prefix=/usr/local
passed=0
failed=0
n=0

# check WHAT CMD...: one test; CMD's output is shown only when it fails.
check() {
	local what=$1 out
	shift
	n=$((n + 1))
	if out=$("$@" 2>&1); then
		passed=$((passed + 1))
		echo "ok $n install: $what"
	else
		failed=$((failed + 1))
		echo "not ok $n install: $what"
		printf '%s\n' "$out" | sed 's/^/#   /' | tail -n 20
	fi
}

release=$(make -s -C "$KDIR" kernelrelease)
# The files make install owns, relative to DESTDIR, with their modes (depmod's own index files
# under lib/modules are depmod's, not ours).
expected() {
	cat <<EOF
644 /etc/udev/rules.d/60-kstls.rules
755 $prefix/bin/kstls-run
644 /lib/modules/$release/updates/kstls.ko
644 $prefix/include/kstls.h
644 $prefix/include/linux/kstls.h
755 $prefix/lib/kstls/libkstls-audit.so
644 $prefix/lib/libkstls.a
755 $prefix/lib/libkstls.so
644 $prefix/lib/pkgconfig/kstls.pc
644 $prefix/share/man/man1/kstls-run.1
644 $prefix/share/man/man3/libkstls.3
644 $prefix/share/man/man4/kstls.4
EOF
}
installed() {
	(cd "$dest" && find . -type f ! -path "./lib/modules/$release/modules.*" -printf '%m /%P\n') |
		sed 's| /\./| /|' | sort
}

tree_matches() {
	diff -u <(expected | sort) <(installed)
}
check "make install DESTDIR=... PREFIX=$prefix" \
	make -s -C "$KSTLS_ROOT" install DESTDIR="$dest" PREFIX="$prefix" KDIR="$KDIR"
check "the installed tree is exactly the expected files and modes" tree_matches
udev_rule() {
	grep -Eq '^KERNEL=="kstls",.*MODE="0666"' "$dest/etc/udev/rules.d/60-kstls.rules"
}
check "the udev rule gives /dev/kstls mode 0666" udev_rule

export PKG_CONFIG_PATH="$dest$prefix/lib/pkgconfig" PKG_CONFIG_SYSROOT_DIR="$dest"
pc_flags() {
	local got want="-I$dest$prefix/include -L$dest$prefix/lib -Wl,-u,kstls_register_self -l:libkstls.a"
	got=$(pkg-config --cflags --libs kstls)
	[[ $(echo $got) == "$want" ]] || { echo "pkg-config says '$got', want '$want'"; return 1; }
}
check "pkg-config --cflags --libs kstls points into the tree" pc_flags

work=$dest/work
mkdir -p "$work"
cat >"$work/prog.c" <<'EOF'
/* Built from the installed tree only: kstls.h, <linux/kstls.h>, libkstls. */
#include <errno.h>
#include <stdio.h>
#include <kstls.h>

int main(void)
{
	int r = kstls_init();

	printf("kstls_init() = %d, KSTLS_MODULE_ID_MIN = %#llx\n", r,
	       (unsigned long long)KSTLS_MODULE_ID_MIN);
	/* The host has no /dev/kstls (the module only ever runs in the guest). */
	return r == -ENOENT && kstls_get_tls_addr(KSTLS_MODULE_ID_MIN, 0) == NULL ? 0 : 1;
}
EOF
# An object changed in nothing: kstls.pc's Libs alone put libkstls.a in, with its constructor.
cat >"$work/obj.c" <<'EOF'
static __thread int counter = 42;
int next(void) { return counter++; }
EOF
build_and_run() {
	# shellcheck disable=SC2046 # pkg-config's words are meant to split
	gcc -Wall -Werror -o "$work/prog" "$work/prog.c" $(pkg-config --cflags --libs kstls)
	local libs
	libs=$(ldd "$work/prog")
	if grep -q libkstls <<<"$libs"; then echo "$libs"; return 1; fi
	"$work/prog"
}
check "a program built with pkg-config links libkstls.a privately and runs (no device: -ENOENT)" \
	build_and_run
shared_lib() {
	gcc -Wall -Werror -o "$work/prog-so" "$work/prog.c" -I"$dest$prefix/include" \
		-L"$dest$prefix/lib" -lkstls -Wl,-rpath,"$dest$prefix/lib"
	local libs
	libs=$(ldd "$work/prog-so")
	grep -q "$dest$prefix/lib/libkstls.so" <<<"$libs" || { echo "$libs"; return 1; }
	"$work/prog-so"
}
check "a program linked with -lkstls uses libkstls.so and runs (no device: -ENOENT)" shared_lib
private_copy() {
	# shellcheck disable=SC2046
	gcc -Wall -Werror -fPIC -shared -o "$work/libobj.so" "$work/obj.c" \
		$(pkg-config --cflags --libs kstls)
	# The archive's symbols stay private: the object exports none of libkstls's.
	if nm -D --defined-only "$work/libobj.so" | grep -E ' (__tls_get_addr|kstls_)'; then
		return 1
	fi
	local syms
	syms=$(nm "$work/libobj.so")
	grep -q ' t __tls_get_addr$' <<<"$syms" && grep -q ' t kstls_tlsdesc$' <<<"$syms" &&
		readelf -SW "$work/libobj.so" | grep -q ' \.init_array '
}
check "pkg-config's Libs put a private copy of libkstls.a in an unchanged object (nothing exported)" \
	private_copy

render() {
	local page=$1 out warn
	warn=$(man --warnings -l "$page" 2>&1 >/dev/null)
	[[ -z $warn ]] || { echo "$warn"; return 1; }
	out=$(MANWIDTH=80 man -l "$page" 2>/dev/null)
	grep -q "$2" <<<"$out" || { echo "no '$2' in the rendered page"; return 1; }
}
check "man -l renders kstls(4) without a warning" \
	render "$dest$prefix/share/man/man4/kstls.4" KSTLS_IOC_GET_ADDR
check "man -l renders libkstls(3) without a warning" \
	render "$dest$prefix/share/man/man3/libkstls.3" kstls_register_self
check "man -l renders kstls-run(1) without a warning" \
	render "$dest$prefix/share/man/man1/kstls-run.1" KSTLS_RUN_STATS
# The installed launcher finds its audit library in ../lib/kstls/ (it looks before it opens the
# device, which the host does not have: that is the refusal it must get to).
installed_launcher() {
	local out
	out=$("$dest$prefix/bin/kstls-run" /bin/true 2>&1) && { echo "ran without a device: $out"; return 1; }
	grep -q '^kstls-run: /dev/kstls: No such file or directory' <<<"$out" || { echo "$out"; return 1; }
}
check "the installed kstls-run finds lib/kstls/libkstls-audit.so (then refuses: no /dev/kstls)" \
	installed_launcher

rm -rf "$work"
uninstalled() {
	local left
	make -s -C "$KSTLS_ROOT" uninstall DESTDIR="$dest" PREFIX="$prefix" KDIR="$KDIR"
	left=$(installed)
	[[ -z $left ]] || { echo "left behind: $left"; return 1; }
}
check "make uninstall removes every installed file" uninstalled

# DKMS builds from a copy of the sources named <package>-<version>, as /usr/src holds them.
dkms_build() {
	local tree=$dest/dkms version
	version=$(sed -n 's/^PACKAGE_VERSION="\(.*\)"$/\1/p' "$KSTLS_ROOT/dkms.conf")
	[[ -n $version ]] || { echo "dkms.conf has no PACKAGE_VERSION"; return 1; }
	mkdir -p "$tree/src/kstls-$version" "$tree/var" "$tree/installed"
	copy_module_sources "$tree/src/kstls-$version"
	dkms build "kstls/$version" -k "$release" --kernelsourcedir "$KDIR" \
		--sourcetree "$tree/src" --dkmstree "$tree/var" --installtree "$tree/installed"
	local ko=$tree/var/kstls/$version/$release/x86_64/module/kstls.ko
	[[ -f $ko ]] || { echo "no $ko"; return 1; }
	modinfo -F name "$ko" | grep -qx kstls
	rm -rf "$tree"
}
check "dkms build makes kstls.ko from dkms.conf (private DKMS tree)" dkms_build

analyzer() {
	make -s -C "$KSTLS_ROOT" rust-analyzer KDIR="$KDIR" >/dev/null
	python3 - "$KSTLS_ROOT" <<'PY'
import json, pathlib, sys
root = pathlib.Path(sys.argv[1])
crates = json.loads((root / "rust-project.json").read_text())["crates"]
mine = [c for c in crates if c["root_module"] == str(root / "rust/kstls_main.rs")]
assert len(mine) == 1, "the module's crate root is not in rust-project.json"
deps = {d["name"]: crates[d["crate"]]["display_name"] for d in mine[0]["deps"]}
assert deps.get("kernel") == "kernel" and deps.get("core") == "core", deps
assert "CONFIG_RUST" in mine[0]["cfg"], "the kernel's cfgs are missing"
PY
}
check "make rust-analyzer: rust-project.json has the module's crate, with kernel and core" analyzer

echo "$passed passed, $failed failed"
((failed == 0 && passed > 0))
