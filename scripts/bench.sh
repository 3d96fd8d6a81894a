#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# bench.sh - the kstls benchmark, end to end: build bench/ (and kstls.ko if missing),
# run build/bench/kstls_bench in the QEMU guest with kstls.ko and the benchmark-only
# build/bench/kmod/kstls_kbench.ko (kernel primitives, timed) loaded, then write from its output
#   build/bench/summary.csv    path,threads,modules,ns_median,ns_p10,ns_p90
#   build/bench/raw.csv        every sample (path,threads,modules,repeat,ns_per_op,iters,misses)
#   build/bench/breakdown.csv  the steps of the strict path (same columns as summary.csv)
#   build/bench/table.md       the Markdown report (also printed), environment and command
#   build/bench/scaling.png    the scaling runs
#   build/bench/guest.out      what the guest printed
#
#   scripts/bench.sh           the full run: 8 processes (address-space layouts) x 4 repeats
#                              of ~10 ms samples; 1..1024 threads, 1..256 modules: a few minutes
#   scripts/bench.sh --short   2 processes x 3 repeats of ~1 ms samples, 1 and 16 threads and
#                              modules: proves that every path works and every output is written
#                              (make check)
#
# It fails when something is broken: the build, the guest, a path that reports an error, a
# missing or malformed row, a kernel splat during the run. It never judges a timing.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

short=
case $# in
0) ;;
1) [ "$1" = --short ] || die "usage: bench.sh [--short]"; short=--short ;;
*) die "usage: bench.sh [--short]" ;;
esac
out=$KSTLS_ROOT/build/bench
log=$KSTLS_ROOT/build/guest/serial-bench.log
if [ -n "$short" ]; then timeout=400; else timeout=1500; fi

python3 -c 'import matplotlib' 2>/dev/null ||
	die "python3-matplotlib is missing (for scaling.png): run scripts/setup.sh"

make -C "$KSTLS_ROOT/bench" -s
if [ ! -f "$KSTLS_ROOT/kstls.ko" ]; then
	make -C "$KSTLS_ROOT" -s modules
fi

# Outputs of an earlier run must not pass for this one's (nor be copied into the guest).
rm -f "$out"/{summary,raw,breakdown}.csv "$out"/table.md "$out"/scaling.png "$out"/guest.out

say "running the benchmark in the guest${short:+ (short)}"
rc=0
# Several processes, each with its own address-space layout: under TCG a path's cost depends on
# whether its hot pages collide in QEMU's direct-mapped softmmu TLB, which ASLR (and, between
# phases, the measuring thread's new stack) changes; one process's samples move together, so
# many layouts with a few samples each say more than a few layouts with many. report.py pools
# them.
if [ -n "$short" ]; then
	runs=2 args=--short
else
	runs=8 args="--repeats 4"
fi
"$KSTLS_ROOT/scripts/vm.sh" run --timeout "$timeout" --log "$log" \
	--insmod "$out/kmod/kstls_kbench.ko" -- \
	"for run in $(seq -s ' ' "$runs"); do build/bench/kstls_bench $args || exit 1; done" \
	>"$out/guest.out" || rc=$?
if [ "$rc" != 0 ]; then
	grep -a '^KB:error' "$out/guest.out" >&2 || tail -n 20 "$out/guest.out" >&2
	die "the benchmark failed in the guest (status $rc); output in $out/guest.out, log in $log"
fi
# vm.sh only warns about kernel problems; a splat during the benchmark is a broken run.
if ! verdict=$(python3 "$KSTLS_ROOT/scripts/results.py" --run "$log"); then
	echo "$verdict" >&2
	die "the guest kernel reported problems during the benchmark (log: $log)"
fi

python3 "$KSTLS_ROOT/bench/report.py" "$out/guest.out" "$out" \
	--command "scripts/bench.sh${short:+ $short}" \
	--host-cpu "$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1), $(nproc) CPUs shared with other builds and guests" \
	--qemu "$(qemu-system-x86_64 --version | sed -n 's/^QEMU emulator version //p')" ||
	die "the benchmark's output is incomplete or malformed: $out/guest.out"
say "wrote $out/summary.csv, raw.csv, breakdown.csv, table.md and scaling.png"
