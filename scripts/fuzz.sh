#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# fuzz.sh - what `make fuzz` runs: selftests/fuzz_test alone in the guest, long.
#
#   fuzz.sh [DURATION=s] [SEED=n] [IOCTLS=n] [EXITS=n]
#
# DURATION (default 600) bounds the run in seconds; SEED replays a run's sequences; with both
# IOCTLS and EXITS the run ends once both counts are reached. Each value must be a whole decimal
# number (an empty one means "not set"): anything else is refused before anything is built, so
# that no word of it reaches the guest's command line.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

DURATION=600 SEED= IOCTLS= EXITS=
for a in "$@"; do
	case $a in
	DURATION=* | SEED=* | IOCTLS=* | EXITS=*) ;;
	*) die "fuzz.sh: unknown argument '$a' (DURATION=, SEED=, IOCTLS=, EXITS=)" ;;
	esac
	name=${a%%=*} value=${a#*=}
	if [ -n "$value" ] && ! [[ $value =~ ^[0-9]{1,10}$ ]]; then
		die "make fuzz: $name must be a whole number, not '$value'"
	fi
	printf -v "$name" '%s' "$value"
done
[ -n "$DURATION" ] && ((10#$DURATION > 0)) || die "make fuzz: DURATION must be at least 1 second"
DURATION=$((10#$DURATION))

env=(KSTLS_FUZZ_SECONDS=$DURATION KSTLS_FUZZ_CHURNERS=4)
[ -z "$SEED" ] || env+=("KSTLS_FUZZ_SEED=$((10#$SEED))")
[ -z "$IOCTLS" ] || env+=("KSTLS_FUZZ_IOCTLS=$((10#$IOCTLS))")
[ -z "$EXITS" ] || env+=("KSTLS_FUZZ_EXITS=$((10#$EXITS))")

"$KSTLS_ROOT/scripts/check.sh" --build-only >/dev/null
VM_TIMEOUT=$((DURATION + 600)) VM_TEST_TIMEOUT=$((DURATION + 300)) \
	exec "$KSTLS_ROOT/scripts/vm.sh" run -- env "${env[@]}" ./build/selftests/fuzz_test
