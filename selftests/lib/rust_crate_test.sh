#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
#
# rust_crate_test - the Rust crate's examples (userspace-lib/examples) as one TAP test: each
# example is one case, its output shown as diagnostics, and it passes when it exits with status
# 0 (the examples check what they print and exit 1 on any mismatch). userspace-lib/Makefile
# installs this script as build/selftests/rust_crate_test and the examples, stripped, in
# build/selftests/rust_crate/; the guest runs it with busybox sh.

cd "$(dirname "$0")" || exit 1
set -- threads self_register
echo "TAP version 13"
echo "1..$#"
n=0
failed=0
for ex in "$@"; do
	n=$((n + 1))
	echo "# rust_crate/$ex"
	out=$(./rust_crate/"$ex" 2>&1)
	rc=$?
	printf '%s\n' "$out" | sed 's/^/#   /'
	if [ "$rc" = 0 ]; then
		echo "ok $n $ex"
	else
		echo "# rust_crate/$ex exited with status $rc"
		echo "not ok $n $ex"
		failed=$((failed + 1))
	fi
done
echo "# $((n - failed)) passed, $failed failed"
[ "$failed" = 0 ]
