#!/usr/bin/env bash
# `make fuzz`: the parsers' property tests (src/fuzz/) with FUZZ_CASES cases in all, spread
# evenly over the properties. Prints one line per property (cases, seconds) and the totals;
# the whole output is kept in target/fuzz.log. On a failure, the property's shrunk input.
# See docs/QUALITY.md, "Fuzzing".
set -euo pipefail
cd "$(dirname "$0")/.."

cargo=${CARGO:-cargo}
cases=${FUZZ_CASES:-1000000}
log=${CARGO_TARGET_DIR:-target}/fuzz.log
mkdir -p "$(dirname "$log")"

# Build first, so the time below is the properties' only.
"$cargo" test --release --lib --no-run
echo "fuzz: FUZZ_CASES=$cases, spread over the properties in src/fuzz/mod.rs (log: $log)"
start=$(date +%s.%N)
status=0
FUZZ_CASES=$cases "$cargo" test --release --lib fuzz:: -- --nocapture >"$log" 2>&1 || status=$?
end=$(date +%s.%N)

grep -a '^fuzz: ' "$log" | sort || true
grep -a '^fuzz: ' "$log" | awk -v start="$start" -v end="$end" '
    { n++; cases += $3; secs += $5 }
    END { printf "fuzz: %d properties, %d cases, %.1f s of property time, %.1f s wall\n",
                 n, cases, secs, end - start }'
if [[ $status -ne 0 ]]; then
    echo "fuzz: FAILED; the shrunk inputs:"
    grep -a -A40 '^property ' "$log" || tail -50 "$log"
fi
exit "$status"
