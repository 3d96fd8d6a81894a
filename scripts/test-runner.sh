#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# test-runner.sh - prove that the guest test runner (scripts/vm.sh, scripts/guest-init.sh,
# scripts/results.py) catches failures instead of reporting them as passes.
#
#   test-runner.sh [--no-boot]
#
# Part 1 feeds results.py small synthetic serial logs: a clean one, and one for each kind of
# failure (failing KUnit case, KUnit suite without summary or cases, failing TAP case, crashed
# or silent selftest, WARNING, lockdep and hung-task splats, kmemleak report, failed insmod and
# rmmod, no end marker, no tests), and checks its exit status, totals and FAIL lines.
# Part 2 (skipped with --no-boot) builds the canary module and selftest of selftests/runner and
# boots the real guest without kstls.ko, $JOBS boots at a time: a clean boot must pass; a failing
# KUnit case, a failing selftest, a kernel WARN and a leak must each fail and be named; `vm.sh
# run` must mount the --extra share, pass the command's exit status through and warn of the
# leak. The kernel must have been built (scripts/kernel.sh build); KDIR overrides its location.
#
# Output is TAP; the last line is "N passed, N failed". Exit status 1 on any failure.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/tap.sh"

RESULTS=$KSTLS_ROOT/scripts/results.py
VM=$KSTLS_ROOT/scripts/vm.sh
OUT=$KSTLS_ROOT/build/runner
LOGS=$KSTLS_ROOT/build/guest
# A canary boot takes ~30 s alone; the limit only ends a hung one, so it leaves room for a
# machine loaded with other builds and guests (VM_RUNNER_TIMEOUT overrides it).
BOOT_TIMEOUT=${VM_RUNNER_TIMEOUT:-300}
MULTIARCH=x86_64-linux-gnu

boot=1
case ${1:-} in
--no-boot) boot=0 ;;
'') ;;
*) die "usage: test-runner.sh [--no-boot]" ;;
esac

# verdict DESCRIPTION WANT-STATUS WANT-LAST-LINE WANT-REGEX RESULTS-ARGS...: run results.py
# and compare its exit status, its last line and (an extended regex) one of its lines; an empty
# want is not checked.
verdict() {
	local desc=$1 want_rc=$2 want_last=$3 want_re=$4 rc=0 why= last
	local out=$OUT/verdict-$((n + 1)).txt
	shift 4
	python3 "$RESULTS" "$@" >"$out" 2>&1 || rc=$?
	last=$(tail -n 1 "$out")
	[ "$rc" = "$want_rc" ] || why="results.py exited with $rc, want $want_rc. "
	[ -z "$want_last" ] || [ "$last" = "$want_last" ] ||
		why+="Its last line is '$last', want '$want_last'. "
	[ -z "$want_re" ] || grep -qE -- "$want_re" "$out" || why+="No line matches '$want_re'."
	tap "$desc" "$why" "$out"
}

# --- part 1: synthetic logs -------------------------------------------------------------------

# A clean serial log as the guest writes it (CRLF, a BIOS escape sequence): a selftest with two
# passing cases and a skipped one, and a module's KUnit suite with two passing cases (the
# kernel's own suite, before "guest-init: loading modules", does not count).
clean_log() {
	{
		printf '\033[?7l\033[2J'
		cat <<'EOF'
SeaBIOS (version 1.16.2-debian-1.16.2-1)
[    0.000000] Linux version 7.3.4 (root@host) #1 SMP PREEMPT_DYNAMIC
KSTLS-VM: boot 7.3.4, uptime 1.02 s
KSTLS-VM: insmod kstls rc=0
KSTLS-VM: run-begin
KSTLS-VM: test-begin a_test
TAP version 13
1..3
# Starting 3 tests from 1 test cases.
#  RUN           global.one ...
#            OK  global.one
ok 1 global.one
ok 2 global.two
ok 3 global.three # SKIP not on this machine
# Totals: pass:2 fail:0 xfail:0 xpass:0 skip:1 error:0
KSTLS-VM: test-end a_test rc=0
KSTLS-VM: exit rc=0
KSTLS-VM: rmmod kstls rc=0
KSTLS-VM: kmemleak-begin
KSTLS-VM: kmemleak-end
KSTLS-VM: dmesg-begin
[    0.900000] KTAP version 1
[    0.900000] 1..1
[    0.900001]     KTAP version 1
[    0.900001]     # Subtest: rust_kernel_fmt
[    0.900001]     1..1
[    0.900002]     ok 1 test_ptr_formatting
[    0.900003] # rust_kernel_fmt: pass:1 fail:0 skip:0 total:1
[    0.900003] ok 1 rust_kernel_fmt
[    1.000000] guest-init: loading modules
[    1.100000] KTAP version 1
[    1.100000] 1..1
[    1.100001]     KTAP version 1
[    1.100001]     # Subtest: rust_kstls_demo
[    1.100001]     # module: kstls
[    1.100001]     1..2
[    1.100002]     ok 1 test_one
[    1.100003]     ok 2 test_two
[    1.100004] # rust_kstls_demo: pass:2 fail:0 skip:0 total:2
[    1.100004] ok 1 rust_kstls_demo
KSTLS-VM: dmesg-end
KSTLS-VM: end
EOF
	} | sed 's/$/\r/'
}

# synth NAME [SED-ARGS...]: the clean log edited by sed, as $OUT/logs/NAME.log.
synth() {
	local name=$1
	shift
	clean_log | sed "$@" >"$OUT/logs/$name.log"
}

# expect NAME DESCRIPTION WANT-STATUS WANT-LAST-LINE WANT-REGEX [--run]: the verdict on the
# synthetic log NAME.
expect() {
	local name=$1 desc=$2
	shift 2
	verdict "results: $desc" "$@" "$OUT/logs/$name.log"
}

synthetic_tests() {
	# Lines injected after the module's KUnit suite in the kernel log dump, or elsewhere.
	local after_suite='/\] ok 1 rust_kstls_demo/a'
	local warn='[    2.000000] WARNING: context.rs:10 at open+0x10/0x20 [kstls], CPU#1: a_test/77'
	local lockdep='[    3.000000] WARNING: possible circular locking dependency detected'
	local hung='[  130.000000] INFO: task a_test:80 blocked for more than 120 seconds.'
	local leak='unreferenced object 0xffff888004c1e000 (size 100):\n  comm "insmod", pid 60'
	leak+='\n  backtrace (crc 5a5a5a5a):\n    __kmalloc_cache_noprof+0x1d0/0x2c0'
	local no_tests=(-e '/test-begin/,/test-end/d' -e '/KTAP version 1/,/ok 1 rust_kstls_demo/d')
	mkdir -p "$OUT/logs"

	synth clean -e ''
	expect clean "a clean log passes" 0 "4 passed, 0 failed, 1 skipped" ""
	synth kunit-fail -e 's/^\(.*\)     ok 2 test_two/\1     # test_two: EXPECTATION FAILED\n&/' \
		-e 's/     ok 2 test_two/     not ok 2 test_two/' -e 's/pass:2 fail:0/pass:1 fail:1/' \
		-e 's/\] ok 1 rust_kstls_demo/] not ok 1 rust_kstls_demo/'
	expect kunit-fail "a failing KUnit case fails" 1 "3 passed, 1 failed, 1 skipped" \
		'^FAIL kunit rust_kstls_demo\.test_two$'
	synth kunit-no-summary -e '/# rust_kstls_demo: pass/d'
	expect kunit-no-summary "a KUnit suite without summary fails" 1 \
		"4 passed, 1 failed, 1 skipped" '^FAIL kunit rust_kstls_demo: no summary line$'
	synth kunit-no-cases -e '/    ok [12] test_/d' -e 's/    1\.\.2/    1..0/' \
		-e 's/pass:2 fail:0 skip:0 total:2/pass:0 fail:0 skip:0 total:0/'
	expect kunit-no-cases "a KUnit suite without cases fails" 1 "2 passed, 1 failed, 1 skipped" \
		'^FAIL kunit rust_kstls_demo: the suite has no test cases$'
	synth tap-fail -e 's/^ok 2 global.two/# global.two: Test failed\nnot ok 2 global.two/' \
		-e 's/a_test rc=0/a_test rc=1/'
	expect tap-fail "a failing selftest case fails" 1 "3 passed, 1 failed, 1 skipped" \
		'^FAIL selftest a_test: global\.two$'
	synth tap-crash -e '/^ok 2 global.two/,/^# Totals/d' -e 's/a_test rc=0/a_test rc=139/'
	expect tap-crash "a crashed selftest fails" 1 "3 passed, 1 failed" \
		'^FAIL selftest a_test: killed by signal 11 \(SIGSEGV\); planned 3 tests, reported 1$'
	synth tap-silent -e '/^TAP version/,/^# Totals/d' -e 's/a_test rc=0/a_test rc=2/'
	expect tap-silent "a selftest printing no result fails" 1 "2 passed, 1 failed" \
		'^FAIL selftest a_test: exited with status 2 but no case failed; printed no test result$'
	synth tap-timeout -e 's/a_test rc=0/a_test rc=137 timeout/'
	expect tap-timeout "a selftest killed by its time limit fails" 1 \
		"4 passed, 1 failed, 1 skipped" '^FAIL selftest a_test: killed by the per-test time limit'
	synth warn -e "/^KSTLS-VM: exit/i $warn" -e "$after_suite $warn"
	expect warn "a WARNING fails once, on the console and in the dump" 1 \
		"4 passed, 1 failed, 1 skipped" \
		'^FAIL splat: WARNING: context\.rs:10 at open\+0x10/0x20 \[kstls\], CPU#1: a_test/77$'
	synth lockdep -e "$after_suite $lockdep"
	expect lockdep "a lockdep report fails" 1 "4 passed, 1 failed, 1 skipped" \
		'^FAIL splat: WARNING: possible circular locking dependency detected$'
	synth hung -e "$after_suite $hung"
	expect hung "a hung task fails" 1 "4 passed, 1 failed, 1 skipped" \
		'^FAIL splat: INFO: task a_test:80 blocked for more than 120 seconds\.$'
	synth leak -e "/^KSTLS-VM: kmemleak-begin/a $leak"
	expect leak "a kmemleak report fails" 1 "4 passed, 1 failed, 1 skipped" \
		'^FAIL kmemleak: unreferenced object 0xffff888004c1e000 \(size 100\):$'
	synth insmod -e 's/insmod kstls rc=0/insmod kstls rc=1/'
	expect insmod "a failed insmod fails" 1 "4 passed, 1 failed, 1 skipped" \
		'^FAIL insmod kstls: the module did not load \(rc=1\)$'
	synth rmmod -e 's/rmmod kstls rc=0/rmmod kstls rc=1/'
	expect rmmod "a module that does not unload fails" 1 "4 passed, 1 failed, 1 skipped" \
		'^FAIL rmmod kstls: the module did not unload \(rc=1\)$'
	synth timeout -e '/^KSTLS-VM: test-end/,$d'
	expect timeout "a guest that never ends fails" 1 "2 passed, 2 failed, 1 skipped" \
		'^FAIL the guest never reached its end marker'
	synth no-tests "${no_tests[@]}"
	expect no-tests "a log without tests fails" 1 "0 passed, 1 failed" '^FAIL no tests ran$'
	synth run "${no_tests[@]}" -e 's/exit rc=0/exit rc=3/'
	expect run "--run needs no tests and ignores the command's status" 0 "0 passed, 0 failed" "" \
		--run
}

# --- part 2: real boots ------------------------------------------------------------------------

# build_canary: kstls_canary.ko, canary_fail_test (glibc) and canary_pass_test (musl) in $OUT.
build_canary() {
	local ksrc harness
	[ -f "$KDIR/.kstls-built" ] || die "the kernel in $KDIR is not built: run scripts/kernel.sh build"
	ksrc=$(ksrc) || die "no kernel source: run scripts/setup.sh"
	command -v musl-gcc >/dev/null || die "musl-gcc missing: run scripts/setup.sh (musl-tools)"
	harness=(-Wall -Werror -O2 -I"$ksrc/tools/testing/selftests")
	rm -rf "$OUT/module" "$OUT/fail-tests" "$OUT/pass-tests" "$OUT/no-tests" "$OUT/extra"
	mkdir -p "$OUT/module" "$OUT/fail-tests" "$OUT/pass-tests" "$OUT/no-tests" "$OUT/extra"
	make -C "$KDIR" M="$KSTLS_ROOT/selftests/runner" MO="$OUT/module" "${KTOOLS[@]}" \
		-j"$JOBS" modules
	gcc "${harness[@]}" -o "$OUT/fail-tests/canary_fail_test" \
		"$KSTLS_ROOT/selftests/runner/canary_fail_test.c"
	# musl has no kernel headers of its own: take the host's (linux/, asm/) after musl's.
	musl-gcc "${harness[@]}" -idirafter /usr/include -idirafter /usr/include/$MULTIARCH \
		-DCANARY_PASS -o "$OUT/pass-tests/canary_pass_test" \
		"$KSTLS_ROOT/selftests/runner/canary_fail_test.c"
	echo "greetings from the host" >"$OUT/extra/greeting"
}

# launch NAME MODE VM-ARGS...: start `vm.sh MODE` in the background, at most $JOBS boots at a
# time (a booting guest keeps about one CPU busy); its stdout, stderr and exit status go to
# $OUT/vm-NAME.{out,err,rc} and its serial log to $LOGS/serial-runner-NAME.log.
launch() {
	local name=$1 mode=$2
	shift 2
	while (($(jobs -rp | wc -l) >= JOBS)); do
		wait -n || true
	done
	(
		rc=0
		"$VM" "$mode" --timeout "$BOOT_TIMEOUT" --log "$LOGS/serial-runner-$name.log" "$@" \
			>"$OUT/vm-$name.out" 2>"$OUT/vm-$name.err" || rc=$?
		echo "$rc" >"$OUT/vm-$name.rc"
	) &
}

# judge NAME DESCRIPTION WANT-STATUS WANT-LAST-LINE WANT-REGEX [--run]: the verdict of
# results.py on a finished boot, with what vm.sh said when it is not the one wanted.
judge() {
	local name=$1 desc=$2 was=$failed secs
	shift 2
	secs=$(sed -n 's/^kstls: guest ran for \([0-9]*\) s$/\1/p' "$OUT/vm-$name.err")
	verdict "boot: $desc (${secs:-?} s)" "$@" "$LOGS/serial-runner-$name.log"
	if ((failed > was)); then
		echo "# vm.sh said:"
		tail -n 20 "$OUT/vm-$name.err" | sed 's/^/# /'
	fi
}

boot_tests() {
	local ko=$OUT/module/kstls_canary.ko t0=$SECONDS why=
	KDIR=${KDIR:-$(bash "$KSTLS_ROOT/scripts/kernel.sh" dir)}
	export KDIR
	# In the background, so that set -e still stops the build at its first error.
	build_canary >"$OUT/build.txt" 2>&1 &
	if ! wait $!; then
		tap "build the canary module and selftests" "the build failed" "$OUT/build.txt"
		return
	fi
	tap "build the canary module and selftests" ""

	rm -f "$OUT"/vm-*
	launch clean check --no-module --insmod "$ko" --tests "$OUT/pass-tests"
	launch kunit check --no-module --insmod "$ko fail=kunit" --tests "$OUT/no-tests"
	launch selftest check --no-module --insmod "$ko" --tests "$OUT/fail-tests"
	launch warn check --no-module --insmod "$ko fail=warn" --tests "$OUT/no-tests"
	launch run run --no-module --insmod "$ko fail=leak" --extra "$OUT/extra" \
		-- sh -c 'cat /mnt/extra/greeting; exit 7'
	wait

	judge clean "a clean canary and passing selftests (musl) pass" 0 "3 passed, 0 failed" ""
	judge kunit "a failing KUnit case is named" 1 "" '^FAIL kunit kstls_canary\.canary_case$'
	judge selftest "a failing selftest case (glibc) is named" 1 "" \
		'^FAIL selftest canary_fail_test: global\.canary$'
	judge warn "a kernel WARN is named" 1 "" '^FAIL splat: WARNING: .*kstls_canary'
	judge run "a leak is named" 1 "" \
		'^FAIL kmemleak: unreferenced object 0x[0-9a-f]+ \(size [0-9]+\)' --run
	[ "$(cat "$OUT/vm-run.rc")" = 7 ] || why="vm.sh run exited with $(cat "$OUT/vm-run.rc"), want 7. "
	[ "$(cat "$OUT/vm-run.out")" = "greetings from the host" ] ||
		why+="Its output is not the file shared with --extra. "
	grep -q '^FAIL kmemleak: unreferenced object' "$OUT/vm-run.err" ||
		why+="It did not warn of the leak."
	tap "boot: vm.sh run shares --extra, returns the status, warns of the leak" "$why" \
		"$OUT/vm-run.out" "$OUT/vm-run.err"
	say "test-runner: $((SECONDS - t0)) s for the builds and boots ($JOBS at a time)"
}

mkdir -p "$OUT" "$LOGS"
rm -f "$OUT"/verdict-*.txt
echo "TAP version 13"
synthetic_tests
if [ "$boot" = 1 ]; then
	boot_tests
fi
tap_totals
