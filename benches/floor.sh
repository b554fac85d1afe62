#!/usr/bin/env bash
# The instruction floor (issue 10): what Apache spends calling the hooks mod_socket_guard
# needs, with a C module whose hooks do nothing (benches/floor/mod_hooks_floor.c), counted by
# benches/instructions.sh exactly as the module is. MODULE_SET passes through (minimal,
# debian). Needs apxs (apache2-dev) and valgrind. Prints both paths' results.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=$ROOT/build/floor
mkdir -p "$OUT"
cp "$ROOT/benches/floor/mod_hooks_floor.c" "$OUT/"
(cd "$OUT" && apxs -c mod_hooks_floor.c >/dev/null)
SO=$OUT/.libs/mod_hooks_floor.so
chmod -R a+rX "$OUT"
for ka in 0 1; do
    KEEPALIVE=$ka SOCKET_GUARD_SO=$SO bash "$ROOT/benches/instructions.sh"
done
