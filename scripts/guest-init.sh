#!/bin/busybox sh
# SPDX-License-Identifier: GPL-2.0
#
# guest-init.sh - /init of the kstls test guest (busybox sh); scripts/vm.sh puts it into the
# initramfs together with /kstls/vm.conf, /kstls/modules.list and, in run mode, /kstls/cmd.
#
# It mounts the pseudo file systems, loads the modules of modules.list in order, runs the job
# (check: every executable *_test in $VM_TESTDIR, sorted; run: the command in /kstls/cmd with
# sh -c), unloads the modules in reverse order, scans for leaks, dumps the kernel log and powers
# off. Kernel messages stay off the console while the job runs so they cannot cut into its
# output; the dump at the end is what gets parsed. A watchdog dumps the kernel log and powers
# off at $VM_DEADLINE s of uptime should anything hang. Every line the host parses starts with
# "KSTLS-VM: " (the protocol is described in scripts/results.py).

export PATH=/bin HOME=/root TMPDIR=/tmp

mark() { echo "KSTLS-VM: $*"; }

# Uptime in centiseconds (/proc/uptime has exactly two decimals; "1" keeps "08" from being octal).
now_cs() {
	read -r up _ </proc/uptime
	echo $((${up%.*} * 100 + 1${up#*.} - 100))
}

/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t debugfs debugfs /sys/kernel/debug
mount -t tmpfs tmpfs /tmp
. /kstls/vm.conf
dmesg -n 1
mark "boot $(uname -r), uptime $(cut -d' ' -f1 /proc/uptime) s"

dump_kernel_log() {
	mark "dmesg-begin"
	dmesg
	mark "dmesg-end"
}

# Should the job or the teardown hang, dump the kernel log anyway (with the blocked tasks, when
# the kernel has sysrq) before the host's time limit ends the guest.
(
	now=$(($(now_cs) / 100))
	sleep $((VM_DEADLINE > now ? VM_DEADLINE - now : 1))
	mark "error: the guest did not finish within $VM_DEADLINE s of boot"
	[ -w /proc/sysrq-trigger ] && echo w >/proc/sysrq-trigger
	dump_kernel_log
	poweroff -f
) &
watchdog=$!

# The host directory of --extra: a 9p share under QEMU, the host's file system under UML.
case $VM_EXTRA in
9p)
	mount -t 9p -o trans=virtio,version=9p2000.L,ro extra /mnt/extra ||
		mark "error: cannot mount the 9p share 'extra' on /mnt/extra"
	;;
hostfs)
	mount -t hostfs -o "$VM_EXTRA_DIR" -r none /mnt/extra ||
		mark "error: cannot mount $VM_EXTRA_DIR (hostfs) on /mnt/extra"
	;;
esac

# KUnit suites built into the kernel run at boot, before this line reaches the kernel log; the
# host counts only the suites after it (those of the modules loaded here).
echo "guest-init: loading modules" >/dev/kmsg
# memory: MemFree and Slab, to compare before the modules load and after they unload.
memory() { awk '/^(MemFree|Slab):/ {printf "%s %s kB ", $1, $2}' /proc/meminfo; }
mark "memory before load: $(memory)"
loaded=
while read -r name path args; do
	# $args is split on purpose: it holds the module parameters.
	insmod "$path" $args
	rc=$?
	mark "insmod $name rc=$rc"
	[ $rc = 0 ] && loaded="$name $loaded"
done </kstls/modules.list

# kill_session SID: SIGKILL every process of session SID. (The kselftest harness puts each test
# in a process group of its own, so killing the group of the binary is not enough.)
kill_session() {
	sid=$1
	for stat in /proc/[0-9]*/stat; do
		read -r line 2>/dev/null <"$stat" || continue
		pid=${stat#/proc/}
		# The fields after "(comm) ": state ppid pgrp session ...
		set -- ${line##*) }
		[ "$4" = "$sid" ] && kill -KILL "${pid%/stat}" 2>/dev/null
	done
}

# Each test binary ($VM_ONLY, or every *_test) runs from its directory in a session of its own,
# killed after the time limit; whatever it leaves behind (a forked test that outlived the
# harness) is killed with the session so that it cannot keep a module busy. "timeout" on the end marker tells a binary killed by the
# limit from one that died of its own signal.
run_tests() {
	cd "$VM_TESTDIR" 2>/dev/null || return
	for t in ${VM_ONLY:-*_test}; do
		[ -f "$t" ] && [ -x "$t" ] || continue
		mark "test-begin $t"
		t0=$(now_cs)
		timeout -s KILL "$VM_TEST_TIMEOUT" setsid "./$t" </dev/null &
		session=$!
		wait $session
		rc=$?
		kill_session $session
		late=
		[ $rc -ge 128 ] && [ $(($(now_cs) - t0)) -ge $((VM_TEST_TIMEOUT * 100)) ] && late=" timeout"
		mark "test-end $t rc=$rc$late"
	done
}

mark "run-begin"
cd /kstls
if [ "$VM_MODE" = check ]; then
	run_tests
	rc=0
else
	sh -c "$(cat /kstls/cmd)" </dev/null
	rc=$?
fi
mark "exit rc=$rc"
cd /

# A module that does not unload is still in use: show its reference count and the processes
# (kernel threads left out).
for name in $loaded; do
	rmmod "$name"
	rc=$?
	mark "rmmod $name rc=$rc"
	[ $rc = 0 ] || { grep "^$name " /proc/modules; ps -o pid,stat,args | grep -v ' \[.*\]$'; }
done
mark "memory after unload: $(memory)"

# kmemleak reports an object only when it is at least 5 s old at the start of a scan and its
# contents did not change since the previous scan: scan once now, and again when everything
# allocated before the unload is old enough. A kernel built without it (prod, uml) says so.
leaks=/sys/kernel/debug/kmemleak
deadline=$(($(now_cs) + 550))
if [ "$VM_KMEMLEAK" = 0 ]; then
	mark "kmemleak: not in this kernel"
elif echo scan >$leaks 2>/dev/null; then
	while [ "$(now_cs)" -lt $deadline ]; do sleep 0.25; done
	echo scan >$leaks
	mark "kmemleak-begin"
	cat $leaks
	mark "kmemleak-end"
else
	mark "error: kmemleak is not available (not configured, or it disabled itself)"
fi

kill $watchdog
dump_kernel_log
mark "end"
poweroff -f
sleep 2
# Without a working ACPI poweroff, a reboot also ends QEMU (it runs with -no-reboot).
reboot -f
