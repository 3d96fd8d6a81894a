# SPDX-License-Identifier: GPL-2.0
#
# tap.sh - TAP results for the project's shell test scripts (sourced, not run): `tap` prints one
# result and counts it in n and failed, `tap_totals` the plan and the "N passed, N failed" line.

n=0
failed=0

# tap DESCRIPTION WHY [FILE...]: one TAP result, "ok" when WHY is empty, else "not ok" with WHY
# and the last lines of the files as diagnostics.
tap() {
	local desc=$1 why=$2
	shift 2
	n=$((n + 1))
	if [ -z "$why" ]; then
		echo "ok $n $desc"
		return
	fi
	failed=$((failed + 1))
	echo "not ok $n $desc"
	echo "# $why"
	for f in "$@"; do
		[ -f "$f" ] && tail -n 40 "$f" | sed 's/^/# /'
	done
}

# tap_totals: the plan and the totals line; the status is 1 when anything failed.
tap_totals() {
	echo "1..$n"
	echo "$((n - failed)) passed, $failed failed"
	((failed == 0))
}
