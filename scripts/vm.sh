#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# vm.sh - boot a kstls kernel with a generated initramfs, and run the selftests or a command in
# it with kstls.ko loaded: an x86-64 kernel in QEMU (TCG; KVM does not work on this host), a
# User-Mode Linux kernel (scripts/kernel.sh build uml) as the host process it is.
#
#   vm.sh check [OPTIONS]           run every executable *_test of build/selftests, sorted
#   vm.sh run [OPTIONS] -- CMD      run the shell command CMD (one word) with sh -c in /kstls
#   vm.sh run [OPTIONS] -- PROG ARG...   run PROG with exactly these arguments (several words:
#                                   each is quoted for the guest's shell, so none is split)
#   Either way the guest gets the bytes given: nothing is expanded on the host. Exit status: the
#   command's.
#
# Options:
#   --no-module          do not load kstls.ko (it need not exist then)
#   --insmod 'FILE [PARAM=VALUE...]'
#                        load another module, with parameters, before kstls.ko (repeatable;
#                        FILE must not contain white space)
#   --tests DIR          check: run the *_test files of DIR instead of build/selftests
#   --only 'NAME...'     check: run only these of the *_test files
#   --extra DIR          share DIR read-only with the guest at /mnt/extra (9p; hostfs under
#                        UML) [$VM_EXTRA]
#   --timeout SECS       hard limit for the whole boot [$VM_TIMEOUT, 300]
#   --log FILE           where the serial log goes [build/guest/serial-MODE.log]
# Environment: KDIR (the kernel build directory; default `scripts/kernel.sh dir`, the test
# kernel, which must have been built; a UML build boots UML), VM_TEST_TIMEOUT (limit per test
# binary in the guest, default 120 s).
#
# The guest sees the kstls.ko built for KDIR (scripts/lib.sh, module_ko) at /kstls/kstls.ko, a
# copy of build/ at /kstls/build (without build/guest, build/module and cargo's incremental
# caches), the host's glibc loader and core libraries and musl's loader, so dynamically linked
# test programs run. Its /init is scripts/guest-init.sh.
# While the guest runs, the job's output (from the run-begin marker to the exit marker or the
# kernel log dump) is shown on stdout; the whole serial log, with the kernel log dump at its
# end, is kept for scripts/results.py. `check` exits 0 when the guest got to the end, whatever
# the tests said.
# `run` exits with CMD's status (124: the boot timed out, 125: the guest died before CMD
# finished), and warns on stderr when the kernel log has a splat, a leak or a failed unload.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

MAX_FILE_MB=64
MULTIARCH=x86_64-linux-gnu
GLIBC_LIBS=(ld-linux-x86-64.so.2 libc.so.6 libm.so.6 libpthread.so.0 libdl.so.2 librt.so.1
	libgcc_s.so.1)
# loglevel=4: only errors and worse on the console while booting (guest-init.sh lowers it
# further for the job); oops=panic + panic=-1 end a broken guest at once instead of letting
# later tests hang; acpi=noirq spares the ACPI interrupt-link AML that takes ~20 s under TCG to
# enable the 9p device; stats_enabled=2 makes KUnit print a summary for one-case suites too.
# slub_debug only where the kernel has SLUB debugging. UML: the console is fd 1 and reads
# nothing; its memory is a host file of mem= bytes; seccomp=on is its fast system-call mode.
CMDLINE=(loglevel=4 panic=-1 oops=panic log_buf_len=4M kunit.stats_enabled=2)
QEMU_CMDLINE=(console=ttyS0 acpi=noirq)
UML_CMDLINE=(mem=1G seccomp=on con=null con0=null,fd:1)

usage() { die "usage: vm.sh check|run [--no-module] [--insmod 'FILE [ARGS]'] [--tests DIR] [--extra DIR] [--timeout SECS] [--log FILE] [-- CMD...]"; }

mode=${1:-}
case $mode in check | run) shift ;; *) usage ;; esac
load_kstls=1
insmods=()
tests=
only=
extra=${VM_EXTRA:-}
timeout=${VM_TIMEOUT:-300}
test_timeout=${VM_TEST_TIMEOUT:-120}
log=$KSTLS_ROOT/build/guest/serial-$mode.log
cmd=()
while (($#)); do
	case $1 in
	--no-module) load_kstls=0 ;;
	--insmod | --tests | --only | --extra | --timeout | --log)
		(($# >= 2)) || die "$1 needs an argument"
		case $1 in
		--insmod) insmods+=("$2") ;;
		--tests) tests=$2 ;;
		--only) only=$2 ;;
		--extra) extra=$2 ;;
		--timeout) timeout=$2 ;;
		--log) log=$2 ;;
		esac
		shift
		;;
	--)
		shift
		cmd=("$@")
		break
		;;
	*) usage ;;
	esac
	shift
done
# A log left from an earlier boot must not be judged as this one's.
rm -f "$log"
[[ $timeout =~ ^[1-9][0-9]*$ ]] || die "--timeout wants a number of seconds, not '$timeout'"
[[ $test_timeout =~ ^[1-9][0-9]*$ ]] || die "VM_TEST_TIMEOUT wants seconds, not '$test_timeout'"
if [ "$mode" = run ]; then
	((${#cmd[@]})) || die "vm.sh run needs a command after --"
	[ -z "$tests$only" ] || die "--tests and --only apply to vm.sh check only"
else
	((${#cmd[@]} == 0)) || die "vm.sh check takes no command"
fi

KDIR=${KDIR:-$(bash "$KSTLS_ROOT/scripts/kernel.sh" dir)}
flavour=$(kdir_flavour "$KDIR")
KSTLS_KO=$(module_ko "$KDIR")
if [ "$flavour" = uml ]; then
	KIMAGE=$KDIR/linux
else
	KIMAGE=$KDIR/arch/x86/boot/bzImage
	command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 missing: run scripts/setup.sh"
fi
GEN_INIT_CPIO=$KDIR/usr/gen_init_cpio
[ -f "$KIMAGE" ] && [ -x "$GEN_INIT_CPIO" ] ||
	die "no built kernel in $KDIR: run scripts/kernel.sh build"
[ -x /bin/busybox ] || die "/bin/busybox missing: run scripts/setup.sh (package busybox-static)"
if [ "$load_kstls" = 1 ] && [ ! -f "$KSTLS_KO" ]; then
	die "$KSTLS_KO not found: build it with make -C $KSTLS_ROOT modules KDIR=$KDIR (or pass --no-module)"
fi
if [ -n "$extra" ]; then
	[ -d "$extra" ] || die "--extra $extra is not a directory"
	extra=$(realpath "$extra")
fi
if [ -n "$tests" ]; then
	[ -d "$tests" ] || die "--tests $tests is not a directory"
	tests=$(realpath "$tests")
fi
for t in $only; do
	[[ $t =~ ^[A-Za-z0-9_]+_test$ ]] || die "--only: '$t' is not the name of a *_test file"
	[ -x "${tests:-$KSTLS_ROOT/build/selftests}/$t" ] || die "--only: no test $t in ${tests:-build/selftests}"
done

GUEST_DIR=$KSTLS_ROOT/build/guest
MODULE_DIR=$KSTLS_ROOT/build/module
mkdir -p "$GUEST_DIR" "$(dirname "$log")"
stage=$(mktemp -d "$GUEST_DIR/initramfs.XXXXXX")
trap 'rm -rf "$stage"' EXIT

# gen_init_cpio lines for a copy of the host directory $1 at $2 in the guest (directories come
# before their contents, as find lists them). build/guest holds these very initramfs images and
# the logs, build/module the other kernels' module builds (kstls.ko is copied on its own),
# and cargo's incremental caches are large and of no use in the guest.
add_tree() {
	local src dst=$2
	src=$(realpath "$1")
	echo "dir $dst 0755 0 0"
	find "$src" -mindepth 1 \( -path "$(realpath -m "$GUEST_DIR")" -o -path "$(realpath -m "$MODULE_DIR")" -o -name incremental \
		-o -name .fingerprint \) -prune -o -printf '%y %m %s %p %l\n' |
		awk -v src="$src" -v dst="$dst" -v max=$((MAX_FILE_MB << 20)) '
		function skip(why) { print "kstls: warning: not copied to the guest (" why "): " $4 > "/dev/stderr" }
		NF > ($1 == "l" ? 5 : 4) { skip("white space in the name"); next }
		{ g = dst substr($4, length(src) + 1) }
		$1 == "d" { print "dir", g, $2, 0, 0 }
		$1 == "f" && $3 > max { skip("larger than " max " bytes"); next }
		$1 == "f" { print "file", g, $4, $2, 0, 0 }
		$1 == "l" { print "slink", g, $5, 777, 0, 0 }'
}

# The initramfs: busybox, /init, the host's dynamic loaders, the modules, build/ and the job.
{
	echo "dir /dev 0755 0 0"
	echo "nod /dev/console 0600 0 0 c 5 1"
	for d in /bin /proc /sys /tmp /root /mnt /mnt/extra /lib /lib/$MULTIARCH /lib64 /kstls \
		/kstls/modules; do
		echo "dir $d 0755 0 0"
	done
	echo "file /bin/busybox /bin/busybox 0755 0 0"
	echo "file /init $KSTLS_ROOT/scripts/guest-init.sh 0755 0 0"
	for l in "${GLIBC_LIBS[@]}"; do
		[ -e "/lib/$MULTIARCH/$l" ] || continue
		echo "file /lib/$MULTIARCH/$l $(realpath "/lib/$MULTIARCH/$l") 0755 0 0"
	done
	echo "slink /lib64/ld-linux-x86-64.so.2 /lib/$MULTIARCH/ld-linux-x86-64.so.2 0777 0 0"
	if [ -e /lib/ld-musl-x86_64.so.1 ]; then
		echo "file /lib/ld-musl-x86_64.so.1 $(realpath /lib/ld-musl-x86_64.so.1) 0755 0 0"
	fi
	for spec in "${insmods[@]}"; do
		read -r ko _ <<<"$spec"
		[ -f "$ko" ] || die "--insmod: no module file '$ko'"
		echo "file /kstls/modules/$(basename "$ko") $(realpath "$ko") 0644 0 0"
	done
	if [ "$load_kstls" = 1 ]; then
		echo "file /kstls/kstls.ko $KSTLS_KO 0644 0 0"
	fi
	if [ -d "$KSTLS_ROOT/build" ]; then
		add_tree "$KSTLS_ROOT/build" /kstls/build
	else
		echo "dir /kstls/build 0755 0 0"
	fi
	if [ -n "$tests" ]; then
		add_tree "$tests" /kstls/tests
	fi
	for f in vm.conf modules.list cmd; do
		echo "file /kstls/$f $stage/$f 0644 0 0"
	done
} >"$stage/initramfs.list"

# modules.list: "NAME GUEST-PATH [PARAMS...]" per module, in load order (kstls.ko last).
{
	for spec in "${insmods[@]}"; do
		read -r ko params <<<"$spec"
		name=$(basename "$ko" .ko)
		echo "${name//-/_} /kstls/modules/$(basename "$ko") $params"
	done
	if [ "$load_kstls" = 1 ]; then
		echo "kstls /kstls/kstls.ko"
	fi
} >"$stage/modules.list"
cat >"$stage/vm.conf" <<EOF
VM_MODE=$mode
VM_TESTDIR=$([ -n "$tests" ] && echo /kstls/tests || echo /kstls/build/selftests)
VM_TEST_TIMEOUT=$test_timeout
VM_ONLY='$only'
VM_EXTRA=$([ -z "$extra" ] && echo 0 || { [ "$flavour" = uml ] && echo hostfs || echo 9p; })
VM_EXTRA_DIR='${extra//\'/}'
VM_KMEMLEAK=$(grep -qs '^CONFIG_DEBUG_KMEMLEAK=y' "$KDIR/.config" && echo 1 || echo 0)
VM_DEADLINE=$((timeout > 40 ? timeout - 20 : timeout / 2))
EOF
# One word is a shell command, passed as it is; several are an argument vector, each word quoted
# ('...', with ' as '\'') so that the guest's sh -c sees the same words.
if ((${#cmd[@]} == 1)); then
	printf '%s\n' "${cmd[0]}" >"$stage/cmd"
else
	sq="'\\''"
	for w in "${cmd[@]}"; do printf "'%s' " "${w//\'/$sq}"; done >"$stage/cmd"
	echo >>"$stage/cmd"
fi

"$GEN_INIT_CPIO" "$stage/initramfs.list" >"$stage/initramfs.cpio" ||
	die "gen_init_cpio failed on $stage/initramfs.list"

grep -qs '^CONFIG_SLUB_DEBUG=y' "$KDIR/.config" && CMDLINE+=(slub_debug=FZPU)
if [ "$flavour" = uml ]; then
	# UML runs as host processes of this user (its memory: a file in /dev/shm of mem= bytes).
	[ -z "$extra" ] || [[ $extra != *[,\ \']* ]] ||
		die "--extra: under UML (hostfs) the directory's path must not contain a comma, space or quote"
	guest=("$KIMAGE" "${UML_CMDLINE[@]}" "initrd=$stage/initramfs.cpio" "${CMDLINE[@]}")
else
	guest=(qemu-system-x86_64 -accel tcg -cpu max -smp 2 -m 1G -nographic -no-reboot
		-kernel "$KIMAGE" -initrd "$stage/initramfs.cpio"
		-append "${QEMU_CMDLINE[*]} ${CMDLINE[*]}")
	if [ -n "$extra" ]; then
		# QEMU option values escape a comma by doubling it.
		guest+=(-virtfs "local,path=${extra//,/,,},mount_tag=extra,security_model=none,readonly=on")
	fi
fi

say "booting the $flavour guest ($mode, limit ${timeout} s, initramfs $(du -h "$stage/initramfs.cpio" | cut -f1)), log: $log"
t0=$SECONDS
qrc=0
timeout -k 10 "$timeout" "${guest[@]}" </dev/null 2>&1 | tee "$log" |
	awk '{ sub(/\r$/, "") } /^KSTLS-VM: (exit rc=|dmesg-begin)/ { on = 0 } on { print; fflush() }
		/^KSTLS-VM: run-begin$/ { on = 1 }' || qrc=${PIPESTATUS[0]}
say "guest ran for $((SECONDS - t0)) s"

if ! grep -aq '^KSTLS-VM: end[[:space:]]*$' "$log"; then
	if [ "$qrc" = 124 ]; then
		say "error: the guest did not finish within $timeout s (--timeout / VM_TIMEOUT)"
	else
		say "error: the guest stopped before the end (qemu status $qrc); last lines of $log:"
		tail -n 25 "$log" | tr -d '\r' >&2
	fi
fi

if [ "$mode" = check ]; then
	grep -aq '^KSTLS-VM: end[[:space:]]*$' "$log" || exit 1
	say "judge the log with: scripts/results.py $log"
	exit 0
fi

status=$(sed -n 's/^KSTLS-VM: exit rc=\([0-9]\{1,\}\).*/\1/p' "$log" | tail -n 1)
if [ -z "$status" ]; then
	[ "$qrc" = 124 ] && exit 124
	exit 125
fi
if ! verdict=$(python3 "$KSTLS_ROOT/scripts/results.py" --run "$log"); then
	say "WARNING: the guest kernel reported problems (full log: $log):"
	sed '$d' <<<"$verdict" >&2
fi
exit "$status"
