#!/usr/bin/env bash
# The mod_socket_guard story in one command (`make demo`).
#
# Starts the demo Apache of `make run` in the background (scripts/run.sh --background), with a
# snappy scan interval (500ms) and a short CLOSE_WAIT timeout on the AutoClose-On vhost (3s).
# Then N clients per vhost ask /cgi-bin/slow?SLEEP=60 and give up while the CGI still sleeps:
# the server side of each connection goes to CLOSE_WAIT. The script shows what the kernel and
# /socket-status see right away, waits (bounded) until the guard has closed the connections of
# shop.example.test (AutoClose On), and shows both again, with the guard's SG0015 log lines.
# www.example.test (AutoClose Off) keeps its sockets in CLOSE_WAIT, shown as stuck, until the
# CGI ends. The server is left running; `make stop` ends it.
#
# Environment: PORT=8080, MPM=event, RUN_DIR=build/run (as scripts/run.sh), N=10 clients per
# vhost, SCAN_INTERVAL=500ms, SHOP_TIMEOUT=3s. Needs bash (/dev/tcp), curl and ss.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export PORT=${PORT:-8080}
export MPM=${MPM:-event}
export RUN_DIR=${RUN_DIR:-$ROOT/build/run}
export SCAN_INTERVAL=${SCAN_INTERVAL:-500ms}
export SHOP_TIMEOUT=${SHOP_TIMEOUT:-3s}
N=${N:-10}
ADDR=${LISTEN_ADDR:-127.0.0.1}
SLEEP=60
OFF_HOST=www.example.test
ON_HOST=shop.example.test
BASE="http://$ADDR:$PORT"

die() { printf 'demo.sh: %s\n' "$*" >&2; exit 1; }
say() { printf '\n== %s\n' "$*"; }
if ! [[ $N =~ ^[0-9]+$ ]] || ((N < 1 || N > 40)); then die "N must be 1..40, got '$N'"; fi
command -v curl >/dev/null || die "curl not found (scripts/bootstrap.sh installs it)"
command -v ss >/dev/null || die "ss not found (scripts/bootstrap.sh installs iproute2)"

# Milliseconds of a duration in run.sh's syntax (500ms, 3s, 2m, bare seconds).
ms_of() {
    case "$1" in
        *ms) echo "${1%ms}" ;;
        *s) echo $((${1%s} * 1000)) ;;
        *m) echo $((${1%m} * 60000)) ;;
        *) echo $(($1 * 1000)) ;;
    esac
}
now_ms() { date +%s%3N; }

# --- start the server ----------------------------------------------------------------------
mkdir -p "$RUN_DIR"
if [[ -e $RUN_DIR/apache2.pid ]]; then
    say "a demo server may be running from $RUN_DIR: stopping it to restart with the demo settings"
    "$ROOT/scripts/run.sh" --stop | sed 's/^/  /'
fi
LOG=$RUN_DIR/error.log
log_start=0
[[ -e $LOG ]] && log_start=$(stat -c %s "$LOG")

say "starting Apache (mpm_$MPM) on $BASE: SocketGuardScanInterval $SCAN_INTERVAL; $ON_HOST AutoClose On, timeout $SHOP_TIMEOUT; $OFF_HOST AutoClose Off"
"$ROOT/scripts/run.sh" --background | sed -n -e '1s/^/  /p' -e 's/^running/  running/p'

status() { curl -sf --max-time 5 "$BASE/socket-status?auto"; }
for ((i = 0; ; i++)); do
    status >/dev/null && break
    ((i < 100)) || die "/socket-status?auto did not answer within 10s; see $LOG"
    sleep 0.1
done

# --- abandon requests ------------------------------------------------------------------------
# One client: GET the slow CGI on vhost $1 and read until the CGI's first line has arrived (so
# the handler is running); then wait for the go signal, so that all clients hang up together
# (prefork may take a few seconds to start enough children), drain what else is there, and
# close. An empty receive buffer makes the close send a FIN (not a RST): the server's socket
# goes to CLOSE_WAIT while the CGI sleeps.
SYNC=$(mktemp -d)
trap 'rm -rf "$SYNC"' EXIT
abandon() {
    local fd line saw=0 i
    exec {fd}<>"/dev/tcp/$ADDR/$PORT" || return 1
    printf 'GET /cgi-bin/slow?SLEEP=%s HTTP/1.1\r\nHost: %s\r\nUser-Agent: socket-guard-demo\r\n\r\n' \
        "$SLEEP" "$1" >&"$fd"
    while IFS= read -r -t 20 line <&"$fd"; do
        if [[ $line == *"slow: sleeping"* ]]; then
            saw=1
            break
        fi
    done
    : >"$SYNC/ready.$BASHPID"
    for ((i = 0; i < 600; i++)); do
        [[ -e $SYNC/go ]] && break
        sleep 0.05
    done
    while IFS= read -r -t 0.2 line <&"$fd"; do :; done
    exec {fd}>&-
    ((saw == 1))
}

say "$N clients on each vhost request /cgi-bin/slow?SLEEP=$SLEEP, get the first bytes, and hang up"
pids=()
for host in "$ON_HOST" "$OFF_HOST"; do
    for ((i = 0; i < N; i++)); do
        abandon "$host" &
        pids+=($!)
    done
done
for ((i = 0; i < 300; i++)); do
    ready=$(find "$SYNC" -name 'ready.*' | wc -l)
    ((ready >= 2 * N)) && break
    sleep 0.1
done
: >"$SYNC/go"
failed=0
for p in "${pids[@]}"; do wait "$p" || failed=$((failed + 1)); done
t_abandon=$(now_ms)
((failed == 0)) || echo "  ($failed of $((2 * N)) clients did not see the CGI start; continuing)"
echo "  all $((2 * N)) handlers were running; all $((2 * N)) clients closed their side"

kernel_view() {
    local lines
    lines=$(ss -Htn state close-wait "( sport = :$PORT )" 2>/dev/null || true)
    printf '  ss -tn state close-wait '\''( sport = :%s )'\'': %d sockets\n' "$PORT" \
        "$(grep -c . <<<"$lines" || true)"
    [[ -z $lines ]] || printf '    %s\n' "${lines//$'\n'/$'\n'    }"
}
status_view() {
    echo "  $BASE/socket-status?auto (excerpt):"
    status | { grep -E "^(CloseWaitNow|ForceClosedGuard|KernelCloseWait[A-Za-z]*): |^Vhost: ($ON_HOST|$OFF_HOST):" || true; } |
        sed 's/^/    /'
}
auto_value() { status | sed -n "s/^$1: //p"; }
vhost_field() { # vhost field
    status | sed -n "s/^Vhost: $1:$PORT .* $2=\([0-9]*\).*/\1/p"
}

# The guard marks CLOSE_WAIT on its next scan: wait (bounded) for the kernel and one scan.
interval_ms=$(ms_of "$SCAN_INTERVAL")
for ((i = 0; i < 20; i++)); do
    now_cw=$(auto_value CloseWaitNow)
    [[ ${now_cw:-0} -ge $((2 * N)) ]] && break
    sleep 0.25
done

say "right after ($(($(now_ms) - t_abandon)) ms): what the kernel and the guard see"
kernel_view
status_view
echo "  -> both vhosts: the clients are gone but the CGI still runs, so Apache holds $((2 * N)) sockets in CLOSE_WAIT; the guard tracks each one"

timeout_ms=$(ms_of "$SHOP_TIMEOUT")
limit_ms=$((timeout_ms + 4 * interval_ms + 10000))
say "waiting for the guard to act on $ON_HOST (timeout $SHOP_TIMEOUT, at most $((limit_ms / 1000))s)"
while :; do
    closed=$(vhost_field "$ON_HOST" ForceClosedGuard)
    [[ ${closed:-0} -ge $N ]] && break
    if (($(now_ms) - t_abandon > limit_ms)); then
        echo "  the guard closed ${closed:-0} of $N within $((limit_ms / 1000))s; see $LOG" >&2
        break
    fi
    sleep 0.25
done
echo "  done $(($(now_ms) - t_abandon)) ms after the clients left"

say "after the guard acted"
kernel_view
status_view
echo "  error log ($LOG), SG0015 lines:"
tail -c +"$((log_start + 1))" "$LOG" 2>/dev/null | grep 'SG0015' | sed 's/^/    /' || echo "    (none)"
echo "  -> $ON_HOST (AutoClose On): closed after its ${SHOP_TIMEOUT} timeout with shutdown(); the clients got a FIN, the sockets left CLOSE_WAIT (listed as force_closed until the handler returns, not counted as open)"
echo "  -> $OFF_HOST (AutoClose Off): still in CLOSE_WAIT, shown as stuck (tracked, not closed) until its CGI ends (~${SLEEP}s)"
echo "  (this script's own /socket-status requests land on $OFF_HOST, the default vhost: they are in its Accepted and Open)"

say "the server keeps running (pid $(<"$RUN_DIR/apache2.pid"))"
cat <<EOF
  $BASE/socket-status            (HTML; ?refresh=2 reloads every 2s)
  $BASE/socket-status?auto
  $BASE/socket-status?json
  $BASE/socket-status?metrics
  $BASE/server-status
make stop ends it.
EOF
