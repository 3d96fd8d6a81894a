#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# check.sh - what `make check` runs: set up the machine, build the test kernel, kstls.ko and the
# selftests, prove that the test runner catches failures (test-runner.sh) and that the scripts
# and make targets behave (test-scripts.sh), boot the guest and
# run every test in it (vm.sh check), judge its log (results.py), and print the grand totals.
# The module's second platform, User-Mode Linux (scripts/kernel.sh build uml), then runs
# kstls.ko's KUnit suites and the selftests but those named in UML_LEFT_OUT below; the
# benchmark's short run uses the uml and prod kernels.
#
#   check.sh               everything above
#   check.sh --build-only  only setup and the test kernel's builds; prints its build dir (for
#                          demo.sh and make bench)
#
# The selftests are built with `make -C selftests KDIR=...`, which puts the *_test binaries into
# build/selftests; libkstls and its scenario tests with `make -C userspace-lib` (into build/lib
# and build/selftests); kstls-run and its tests with `make -C kstls-run` (into build/kstls-run and
# build/selftests); the demo program with `make -C demo`. After the guest's tests, the benchmark
# runs once in its short mode (scripts/bench.sh --short) and counts as one test; the install
# test (scripts/install-test.sh: DESTDIR tree, pkg-config, man -l, uninstall) adds its own. Each stage's time goes to stderr on a
# "kstls: " line; build output goes to stderr too. The last line on stdout is the grand total
# over the runner's own tests and the guest's results, "N passed, N failed" (", N skipped" when
# any were skipped). Exit status 1 on any failure or when no test passed; a failed build stops
# at once. Environment: VM_TIMEOUT (limit of a guest boot, default 1800 s), VM_TEST_TIMEOUT
# (limit of one test binary, default 300 s here: the fork races and kstls-run's argument cases
# take a minute or two each under TCG on a busy host), JOBS.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

# stage NAME CMD...: run CMD and say how long it took.
stage() {
	local name=$1 t0=$SECONDS rc=0
	shift
	"$@" || rc=$?
	say "$name: $((SECONDS - t0)) s$( ((rc == 0)) || echo ", failed with status $rc")"
	return $rc
}

# tee_to FILE CMD...: run CMD with its output shown and kept in FILE.
tee_to() {
	local file=$1
	shift
	"$@" | tee "$file"
}

build() {
	stage setup "$KSTLS_ROOT/scripts/setup.sh" >&2
	KDIR=$(stage kernel "$KSTLS_ROOT/scripts/kernel.sh" build)
	export KDIR
	stage module make -C "$KSTLS_ROOT" modules KDIR="$KDIR" >&2
	stage selftests make -C "$KSTLS_ROOT/selftests" KDIR="$KDIR" >&2
	stage libkstls make -C "$KSTLS_ROOT/userspace-lib" >&2
	stage kstls-run make -C "$KSTLS_ROOT/kstls-run" >&2
	stage demo make -C "$KSTLS_ROOT/demo" >&2
}

# The other two kernels and their kstls.ko (in build/module/FLAVOUR): uml for the second
# platform's tests and the benchmark's user-side rows, prod for its system-call rows.
build_platforms() {
	local f k
	for f in uml prod; do
		k=$(stage "kernel-$f" "$KSTLS_ROOT/scripts/kernel.sh" build "$f")
		stage "module-$f" make -C "$KSTLS_ROOT" modules KDIR="$k" >&2
	done
	UML_KDIR=$("$KSTLS_ROOT/scripts/kernel.sh" dir uml)
}

# The selftests left out under UML, and why: each needs what only the debug kernel has.
UML_LEFT_OUT=(
	faultinject_test # fault injection (FAILSLAB, fail_* in debugfs): a debug-kernel feature
)

passed=0
failed=0
skipped=0
# add_totals WHAT FILE: add the "N passed, N failed[, N skipped]" last line of FILE to the
# grand totals; a missing line counts as one failure.
add_totals() {
	local what=$1 file=$2 last
	last=$(tail -n 1 "$file" 2>/dev/null || true)
	if [[ $last =~ ^([0-9]+)\ passed,\ ([0-9]+)\ failed(,\ ([0-9]+)\ skipped)?$ ]]; then
		passed=$((passed + BASH_REMATCH[1]))
		failed=$((failed + BASH_REMATCH[2]))
		skipped=$((skipped + ${BASH_REMATCH[4]:-0}))
	else
		say "error: $what printed no totals"
		failed=$((failed + 1))
	fi
}

# add_count NAME N WHAT FILE: N tests of a host-side suite passed (N > 0), or one failure with
# the end of its output FILE.
add_count() {
	if ((${2:-0} > 0)); then
		passed=$((passed + $2))
		echo "ok $1: $2 $3"
	else
		failed=$((failed + 1))
		echo "FAIL $1: $(tail -n 5 "$4")"
	fi
}

case ${1:-} in
--build-only)
	build
	echo "$KDIR"
	exit 0
	;;
'') ;;
*) die "usage: check.sh [--build-only]" ;;
esac

t0=$SECONDS
build
build_platforms
out=$KSTLS_ROOT/build/guest
mkdir -p "$out"
stage test-runner tee_to "$out/test-runner.txt" "$KSTLS_ROOT/scripts/test-runner.sh" || true
add_totals test-runner.sh "$out/test-runner.txt"
stage scripts tee_to "$out/test-scripts.txt" "$KSTLS_ROOT/scripts/test-scripts.sh" || true
add_totals test-scripts.sh "$out/test-scripts.txt"
# The guest runs every test binary one after the other under TCG: several minutes.
export VM_TEST_TIMEOUT=${VM_TEST_TIMEOUT:-300}
stage guest "$KSTLS_ROOT/scripts/vm.sh" check --timeout "${VM_TIMEOUT:-1800}" || true
stage results tee_to "$out/results-check.txt" \
	python3 "$KSTLS_ROOT/scripts/results.py" "$out/serial-check.log" || true
add_totals results.py "$out/results-check.txt"
# The second platform: kstls.ko's KUnit suites (at insmod) and the selftests under UML.
uml_tests=$(cd "$KSTLS_ROOT/build/selftests" && for t in *_test; do
	[[ " ${UML_LEFT_OUT[*]} " == *" $t "* ]] || echo "$t"
done | tr '\n' ' ')
say "uml: leaving out ${UML_LEFT_OUT[*]} (scripts/check.sh, UML_LEFT_OUT)"
stage guest-uml env KDIR="$UML_KDIR" "$KSTLS_ROOT/scripts/vm.sh" check --only "$uml_tests" \
	--timeout "${VM_TIMEOUT:-1800}" --log "$out/serial-check-uml.log" || true
# Its lines say "uml: "; the last, the totals, stays as it is for add_totals.
uml_results() {
	python3 "$KSTLS_ROOT/scripts/results.py" "$out/serial-check-uml.log" | sed '$!s/^/uml: /'
	return "${PIPESTATUS[0]}"
}
stage results-uml tee_to "$out/results-check-uml.txt" uml_results || true
add_totals "results.py (uml)" "$out/results-check-uml.txt"
# Host-side checks of the library: no undefined libc symbol in libkstls.so or libkstls.a.
if stage symbols make -s -C "$KSTLS_ROOT/userspace-lib" check-symbols >"$out/symbols.txt" 2>&1; then
	passed=$((passed + 1))
	echo "ok symbols: $(head -n 1 "$out/symbols.txt")"
else
	failed=$((failed + 1))
	echo "FAIL symbols: $(tail -n 3 "$out/symbols.txt")"
fi
# Host-side: cargo test of the library's pure logic (ELF and _DYNAMIC parsing, hash lookups,
# host_id, errno texts, fast_lookup on a synthetic cache page); each test counts.
n=0
if stage unit-test make -s -C "$KSTLS_ROOT/userspace-lib" unit-test >"$out/unit-test.txt" 2>&1 &&
	grep -qE '^test result: ok\. [0-9]+ passed; 0 failed' "$out/unit-test.txt"; then
	n=$(grep -E '^test result: ' "$out/unit-test.txt" | awk '{s += $4} END {print s + 0}')
fi
add_count unit-test "$n" "cargo tests of libkstls's pure logic" "$out/unit-test.txt"
# Host-side: bench/report.py on synthetic outputs of both platforms (its CSV columns, the rows it
# requires, the targets judged per platform, where a missed target's time goes); each test counts.
n=0
if stage report-test python3 "$KSTLS_ROOT/bench/test_report.py" >"$out/report-test.txt" 2>&1 &&
	grep -qx 'OK' "$out/report-test.txt"; then
	n=$(sed -n 's/^Ran \([0-9]*\) tests\{0,1\} in .*/\1/p' "$out/report-test.txt")
fi
add_count report-test "$n" "tests of bench/report.py on synthetic outputs" "$out/report-test.txt"
# Host-side: the Rust crate's docs and examples build without a warning (cargo doc -D warnings).
if stage rust-check make -s -C "$KSTLS_ROOT/userspace-lib" rust-check >"$out/rust-check.txt" 2>&1; then
	passed=$((passed + 1))
	grep '^ok rust-check' "$out/rust-check.txt" || echo 'ok rust-check'
else
	failed=$((failed + 1))
	echo "FAIL rust-check: $(tail -n 5 "$out/rust-check.txt")"
fi
# Host-side: the module compiles from scratch without a warning (rustc, bindgen, objtool: an
# objtool "falls through" is a panic path objtool does not know). A copy of the sources is built,
# so the checkout's own incremental build does not hide what compiled earlier.
module_warnings() {
	local tree rc=0
	tree=$(mktemp -d /tmp/kstls-warn.XXXXXX)
	copy_module_sources "$tree" &&
		make -C "$tree" modules KDIR="$KDIR" >"$tree/build.log" 2>&1 || rc=$?
	if ((rc != 0)); then
		tail -n 5 "$tree/build.log"
	elif grep -qi 'warning' "$tree/build.log"; then
		grep -i 'warning' "$tree/build.log" | tail -n 5
		rc=1
	fi
	rm -rf "$tree"
	return $rc
}
if stage module-warnings module_warnings >"$out/module-warnings.txt" 2>&1; then
	passed=$((passed + 1))
	echo "ok module-warnings: kstls.ko builds from scratch without a warning"
else
	failed=$((failed + 1))
	echo "FAIL module-warnings: $(tail -n 6 "$out/module-warnings.txt")"
fi
# Host-side: make install into a DESTDIR, pkg-config, man pages, make uninstall (one test each).
stage install tee_to "$out/install-test.txt" "$KSTLS_ROOT/scripts/install-test.sh" || true
add_totals install-test.sh "$out/install-test.txt"
# The benchmark in its short mode: it proves every path works and every output is written; it
# never judges a timing. It counts as one test.
if stage bench "$KSTLS_ROOT/scripts/bench.sh" --short >"$out/bench-short.txt" 2>&1; then
	passed=$((passed + 1))
	echo "ok bench: scripts/bench.sh --short"
else
	failed=$((failed + 1))
	echo "FAIL bench: scripts/bench.sh --short (output in $out/bench-short.txt)"
	tail -n 20 "$out/bench-short.txt"
fi
say "check: $((SECONDS - t0)) s in all"

totals="$passed passed, $failed failed"
((skipped == 0)) || totals+=", $skipped skipped"
echo "$totals"
((failed == 0 && passed > 0))
