#!/usr/bin/env bash
# Deterministic per-connection cost of the module: user-space instructions counted by
# callgrind for Apache in single-process mode (-X), with and without the module.
#
# Wall-clock and /proc CPU time on a shared 2-core VM vary by ±10% between identical runs —
# far more than the module costs — so this counts instructions instead, which repeat exactly.
# Each configuration serves N1 and then N2 requests, each on a new connection (KeepAlive Off:
# the per-connection hooks' worst case); the slope (I(N2) - I(N1)) / (N2 - N1) cancels
# start-up and shutdown. Kernel time (the TCP stack) is not counted by callgrind, so the
# instruction ratio overstates the module's share of real CPU time.
#
# KEEPALIVE=1 measures the other path instead: all requests on one keep-alive connection
# (ab -k), i.e. the per-request hooks only.
#
# MODULE_SET=debian loads what Debian's apache2 package enables by default (the modules and
# their .conf files from /etc/apache2/mods-available, an access log in the combined format)
# instead of the bare minimum: the same added instructions, divided by what a stock server does.
#
# Environment: SOCKET_GUARD_SO, N1 (500), N2 (2500), KEEPALIVE (0), MODULE_SET (minimal),
# INSTR_RESULT (a file to write "without=N with=N" to, for benches/bench.py). Needs valgrind.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SO=${SOCKET_GUARD_SO:-$ROOT/build/mod_socket_guard.so}
SO=$(cd "$(dirname "$SO")" && pwd)/$(basename "$SO")
N1=${N1:-500}
N2=${N2:-2500}
MODULES_DIR=${APACHE_MODULES_DIR:-/usr/lib/apache2/modules}
KEEPALIVE=${KEEPALIVE:-0}
MODULE_SET=${MODULE_SET:-minimal}
# Debian's default set (a2enmod state of a fresh apache2 install), mpm_event aside.
DEBIAN_MODULES="access_compat alias auth_basic authn_core authn_file authz_host authz_user autoindex deflate dir env filter mime negotiation reqtimeout setenvif status"
if [[ $KEEPALIVE == 1 ]]; then KA_CONF="KeepAlive On
MaxKeepAliveRequests 0"; AB_K=(-k); WHAT="request, all on one keep-alive connection"; else
    KA_CONF="KeepAlive Off"; AB_K=(); WHAT="connection (1 request each, KeepAlive Off)"; fi
for c in valgrind callgrind_annotate ab curl runuser; do
    command -v "$c" >/dev/null || { echo "instructions: $c not found (apt-get install valgrind apache2-utils curl)" >&2; exit 1; }
done

WORK=$(mktemp -d /tmp/sg-instr.XXXXXX)
chmod 0777 "$WORK"
mkdir -m 0777 "$WORK/run" "$WORK/out" "$WORK/htdocs"
echo "hello" >"$WORK/htdocs/index.html"
chmod 0644 "$WORK/htdocs/index.html"
# Unprivileged run: as root Apache would switch to www-data mid-way, and callgrind's output
# file (opened as root) would become unwritable.
AS=()
[[ $(id -u) == 0 ]] && AS=(runuser -u www-data --)
VG_PID=
cleanup() {
    if [[ -n $VG_PID ]] && kill -0 "$VG_PID" 2>/dev/null; then kill -TERM "$VG_PID" 2>/dev/null || true; wait "$VG_PID" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

# A free port: bind-test a few random high ports with bash's /dev/tcp (nothing listening = free).
port=
for _ in $(seq 50); do
    p=$((20000 + RANDOM % 40000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then port=$p; break; fi
done
[[ -n $port ]] || { echo "instructions: no free port found" >&2; exit 1; }

write_conf() { # write_conf NAME WITH_MODULE
    {
        echo "ServerRoot $WORK"
        echo "LoadModule mpm_event_module $MODULES_DIR/mod_mpm_event.so"
        echo "LoadModule authz_core_module $MODULES_DIR/mod_authz_core.so"
        if [[ $MODULE_SET == debian ]]; then
            for m in $DEBIAN_MODULES; do
                echo "LoadModule ${m}_module $MODULES_DIR/mod_$m.so"
                local conf=/etc/apache2/mods-available/$m.conf
                if [[ -f $conf ]]; then echo "Include $conf"; fi
            done
            echo "TypesConfig /etc/mime.types"
            echo 'LogFormat "%h %l %u %t \"%r\" %>s %O \"%{Referer}i\" \"%{User-Agent}i\"" combined'
            echo "CustomLog $WORK/$1.access.log combined"
        fi
        if [[ $2 == 1 ]]; then
            echo "LoadModule socket_guard_module $SO"
            # A long interval keeps the guard thread's (time-dependent) work out of the count.
            echo "SocketGuardScanInterval 60s"
        fi
        echo "Listen 127.0.0.1:$port"
        echo "ServerName 127.0.0.1"
        echo "PidFile $WORK/run/$1.pid"
        echo "DefaultRuntimeDir $WORK/run"
        echo "ErrorLog $WORK/$1.error.log"
        echo "LogLevel warn"
        echo "DocumentRoot $WORK/htdocs"
        echo "$KA_CONF"
    } >"$WORK/$1.conf"
}

count() { # count NAME N -> total instructions
    local name=$1 n=$2 i out=$WORK/out/cg.$1.$2
    rm -f "$WORK/$name.error.log" "$WORK/run/$name.pid"
    "${AS[@]}" valgrind --tool=callgrind --callgrind-out-file="$out" /usr/sbin/apache2 -X -f "$WORK/$name.conf" \
        >"$WORK/vg.$name.$n.log" 2>&1 &
    VG_PID=$!
    for i in $(seq 300); do
        curl -s -o /dev/null "http://127.0.0.1:$port/index.html" && break
        sleep 0.2
    done
    ab -q "${AB_K[@]}" -n "$n" -c 1 "http://127.0.0.1:$port/index.html" >/dev/null 2>&1
    kill -TERM "$(cat "$WORK/run/$name.pid")"
    wait "$VG_PID" || true
    VG_PID=
    callgrind_annotate "$out" 2>/dev/null | awk '/PROGRAM TOTALS/ && !done {gsub(",", "", $1); print $1; done = 1}'
}

write_conf without 0
write_conf with 1
declare -A per_conn
for name in without with; do
    a=$(count "$name" "$N1")
    b=$(count "$name" "$N2")
    per_conn[$name]=$(((b - a) / (N2 - N1)))
done
wo=${per_conn[without]}
w=${per_conn[with]}
printf '\nuser-space instructions per %s, callgrind:\n' "$WHAT"
printf '  without module: %d\n  with module:    %d\n  added:          %d (%.1f%% of Apache'"'"'s user-space instructions)\n' \
    "$wo" "$w" "$((w - wo))" "$(awk -v a="$w" -v b="$wo" 'BEGIN { printf "%.1f", (a - b) * 100 / b }')"
if [[ -n ${INSTR_RESULT:-} ]]; then
    printf 'without=%d with=%d n1=%d n2=%d\n' "$wo" "$w" "$N1" "$N2" >"$INSTR_RESULT"
fi
