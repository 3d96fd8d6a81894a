#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# demo.sh - what `make demo` runs: the setup and builds of `make check`, then one boot of the
# guest with kstls.ko loaded that runs /kstls/build/demo/kstls-demo (built into build/demo/).
# Without that program it shows what the module registered instead: /proc/misc, /dev/kstls and
# the module's kernel log lines. Exits with the status of the demo (or of `ls -l /dev/kstls`).
# Environment: VM_TIMEOUT, VM_EXTRA as for scripts/vm.sh.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

KDIR=$("$KSTLS_ROOT/scripts/check.sh" --build-only)
export KDIR
exec "$KSTLS_ROOT/scripts/vm.sh" run -- '
if [ -x /kstls/build/demo/kstls-demo ]; then
	exec /kstls/build/demo/kstls-demo
fi
echo "no build/demo/kstls-demo; what kstls.ko registered:"
echo "$ cat /proc/misc"
cat /proc/misc
echo "$ ls -l /dev/kstls"
ls -l /dev/kstls
rc=$?
echo "$ dmesg | grep kstls"
dmesg | grep kstls
exit $rc'
