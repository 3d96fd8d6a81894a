#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# bench.sh - the kstls benchmark, end to end, on the two platforms that can time its paths:
#   uml        User-Mode Linux (scripts/kernel.sh dir uml): user code runs natively, a syscall
#              costs ~17 us, so it runs kstls_bench's user set (the TLS access paths);
#   qemu-prod  QEMU TCG with the production-config kernel (scripts/kernel.sh dir prod): no
#              debug options in the kernel's paths, so it runs the syscall set (the strict
#              path, its breakdown with build/bench/kmod-prod/kstls_kbench.ko, first touch),
#              then build/bench/fork_cost (a root process's fork + waitpid while uid 65534
#              forks from a process of 0, 1 and 8000 contexts).
# It builds both kernels, kstls.ko for each and bench/ (kstls_kbench.ko against the production
# kernel), runs each platform in a boot of its own, one after the other, then writes from both
# outputs (bench/report.py)
#   build/bench/summary.csv    platform,path,threads,modules,ns_median,ns_p10,ns_p90
#   build/bench/raw.csv        every sample (platform,path,threads,modules,repeat,ns_per_op,
#                              iters,misses)
#   build/bench/breakdown.csv  the steps of the strict path (same columns as summary.csv)
#   build/bench/table.md       the Markdown report (also printed): every platform's targets,
#                              then a section per platform with its environment and command
#   build/bench/scaling.png    the scaling runs, per platform
#   build/bench/fork.csv       fork_cost per phase (platform,contexts,ns_median,ns_p10,ns_p90,
#                              paired_x0,medians_x0,holder_forks_per_s); fork_raw.csv every
#                              operation
#   build/bench/guest-uml.out, guest-qemu-prod.out   what each guest printed
#   build/guest/serial-bench-uml.log, serial-bench-qemu-prod.log   their serial logs
#
#   scripts/bench.sh           the full run: 8 processes (address-space layouts) x 4 repeats
#                              of ~10 ms samples per platform; 1..1024 threads, 1..256 modules
#   scripts/bench.sh --short   2 processes x 3 repeats of ~1 ms samples per platform, 1 and 16
#                              threads and modules, fork_cost 3 repeats of 30 forks per phase
#                              (11 of 200 in the full run): proves that every path works and
#                              every output is written (make check)
#
# It fails when something is broken: a build, a guest, a path that reports an error, a missing
# or malformed row, a kernel splat during a run. It never judges a timing.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

short=
case $# in
0) ;;
1) [ "$1" = --short ] || die "usage: bench.sh [--short]"; short=--short ;;
*) die "usage: bench.sh [--short]" ;;
esac
out=$KSTLS_ROOT/build/bench
logs=$KSTLS_ROOT/build/guest
if [ -n "$short" ]; then timeout=400; else timeout=1500; fi

python3 -c 'import matplotlib' 2>/dev/null ||
	die "python3-matplotlib is missing (for scaling.png): run scripts/setup.sh"

# The two kernels, kstls.ko for each, and bench/ with its kernel module for the syscall set.
kdir_prod=$("$KSTLS_ROOT/scripts/kernel.sh" build prod)
kdir_uml=$("$KSTLS_ROOT/scripts/kernel.sh" build uml)
make -C "$KSTLS_ROOT" -s modules KDIR="$kdir_prod"
make -C "$KSTLS_ROOT" -s modules KDIR="$kdir_uml"
make -C "$KSTLS_ROOT/bench" -s KDIR="$kdir_prod" KMOD_OUT="$out/kmod-prod"

# Outputs of an earlier run must not pass for this one's (nor be copied into a guest).
mkdir -p "$out" "$logs"
rm -f "$out"/{summary,raw,breakdown,fork,fork_raw}.csv "$out"/table.md "$out"/scaling.png "$out"/guest*.out

# Several processes, each with its own address-space layout: under TCG a path's cost depends on
# whether its hot pages collide in QEMU's direct-mapped softmmu TLB, which ASLR (and, between
# phases, the measuring thread's new stack) changes; one process's samples move together, so
# many layouts with a few samples each say more than a few layouts with many. UML runs the
# same processes, in one boot as well. report.py pools them per platform.
if [ -n "$short" ]; then
	runs=2 args=--short fork_args="-r 3 -n 30"
else
	runs=8 args="--repeats 4" fork_args="-r 11 -n 200"
fi

# run_platform NAME SET KDIR AFTER [VM.SH OPTION...]: one boot of KDIR's kernel running
# kstls_bench's SET $runs times, then the shell command AFTER (if not empty), their output in
# $out/guest-NAME.out; dies on a failed guest or a kernel splat.
run_platform() {
	local name=$1 set=$2 kdir=$3 after=$4 rc=0
	shift 4
	local guest=$out/guest-$name.out log=$logs/serial-bench-$name.log
	say "running the benchmark's $set set on $name${short:+ (short)}"
	KDIR=$kdir "$KSTLS_ROOT/scripts/vm.sh" run --timeout "$timeout" --log "$log" "$@" -- \
		"for run in $(seq -s ' ' "$runs"); do build/bench/kstls_bench --set $set --platform $name $args || exit 1; done${after:+ && $after}" \
		>"$guest" || rc=$?
	if [ "$rc" != 0 ]; then
		grep -a '^KB:\(fork_\)\?error' "$guest" >&2 || tail -n 20 "$guest" >&2
		die "the benchmark failed on $name (status $rc); output in $guest, log in $log"
	fi
	# vm.sh only warns about kernel problems; a splat during the benchmark is a broken run.
	local verdict
	if ! verdict=$(python3 "$KSTLS_ROOT/scripts/results.py" --run "$log"); then
		echo "$verdict" >&2
		die "the $name guest kernel reported problems during the benchmark (log: $log)"
	fi
}

run_platform uml user "$kdir_uml" ""
# fork_cost is a system-call benchmark too: a fork and the kernel's locks, on the production
# kernel. Its other user holds 8000 contexts, more than the default quota admits (every
# context is charged what it pins: about 30 KiB on this kernel, some 1600 per user at 48 MiB,
# and its module, table and block besides), so kstls.ko is loaded again with room for them.
fork_quota=$((8000 * 64))
run_platform qemu-prod syscall "$kdir_prod" \
	"rmmod kstls && insmod /kstls/kstls.ko max_user_kbytes=$fork_quota && build/bench/fork_cost -p qemu-prod $fork_args" \
	--insmod "$out/kmod-prod/kstls_kbench.ko"

python3 "$KSTLS_ROOT/bench/report.py" "$out" "$out/guest-uml.out" "$out/guest-qemu-prod.out" \
	--command "scripts/bench.sh${short:+ $short}" \
	--host-cpu "$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1), $(nproc) CPUs shared with other builds and guests" \
	--qemu "$(qemu-system-x86_64 --version | sed -n 's/^QEMU emulator version //p')" \
	--fork-platform qemu-prod ||
	die "the benchmark's output is incomplete or malformed: $out/guest-uml.out, $out/guest-qemu-prod.out"
say "wrote $out/summary.csv, raw.csv, breakdown.csv, fork.csv, fork_raw.csv, table.md and scaling.png"
