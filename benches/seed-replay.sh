#!/usr/bin/env bash
# The headline benchmark (used by `make seed-replay`): does the site stay up when a share of its
# requests hang and the clients that sent them give up?
#
# Three arms, each on a fresh Apache (prefork, MaxRequestWorkers 20, KeepAlive Off, Timeout 120)
# on a random 127.0.0.1 port, with the same load from benches/seed_replay.py:
#   stock      no mod_socket_guard
#   autoclose  SocketGuardAutoClose On, CloseWaitTimeout 2s, ScanInterval 500ms
#   abandoned  the same plus SocketGuardAbandonedTimeout 2s
# Load: crawler-like clients open a new connection RATE times a second and give up (close) after
# GIVE_UP seconds; every STUCK_EVERY-th request asks for a URL that never answers, alternately
# /cgi-bin/hang (a shell CGI sleeping 120 s: a script stuck on a slow database) and /stuck/
# (mod_proxy to a backend that accepts and never answers). A probe fetches /index.html every
# 100 ms (new connection, 1 s timeout). Sampled every 500 ms: CLOSE_WAIT sockets on the port,
# busy workers, memory (PSS) of the server's processes.
# Results: build/seed-replay.md (also printed); per-arm JSON and logs in build/seed-replay/.
#
# Environment: DURATION (55 s of load per arm), RATE (20 connections/s), STUCK_EVERY (10),
# GIVE_UP (3 s), ARMS ("stock autoclose abandoned"), CLOSE_WAIT_TIMEOUT_MS (2000),
# SCAN_INTERVAL_MS (500), ABANDONED_TIMEOUT_MS (2000), SOCKET_GUARD_SO
# (build/mod_socket_guard.so), SEED_REPLAY_KEEP=0 removes the run directory afterwards.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SO=${SOCKET_GUARD_SO:-$ROOT/build/mod_socket_guard.so}
DURATION=${DURATION:-55}
RATE=${RATE:-20}
STUCK_EVERY=${STUCK_EVERY:-10}
GIVE_UP=${GIVE_UP:-3}
ARMS=${ARMS:-stock autoclose abandoned}
CLOSE_WAIT_TIMEOUT_MS=${CLOSE_WAIT_TIMEOUT_MS:-2000}
SCAN_INTERVAL_MS=${SCAN_INTERVAL_MS:-500}
ABANDONED_TIMEOUT_MS=${ABANDONED_TIMEOUT_MS:-2000}
APACHE2=${APACHE2:-/usr/sbin/apache2}
MODULES_DIR=${APACHE_MODULES_DIR:-/usr/lib/apache2/modules}
PYTHON=${PYTHON:-python3}
DRIVER=$ROOT/benches/seed_replay.py
OUT_DIR=$ROOT/build/seed-replay
RESULTS=$ROOT/build/seed-replay.md
MAX_WORKERS=20

die() { printf 'seed-replay: %s\n' "$*" >&2; exit 1; }
note() { printf 'seed-replay: %s\n' "$*" >&2; }

[[ $DURATION =~ ^[1-9][0-9]*$ ]] && ((DURATION <= 600)) || die "DURATION must be 1..600 seconds, got '$DURATION'"
[[ $RATE =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "RATE must be a number of connections per second, got '$RATE'"
awk -v r="$RATE" 'BEGIN { exit !(r > 0 && r <= 200) }' || die "RATE must be within (0, 200], got '$RATE'"
[[ $STUCK_EVERY =~ ^[0-9]+$ ]] && ((STUCK_EVERY <= 1000)) || die "STUCK_EVERY must be 0..1000 (0: none stuck), got '$STUCK_EVERY'"
[[ $GIVE_UP =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "GIVE_UP must be a number of seconds, got '$GIVE_UP'"
for v in CLOSE_WAIT_TIMEOUT_MS SCAN_INTERVAL_MS ABANDONED_TIMEOUT_MS; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive number of milliseconds, got '${!v}'"
done
[[ -n ${ARMS// /} ]] || die "ARMS is empty (stock, autoclose, abandoned)"
for arm in $ARMS; do
    case $arm in stock | autoclose | abandoned) ;; *) die "unknown arm '$arm' in ARMS (stock, autoclose, abandoned)" ;; esac
done
[[ -x $APACHE2 ]] || die "$APACHE2 not found: run scripts/bootstrap.sh"
for m in mpm_prefork authz_core authz_host mime dir alias cgi proxy proxy_http status; do
    [[ -e $MODULES_DIR/mod_$m.so ]] || die "$MODULES_DIR/mod_$m.so not found (apache2 package incomplete?)"
done
command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found (the load driver needs Python 3, standard library only)"
command -v ss >/dev/null 2>&1 || die "ss not found: run scripts/bootstrap.sh"
command -v setsid >/dev/null 2>&1 || die "setsid not found (util-linux)"
if [[ " $ARMS " == *" autoclose "* || " $ARMS " == *" abandoned "* ]]; then
    [[ -e $SO ]] || die "module $SO not found: run 'make build' (or set SOCKET_GUARD_SO)"
    SO=$(cd "$(dirname "$SO")" && pwd)/$(basename "$SO")
fi
[[ $(id -u) -eq 0 ]] || note "not root: the server runs as $(id -un); the module's stopping of abandoned work may be limited"

mkdir -p "$OUT_DIR"
WORK=$(mktemp -d "$OUT_DIR/run.XXXXXX")
chmod 0755 "$WORK" # mktemp makes it 0700; the server runs as www-data when we are root

# --- servers ---------------------------------------------------------------------------------
current_dir=""

stop_server() { # stop_server DIR -- stop the Apache of DIR by its pid file, then its leftovers
    local dir=$1
    [[ -s $dir/apache2.pid ]] || return 0
    "$PYTHON" "$DRIVER" stop --pidfile "$dir/apache2.pid" --conf "$dir/apache2.conf" \
        --timeout 20 --report "$dir/left-behind.json" || true
}

cleanup() {
    local rc=$?
    [[ -n $current_dir ]] && stop_server "$current_dir"
    current_dir=""
    if [[ ${SEED_REPLAY_KEEP:-1} == 0 ]]; then rm -rf "$WORK"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_in_use() { ss -Htan "( sport = :$1 )" 2>/dev/null | grep -q .; }

free_port() { # free_port [EXCEPT]
    local p i
    for ((i = 0; i < 200; i++)); do
        p=$((20000 + RANDOM % 12000))
        [[ $p != "${1:-}" ]] || continue
        port_in_use "$p" || { printf '%s\n' "$p"; return 0; }
    done
    die "no free port found between 20000 and 32000"
}

ms() { printf '%sms' "$1"; }

# write_conf DIR PORT BACKEND_PORT ARM
write_conf() {
    local dir=$1 port=$2 backend=$3 arm=$4 module_lines="" user_lines types_line i
    mkdir -p "$dir/htdocs" "$dir/cgi-bin"
    printf '<!DOCTYPE html>\n<html><head><title>seed-replay</title></head><body><p>healthy</p></body></html>\n' \
        >"$dir/htdocs/index.html"
    { # a ~4 KB page for the crawlers
        printf '<!DOCTYPE html>\n<html><head><title>catalogue</title></head><body>\n'
        for ((i = 0; i < 60; i++)); do printf '<p><a href="/item/%d">item %d</a> lorem ipsum dolor</p>\n' "$i" "$i"; done
        printf '</body></html>\n'
    } >"$dir/htdocs/page.html"
    cat >"$dir/cgi-bin/hang" <<'EOF'
#!/bin/sh
# A script stuck on a slow database: no output for 120 s.
sleep 120
printf 'Content-Type: text/plain\r\n\r\nfinally\n'
EOF
    chmod 0755 "$dir" "$dir/htdocs" "$dir/cgi-bin" "$dir/cgi-bin/hang"
    chmod 0644 "$dir/htdocs/index.html" "$dir/htdocs/page.html"
    if [[ $arm != stock ]]; then
        module_lines="LoadModule socket_guard_module \"$SO\"
LogLevel warn socket_guard:notice
SocketGuardAutoClose On
SocketGuardCloseWaitTimeout $(ms "$CLOSE_WAIT_TIMEOUT_MS")
SocketGuardScanInterval $(ms "$SCAN_INTERVAL_MS")"
        if [[ $arm == abandoned ]]; then
            module_lines+="
SocketGuardAbandonedTimeout $(ms "$ABANDONED_TIMEOUT_MS")"
        fi
        module_lines+="
<Location \"/socket-status\">
    SetHandler socket-status
    Require local
</Location>"
    else
        module_lines="# stock Apache: mod_socket_guard not loaded"
    fi
    user_lines="# not root: the server runs as $(id -un)"
    [[ $(id -u) -eq 0 ]] && user_lines=$'User www-data\nGroup www-data'
    types_line="AddType text/html .html"
    [[ -r /etc/mime.types ]] && types_line="TypesConfig /etc/mime.types"
    cat >"$dir/apache2.conf" <<EOF
# Generated by benches/seed-replay.sh (arm: $arm)
ServerRoot "$dir"
ServerName 127.0.0.1
Listen 127.0.0.1:$port
PidFile "$dir/apache2.pid"
DefaultRuntimeDir "$dir"
ErrorLog "$dir/error.log"
LogLevel warn
LoadModule mpm_prefork_module "$MODULES_DIR/mod_mpm_prefork.so"
LoadModule authz_core_module "$MODULES_DIR/mod_authz_core.so"
LoadModule authz_host_module "$MODULES_DIR/mod_authz_host.so"
LoadModule mime_module "$MODULES_DIR/mod_mime.so"
LoadModule dir_module "$MODULES_DIR/mod_dir.so"
LoadModule alias_module "$MODULES_DIR/mod_alias.so"
LoadModule cgi_module "$MODULES_DIR/mod_cgi.so"
LoadModule proxy_module "$MODULES_DIR/mod_proxy.so"
LoadModule proxy_http_module "$MODULES_DIR/mod_proxy_http.so"
LoadModule status_module "$MODULES_DIR/mod_status.so"
$user_lines
StartServers $MAX_WORKERS
MinSpareServers 5
MaxSpareServers $MAX_WORKERS
ServerLimit $MAX_WORKERS
MaxRequestWorkers $MAX_WORKERS
MaxConnectionsPerChild 0
ListenBacklog 511
KeepAlive Off
# Long enough that Apache does not end the stuck requests itself within the run.
Timeout 120
ProxyTimeout 120
$types_line
DirectoryIndex index.html
<Directory />
    AllowOverride None
    Require all denied
</Directory>
DocumentRoot "$dir/htdocs"
<Directory "$dir/htdocs">
    Require all granted
</Directory>
ScriptAlias /cgi-bin/ "$dir/cgi-bin/"
<Directory "$dir/cgi-bin">
    Options +ExecCGI
    Require all granted
</Directory>
# A backend that accepts connections and never answers (run by benches/seed_replay.py).
ProxyPass /stuck/ http://127.0.0.1:$backend/ retry=0 disablereuse=On
<Location "/server-status">
    SetHandler server-status
    Require local
</Location>
$module_lines
EOF
}

# run_arm NAME LABEL
run_arm() {
    local arm=$1 label=$2 dir port backend out with=0
    dir=$WORK/$arm
    port=$(free_port)
    backend=$(free_port "$port")
    [[ $arm != stock ]] && with=1
    write_conf "$dir" "$port" "$backend" "$arm"
    if ! out=$("$APACHE2" -f "$dir/apache2.conf" -t 2>&1); then
        printf '%s\n' "$out" >&2
        die "config test failed for $dir/apache2.conf"
    fi
    echo "== arm $arm: $label (port $port, backend $port -> $backend, ${DURATION}s)"
    current_dir=$dir
    # Its own session and process group: at a stop, prefork signals its whole process group,
    # which must not include this script. (setsid does not fork here: a background job of a
    # non-interactive shell is not a group leader, so $! is Apache's pid.)
    setsid "$APACHE2" -f "$dir/apache2.conf" -D FOREGROUND </dev/null >>"$dir/stdout.log" 2>&1 &
    apache_bg=$!
    local i
    for ((i = 0; i < 100; i++)); do
        [[ -s $dir/apache2.pid ]] && break
        kill -0 "$apache_bg" 2>/dev/null || die "Apache exited at start; see $dir/error.log"
        sleep 0.1
    done
    [[ -s $dir/apache2.pid ]] || die "Apache did not write its pid file within 10 s; see $dir/error.log"
    "$PYTHON" "$DRIVER" ready --port "$port" --timeout 10 || die "see $dir/error.log"
    sleep 1 # let prefork finish starting its StartServers children
    "$PYTHON" "$DRIVER" load --arm "$arm" --label "$label" --port "$port" --backend-port "$backend" \
        --pidfile "$dir/apache2.pid" --module "$with" --duration "$DURATION" --rate "$RATE" \
        --stuck-every "$STUCK_EVERY" --give-up "$GIVE_UP" --max-workers "$MAX_WORKERS" \
        --error-log "$dir/error.log" --json "$dir/result.json"
    stop_server "$dir"
    current_dir=""
    wait "$apache_bg" 2>/dev/null || true
    results+=("$dir/result.json")
}

label_of() {
    case $1 in
        stock) echo "stock Apache" ;;
        autoclose) echo "AutoClose On" ;;
        abandoned) echo "AutoClose On + AbandonedTimeout" ;;
    esac
}

results=()
note "results go to ${RESULTS#"$ROOT"/}; run directory ${WORK#"$ROOT"/}"
for arm in $ARMS; do
    run_arm "$arm" "$(label_of "$arm")"
done

echo
"$PYTHON" "$DRIVER" report --out "$RESULTS" --date "$(date -u '+%Y-%m-%d %H:%M UTC')" \
    --version "$("$APACHE2" -v | sed -n 's/^Server version: //p')" --nproc "$(nproc)" \
    --close-wait-timeout-ms "$CLOSE_WAIT_TIMEOUT_MS" --scan-interval-ms "$SCAN_INTERVAL_MS" \
    "${results[@]}"
echo
echo "results written to ${RESULTS#"$ROOT"/}"
