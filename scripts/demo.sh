#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# demo.sh - what `make demo` runs: the setup and builds of `make check`, then one boot of the
# guest with kstls.ko loaded that tells the story:
#   1-3. build/demo/twolibc-demo: the same shared object's TLS, carrying musl into a glibc
#        process, broken without kstls and working with it, then the kernel's fdinfo counters
#   4.   kstls-run: an unmodified program (build/selftests/run/count_prog, whose libcount.so was
#        built without kstls) with its TLS served and counted by the kernel, strict and cached
#   5.   build/demo/kstls-demo: the device itself, ioctl by ioctl
#   6.   the benchmark in its short mode, both sets of paths on this debug kernel
#        (build/bench/kstls_bench --short --platform qemu-debug), whose tables are printed on the
#        host by bench/report.py, which judges no target on a debug kernel (outputs in
#        build/demo/bench/; `make bench` for the full run on uml and qemu-prod)
# Exits non-zero when a part of the story failed. Environment: VM_TIMEOUT, VM_EXTRA as for
# scripts/vm.sh.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

KDIR=$("$KSTLS_ROOT/scripts/check.sh" --build-only)
export KDIR
make -C "$KSTLS_ROOT/bench" -s
out=$KSTLS_ROOT/build/demo
mkdir -p "$out/bench"
rc=0
"$KSTLS_ROOT/scripts/vm.sh" run --timeout "${VM_TIMEOUT:-600}" --log "$out/serial-demo.log" \
	--insmod "$KSTLS_ROOT/build/bench/kmod/kstls_kbench.ko" -- '
rc=0
/kstls/build/demo/twolibc-demo || rc=1
echo
echo "== 4. An unmodified program, its TLS served and counted by the kernel: kstls-run =="
echo "count_prog calls count_bump() of libcount.so (built without kstls: one __thread access) 1000 times."
echo "\$ kstls-run --strict --stats count_prog 1000    # every access a kernel lookup"
/kstls/build/kstls-run/kstls-run --strict --stats /kstls/build/selftests/run/count_prog 1000 || rc=1
echo "\$ kstls-run --stats count_prog 1000             # the cache answers after the first"
/kstls/build/kstls-run/kstls-run --stats /kstls/build/selftests/run/count_prog 1000 || rc=1
echo
echo "== 5. The device itself: /dev/kstls, ioctl by ioctl =="
/kstls/build/demo/kstls-demo || rc=1
echo
echo "== 6. The benchmark, short run (make bench for the full one) =="
/kstls/build/bench/kstls_bench --short --platform qemu-debug >/tmp/bench.out || rc=1
grep -c "^KB:raw" /tmp/bench.out | sed "s/^/(measurements: /; s/$/)/"
cat /tmp/bench.out
exit $rc' | tee "$out/guest.out" | grep -av '^KB:' || rc=$?
if python3 "$KSTLS_ROOT/bench/report.py" "$out/bench" "$out/guest.out" \
	--command "scripts/demo.sh (kstls_bench --short)" \
	--host-cpu "$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1), $(nproc) CPUs" \
	--qemu "$(qemu-system-x86_64 --version | sed -n 's/^QEMU emulator version //p')" >/dev/null; then
	echo
	sed -n '/^| path/,/^$/p' "$out/bench/table.md"
	echo "(full report: $out/bench/table.md; ratios under TCG mean something only within one run)"
else
	echo "the benchmark's output is incomplete: $out/guest.out"
	rc=1
fi
exit $rc
