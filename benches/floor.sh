#!/usr/bin/env bash
# The instruction floor (issue 10), counted by benches/instructions.sh exactly as the module
# is: benches/floor/mod_hooks_floor.c built twice, "hooks" (the hooks the module needs, doing
# nothing) and "work" (-DFLOOR_WORK: the least tracking the SPEC asks, as tight C). Both
# paths (new connection, keep-alive request) for each. MODULE_SET passes through (minimal,
# debian). Needs apxs (apache2-dev) and valgrind.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=$ROOT/build/floor
command -v apxs >/dev/null || { echo "floor: apxs not found (apt-get install apache2-dev)" >&2; exit 1; }
for variant in hooks work; do
    dir=$OUT/$variant
    mkdir -p "$dir"
    cp "$ROOT/benches/floor/mod_hooks_floor.c" "$dir/"
    flags=()
    [[ $variant == work ]] && flags=(-DFLOOR_WORK)
    (cd "$dir" && apxs "${flags[@]}" -Wc,-O2 -c mod_hooks_floor.c >/dev/null)
    chmod -R a+rX "$OUT"
    for ka in 0 1; do
        echo "== floor: $variant, ${MODULE_SET:-minimal} modules, KEEPALIVE=$ka"
        KEEPALIVE=$ka SOCKET_GUARD_SO=$dir/.libs/mod_hooks_floor.so bash "$ROOT/benches/instructions.sh"
    done
done
