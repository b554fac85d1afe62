#!/usr/bin/env bash
# Runs a demo Apache httpd with mod_socket_guard from a generated config (used by `make run`).
#
#   scripts/run.sh                 generate build/run/apache2.conf and run Apache in the foreground
#                                  (Ctrl-C stops it)
#   scripts/run.sh --background    the same, detached; stop it with `scripts/run.sh --stop`
#   scripts/run.sh --stop          stop the server started from build/run (by its pid file only)
#   scripts/run.sh --config-only   only generate the config and print its path
#
# Environment:
#   PORT=8080            port on 127.0.0.1 (LISTEN_ADDR to change the address)
#   MPM=event            event | worker | prefork
#   RUN_DIR=build/run    where config, logs, pid file, docroot and cgi-bin go
#   SOCKET_GUARD_SO      module to load (default build/mod_socket_guard.so)
#   WITH_MODULE=1        0 runs the same config without mod_socket_guard
#   SCAN_INTERVAL=1s     SocketGuardScanInterval (scripts/demo.sh uses 500ms)
#   SHOP_TIMEOUT=5s      SocketGuardCloseWaitTimeout of shop.example.test (demo.sh: 3s)
#
# Two name-based vhosts share the port: www.example.test (SocketGuardAutoClose Off, also the
# default for requests by IP) and shop.example.test (SocketGuardAutoClose On, 5s timeout).
# /cgi-bin/slow?SLEEP=N answers after N seconds (default 30, at most 300), for CLOSE_WAIT demos.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PORT=${PORT:-8080}
MPM=${MPM:-event}
LISTEN_ADDR=${LISTEN_ADDR:-127.0.0.1}
RUN_DIR=${RUN_DIR:-$ROOT/build/run}
SOCKET_GUARD_SO=${SOCKET_GUARD_SO:-$ROOT/build/mod_socket_guard.so}
WITH_MODULE=${WITH_MODULE:-1}
SCAN_INTERVAL=${SCAN_INTERVAL:-1s}
SHOP_TIMEOUT=${SHOP_TIMEOUT:-5s}
APACHE2=${APACHE2:-/usr/sbin/apache2}
MODULES_DIR=${APACHE_MODULES_DIR:-/usr/lib/apache2/modules}

die() { printf 'run.sh: %s\n' "$*" >&2; exit 1; }

mode=foreground
case "${1:-}" in
    "" | --foreground) mode=foreground ;;
    --background | -b) mode=background ;;
    --stop) mode=stop ;;
    --config-only) mode=config ;;
    -h | --help) sed -n '2,21s/^# \{0,1\}//p' "$0"; exit 0 ;;
    *) die "unknown option '$1' (see --help)" ;;
esac

mkdir -p "$RUN_DIR"
RUN_DIR=$(cd "$RUN_DIR" && pwd)
CONF=$RUN_DIR/apache2.conf
PIDFILE=$RUN_DIR/apache2.pid

# The pid in PIDFILE when it is a live Apache started from this RUN_DIR's config, else nothing.
# Checking the command line guards against a stale pid file whose pid was reused.
running_pid() {
    local pid
    [[ -s $PIDFILE ]] || return 1
    pid=$(<"$PIDFILE")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    [[ -r /proc/$pid/cmdline ]] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$CONF" || return 1
    printf '%s\n' "$pid"
}

stop_server() {
    local pid i
    if ! pid=$(running_pid); then
        if [[ -e $PIDFILE ]]; then
            echo "no server running from $RUN_DIR (stale pid file removed)"
            rm -f "$PIDFILE"
        else
            echo "no server running from $RUN_DIR (no pid file)"
        fi
        return 0
    fi
    # A daemonized Apache leads its own process group; CGI scripts it spawned stay in that
    # group and can outlive it (a /cgi-bin/slow still sleeping), so they are stopped too.
    local pgid
    pgid=$(ps -o pgid= -p "$pid" 2>/dev/null | tr -d ' ') || pgid=
    echo "stopping Apache (pid $pid)"
    kill -TERM "$pid"
    for ((i = 0; i < 200; i++)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            if [[ $pgid == "$pid" ]]; then
                kill -TERM -- "-$pid" 2>/dev/null || true
            fi
            echo "stopped"
            return 0
        fi
        sleep 0.1
    done
    die "Apache (pid $pid) did not stop within 20s; check $RUN_DIR/error.log"
}

if [[ $mode == stop ]]; then
    stop_server
    exit 0
fi

if ! [[ $PORT =~ ^[0-9]+$ ]] || ((PORT < 1 || PORT > 65535)); then
    die "PORT must be a port number, got '$PORT'"
fi
for v in "$SCAN_INTERVAL" "$SHOP_TIMEOUT"; do
    [[ $v =~ ^[0-9]+(ms|s|m)?$ ]] || die "SCAN_INTERVAL/SHOP_TIMEOUT must be a duration like 500ms, 5s, 2m; got '$v'"
done
case "$MPM" in
    event | worker) CGI_MODULE=cgid ;;
    prefork) CGI_MODULE=cgi ;;
    *) die "MPM must be event, worker or prefork, got '$MPM'" ;;
esac
[[ -x $APACHE2 ]] || die "$APACHE2 not found: run scripts/bootstrap.sh (installs apache2)"
for m in "mpm_$MPM" authz_core authz_host mime dir alias status "$CGI_MODULE"; do
    [[ -e $MODULES_DIR/mod_$m.so ]] || die "$MODULES_DIR/mod_$m.so not found (apache2 package incomplete?)"
done
if [[ $WITH_MODULE == 1 ]]; then
    [[ -e $SOCKET_GUARD_SO ]] || die "module $SOCKET_GUARD_SO not found: run 'make build' first"
    SOCKET_GUARD_SO=$(cd "$(dirname "$SOCKET_GUARD_SO")" && pwd)/$(basename "$SOCKET_GUARD_SO")
fi

is_root=0
[[ $(id -u) -eq 0 ]] && is_root=1

# --- content -------------------------------------------------------------------------------
HTDOCS=$RUN_DIR/htdocs
CGI_DIR=$RUN_DIR/cgi-bin
mkdir -p "$HTDOCS" "$CGI_DIR"
cat >"$HTDOCS/index.html" <<'EOF'
<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>mod_socket_guard demo</title></head>
<body>
<h1>mod_socket_guard demo server</h1>
<ul>
<li><a href="/socket-status">/socket-status</a>
 (<a href="/socket-status?auto">?auto</a>, <a href="/socket-status?json">?json</a>,
 <a href="/socket-status?metrics">?metrics</a>, <a href="/socket-status?refresh=2">?refresh=2</a>)</li>
<li><a href="/server-status">/server-status</a></li>
<li><a href="/cgi-bin/slow?SLEEP=5">/cgi-bin/slow?SLEEP=5</a> (answers after 5 seconds)</li>
</ul>
</body></html>
EOF
cat >"$CGI_DIR/slow" <<'EOF'
#!/bin/sh
# Answers after SLEEP seconds (query parameter SLEEP=N, default 30, at most 300): a handler that
# is still busy when the client gives up, which leaves the client's socket in CLOSE_WAIT.
secs=30
case "&${QUERY_STRING:-}&" in
    *"&SLEEP="* | *"&sleep="*)
        v=${QUERY_STRING#*[Ss][Ll][Ee][Ee][Pp]=}
        v=${v%%&*}
        case "$v" in
            "" | *[!0-9]*) ;;
            *) secs=$v ;;
        esac
        ;;
esac
# Strip leading zeros and bound it (long digit strings are clamped before arithmetic).
secs=$(printf '%s' "$secs" | sed 's/^0*//')
[ -n "$secs" ] || secs=0
[ "${#secs}" -gt 3 ] && secs=300
[ "$secs" -gt 300 ] && secs=300
printf 'Content-Type: text/plain\r\n\r\n'
printf 'slow: sleeping %s s (pid %s)\n' "$secs" "$$"
# Sleep in 1s steps and give up as soon as the Apache process that started us is gone, so a
# stopped server leaves no script behind.
parent=$PPID
while [ "$secs" -gt 0 ]; do
    sleep 1
    kill -0 "$parent" 2>/dev/null || exit 0
    secs=$((secs - 1))
done
printf 'slow: done\n'
EOF
chmod 0755 "$RUN_DIR" "$HTDOCS" "$CGI_DIR" "$CGI_DIR/slow"
chmod 0644 "$HTDOCS/index.html"

# --- config --------------------------------------------------------------------------------
user_lines="# not root: the server runs as $(id -un)"
if [[ $is_root == 1 ]]; then
    user_lines=$'User www-data\nGroup www-data'
fi
module_line="# mod_socket_guard not loaded (WITH_MODULE=0)"
if [[ $WITH_MODULE == 1 ]]; then
    module_line="LoadModule socket_guard_module \"$SOCKET_GUARD_SO\""
fi
types_line="AddType text/html .html"
[[ -r /etc/mime.types ]] && types_line="TypesConfig /etc/mime.types"
error_log="\"$RUN_DIR/error.log\""
if [[ $mode == foreground ]]; then
    # Also show the log on the terminal; tee -i survives the Ctrl-C so shutdown lines are kept.
    error_log="\"||/usr/bin/tee -i -a $RUN_DIR/error.log\""
fi

cat >"$CONF" <<EOF
# Generated by scripts/run.sh — edits are overwritten on the next run.
ServerRoot "$RUN_DIR"
ServerName localhost
Listen $LISTEN_ADDR:$PORT
PidFile "$RUN_DIR/apache2.pid"
DefaultRuntimeDir "$RUN_DIR"
ErrorLog $error_log
LogLevel warn

LoadModule mpm_${MPM}_module "$MODULES_DIR/mod_mpm_$MPM.so"
LoadModule authz_core_module "$MODULES_DIR/mod_authz_core.so"
LoadModule authz_host_module "$MODULES_DIR/mod_authz_host.so"
LoadModule mime_module "$MODULES_DIR/mod_mime.so"
LoadModule dir_module "$MODULES_DIR/mod_dir.so"
LoadModule alias_module "$MODULES_DIR/mod_alias.so"
LoadModule status_module "$MODULES_DIR/mod_status.so"
LoadModule ${CGI_MODULE}_module "$MODULES_DIR/mod_$CGI_MODULE.so"
$module_line

$user_lines

# Worker and event take the same threaded-MPM settings.
<IfModule !mpm_prefork_module>
    StartServers 2
    ServerLimit 4
    ThreadsPerChild 25
    MaxRequestWorkers 100
    MinSpareThreads 25
    MaxSpareThreads 75
</IfModule>
<IfModule mpm_prefork_module>
    StartServers 4
    MinSpareServers 2
    MaxSpareServers 8
    MaxRequestWorkers 32
</IfModule>
<IfModule cgid_module>
    ScriptSock "$RUN_DIR/cgisock"
</IfModule>

Timeout 60
KeepAlive On
KeepAliveTimeout 5
$types_line
DirectoryIndex index.html
ExtendedStatus On
LogFormat "%h %l %u %t \"%r\" %>s %b \"%{Host}i\" \"%{User-Agent}i\" %Dus" socket_guard_demo
CustomLog "$RUN_DIR/access.log" socket_guard_demo

<Directory />
    AllowOverride None
    Require all denied
</Directory>
DocumentRoot "$HTDOCS"
<Directory "$HTDOCS">
    Require all granted
</Directory>
ScriptAlias /cgi-bin/ "$CGI_DIR/"
<Directory "$CGI_DIR">
    Options +ExecCGI
    Require all granted
</Directory>

<IfModule socket_guard_module>
    LogLevel warn socket_guard:info
    # Server-wide settings (the defaults, unless SCAN_INTERVAL is set).
    SocketGuardScanInterval $SCAN_INTERVAL
    SocketGuardRescue On
    SocketGuardHungChildTimeout 10s

    <Location "/socket-status">
        SetHandler socket-status
        Require local
    </Location>
</IfModule>
<Location "/server-status">
    SetHandler server-status
    Require local
</Location>

# The first vhost is also the default for requests to 127.0.0.1 without a known Host name.
<VirtualHost *:$PORT>
    ServerName www.example.test
    <IfModule socket_guard_module>
        SocketGuardAutoClose Off
    </IfModule>
</VirtualHost>

<VirtualHost *:$PORT>
    ServerName shop.example.test
    <IfModule socket_guard_module>
        SocketGuardAutoClose On
        SocketGuardCloseWaitTimeout $SHOP_TIMEOUT
    </IfModule>
</VirtualHost>
EOF

if [[ $mode == config ]]; then
    printf '%s\n' "$CONF"
    exit 0
fi

# --- start ---------------------------------------------------------------------------------
if pid=$(running_pid); then
    die "an Apache from $RUN_DIR is already running (pid $pid): 'make stop' first"
fi
rm -f "$PIDFILE"
if command -v ss >/dev/null 2>&1 && ss -Hltn "( sport = :$PORT )" 2>/dev/null | grep -q .; then
    die "port $PORT is already in use (ss -ltnp 'sport = :$PORT' shows by whom); try PORT=..."
fi
if [[ $is_root == 1 ]] && command -v runuser >/dev/null 2>&1; then
    if ! runuser -u www-data -- test -r "$HTDOCS/index.html" -a -x "$CGI_DIR/slow" 2>/dev/null; then
        echo "run.sh: warning: www-data cannot read $HTDOCS or $CGI_DIR (a parent directory" \
            "is not world-searchable); pages will answer 403. Use RUN_DIR=/tmp/... instead." >&2
    fi
fi
if ! out=$("$APACHE2" -f "$CONF" -t 2>&1); then
    printf '%s\n' "$out" >&2
    die "config test failed for $CONF"
fi

base="http://$LISTEN_ADDR:$PORT"
cat <<EOF
Apache $("$APACHE2" -v | sed -n 's/^Server version: //p') with mpm_$MPM, config $CONF
  $base/socket-status
  $base/socket-status?auto
  $base/socket-status?json
  $base/socket-status?metrics
  $base/server-status
  $base/cgi-bin/slow?SLEEP=30   (Host: shop.example.test has SocketGuardAutoClose On, $SHOP_TIMEOUT)
  logs: $RUN_DIR/error.log  $RUN_DIR/access.log
EOF

if [[ $mode == background ]]; then
    "$APACHE2" -f "$CONF" -k start
    for ((i = 0; i < 100; i++)); do
        if pid=$(running_pid); then
            echo "running in the background (pid $pid); stop with 'make stop'"
            exit 0
        fi
        sleep 0.1
    done
    die "Apache did not write $PIDFILE within 10s; see $RUN_DIR/error.log"
fi

echo "running in the foreground; Ctrl-C stops it"
exec "$APACHE2" -f "$CONF" -DFOREGROUND
