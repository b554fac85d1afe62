#!/usr/bin/env bash
# Screenshots of the HTML status page under `make demo` load (`make screenshots`).
#
# Starts the demo server the way `make demo` does (scripts/demo.sh, in a run dir of its own so
# a `make start` server is left alone): 10 clients per vhost abandon a slow CGI, the guard
# closes shop.example.test's (AutoClose On), www.example.test's stay in CLOSE_WAIT (Off). It
# adds idle keep-alive clients, waits until the page shows all of that and the verdict is
# "leak", takes the shots with headless Chromium at a laptop width (1366 px), writes
# docs/screenshots/README.md (versions, date, sizes), and stops the server it started (by its
# pid file, also on failure or Ctrl-C).
#
# The full-page height is measured, not assumed: Chromium lays the page out in a same-origin
# iframe (a helper page put in the run dir's htdocs) and reports its height, so the shots
# follow the page when sections are added.
#
# Environment: PORT (8080, or a free port when 8080 is taken), MPM=event, N=10 clients per
# vhost (demo.sh), KEEPALIVE=6 idle keep-alive clients, SHOTS_DIR=docs/screenshots,
# RUN_DIR=build/screenshots. Root (or sudo) installs Debian's chromium when it is missing.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export MPM=${MPM:-event}
export N=${N:-10}
export RUN_DIR=${RUN_DIR:-$ROOT/build/screenshots}
export LISTEN_ADDR=127.0.0.1
KEEPALIVE=${KEEPALIVE:-6}
SHOTS_DIR=${SHOTS_DIR:-$ROOT/docs/screenshots}
CHROMIUM=/usr/bin/chromium
WIDTH=1366
TOP_HEIGHT=768
ADDR=127.0.0.1
# Every wait below is bounded by this many seconds; the clients stop by themselves after it.
LIMIT_S=90

die() { printf 'screenshots.sh: %s\n' "$*" >&2; exit 1; }
say() { printf '== %s\n' "$*"; }
[[ ${1:-} == -h || ${1:-} == --help ]] && { sed -n '2,18s/^# \{0,1\}//p' "$0"; exit 0; }
[[ $KEEPALIVE =~ ^[0-9]+$ ]] && ((KEEPALIVE <= 50)) || die "KEEPALIVE must be 0..50"

# --- chromium --------------------------------------------------------------------------------
# Debian's chromium (fonts-liberation is the font it recommends; without any font the text
# would be boxes). Installed only here: `make test` never needs a browser.
ensure_chromium() {
    local pkgs=() sudo=()
    [[ -x $CHROMIUM ]] || pkgs+=(chromium)
    [[ -d /usr/share/fonts/truetype/liberation ]] || pkgs+=(fonts-liberation)
    ((${#pkgs[@]})) || return 0
    if [[ $(id -u) -ne 0 ]]; then
        command -v sudo >/dev/null || die "missing ${pkgs[*]}: run as root: apt-get install -y --no-install-recommends ${pkgs[*]}"
        sudo=(sudo)
    fi
    say "installing ${pkgs[*]} (Debian packages)"
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q </dev/null >/dev/null
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        "${pkgs[@]}" </dev/null >/dev/null
}

# --- the server ------------------------------------------------------------------------------
port_free() { ! ss -Hltn "( sport = :$1 )" 2>/dev/null | grep -q .; }
pick_port() {
    local p
    if [[ -n ${PORT:-} ]]; then
        echo "$PORT"
        return
    fi
    for p in 8080 $(shuf -i 20000-60000 -n 20); do
        port_free "$p" && { echo "$p"; return; }
    done
    die "no free port found"
}

stop_everything() {
    local p
    : >"$WORK/stop"
    for p in "${CLIENT_PIDS[@]+"${CLIENT_PIDS[@]}"}"; do kill "$p" 2>/dev/null || true; done
    "$ROOT/scripts/run.sh" --stop | sed 's/^/  /' || true
    rm -rf "$WORK"
}

start_demo() {
    say "make demo's server and load (scripts/demo.sh, N=$N per vhost) on $BASE, mpm_$MPM"
    if ! "$ROOT/scripts/demo.sh" >"$RUN_DIR/demo.log" 2>&1; then
        sed 's/^/  /' "$RUN_DIR/demo.log" >&2
        die "demo.sh failed"
    fi
    grep -E '^  (all|done) ' "$RUN_DIR/demo.log" || true
}

# One idle keep-alive client: a HEAD every 2 s on the same connection keeps it open under
# KeepAliveTimeout 5 and idle (state keepalive) in between; it ends at the stop file, or
# 2 x LIMIT_S after it started should this script have died without its trap.
keepalive_client() {
    local host=$1 fd line end=$((SECONDS + 2 * LIMIT_S))
    exec {fd}<>"/dev/tcp/$ADDR/$PORT" || return 1
    while [[ ! -e $WORK/stop ]] && ((SECONDS < end)); do
        printf 'HEAD / HTTP/1.1\r\nHost: %s\r\nUser-Agent: socket-guard-screenshots\r\n\r\n' \
            "$host" >&"$fd" || return 1
        while IFS= read -r -t 5 line <&"$fd"; do [[ $line == $'\r' ]] && break; done
        sleep 2
    done
    exec {fd}>&-
}

start_keepalive_clients() {
    local i host
    for ((i = 0; i < KEEPALIVE; i++)); do
        host=www.example.test
        ((i % 2)) && host=shop.example.test
        keepalive_client "$host" &
        CLIENT_PIDS+=($!)
    done
}

auto() { curl -sf --max-time 5 "$BASE/socket-status?auto"; }
auto_num() { # auto_num KEY TEXT: KEY's number in ?auto TEXT, 0 when absent
    local v
    v=$(sed -n "s/^$1: \([0-9]*\)$/\1/p" <<<"$2")
    echo "${v:-0}"
}

# Until the page shows what the shots are for: sockets in CLOSE_WAIT, the guard's closes, the
# keep-alive clients idle, and the "leak" verdict (a socket past 10 s in CLOSE_WAIT).
wait_for_load() {
    local a t0=$SECONDS
    say "waiting (at most ${LIMIT_S}s) for CLOSE_WAIT, force-closed, $KEEPALIVE keep-alive and the leak verdict"
    while :; do
        a=$(auto || true)
        if (($(auto_num CloseWaitNow "$a") > 0 && $(auto_num ForceClosedGuard "$a") > 0)) &&
            (($(auto_num OpenKeepalive "$a") >= KEEPALIVE)) &&
            grep -qx 'CloseWaitVerdict: leak' <<<"$a"; then
            break
        fi
        ((SECONDS - t0 < LIMIT_S)) || die "the page did not get there within ${LIMIT_S}s; last ?auto:"$'\n'"$a"
        sleep 0.5
    done
    grep -E '^(CloseWaitNow|ForceClosedGuard|OpenKeepalive|CloseWaitVerdict): ' <<<"$a" |
        sed 's/^/  /'
}

# "Chromium 156.0.8078.114" (without "built on ...").
chromium_version() { "$CHROMIUM" --version 2>/dev/null | sed -n '1s/ built on .*//p'; }

# --- chromium runs ---------------------------------------------------------------------------
chromium_run() { # chromium_run ARGS... (a fresh profile each time; bounded)
    local profile rc=0
    profile=$(mktemp -d)
    timeout 60 "$CHROMIUM" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
        --disable-background-networking --disable-component-update --disable-sync \
        --user-data-dir="$profile" --hide-scrollbars "$@" 2>>"$WORK/chromium.log" </dev/null ||
        rc=$?
    rm -rf "$profile"
    return "$rc"
}

# The laid-out height of QUERY's page at WIDTH px, from a same-origin helper page.
page_height() {
    local query=$1 h
    cat >"$RUN_DIR/htdocs/shots-measure.html" <<EOF
<!DOCTYPE html>
<html><body style="margin:0">
<iframe id="f" scrolling="no" style="border:0;width:${WIDTH}px;height:100px" src="/socket-status${query}"></iframe>
<pre id="h"></pre>
<script>
document.getElementById('f').onload = function () {
  var d = this.contentDocument.documentElement;
  document.getElementById('h').textContent = 'height=' + d.scrollHeight;
};
</script>
</body></html>
EOF
    h=$(chromium_run --window-size="$WIDTH,$TOP_HEIGHT" --virtual-time-budget=5000 --dump-dom \
        "$BASE/shots-measure.html" | sed -n 's/.*height=\([0-9]*\).*/\1/p')
    rm -f "$RUN_DIR/htdocs/shots-measure.html"
    [[ $h =~ ^[0-9]+$ ]] && ((h > 0)) || die "could not measure the page's height (see $WORK/chromium.log)"
    echo "$h"
}

# Chromium's RGB PNG of a tall page is over 500 kB; a 256-colour palette (no visible change)
# brings it to about a third. Skipped, with a note, where there is no python3.
shrink_png() {
    if command -v python3 >/dev/null; then
        python3 "$ROOT/scripts/png_palette.py" "$1" >/dev/null
    else
        echo "  (no python3: ${1##*/} kept as Chromium wrote it)"
    fi
}

shoot() { # shoot FILE HEIGHT QUERY
    local file=$1 height=$2 query=$3 size
    rm -f "$file"
    chromium_run --window-size="$WIDTH,$height" --screenshot="$file" \
        "$BASE/socket-status$query" >/dev/null
    [[ -s $file ]] || die "chromium wrote no $file (see $WORK/chromium.log)"
    shrink_png "$file"
    size=$(stat -c %s "$file")
    printf '  %s  %sx%s  %s bytes\n' "${file#"$ROOT"/}" "$WIDTH" "$height" "$size"
    # Kept in git: a page grown much longer shows here first.
    ((size <= 400000)) || echo "  warning: ${file##*/} is over 400 kB" >&2
}

# --- docs ------------------------------------------------------------------------------------
write_readme() { # write_readme SECONDS_TAKEN
    local f=$SHOTS_DIR/README.md
    local apache chromium
    apache=$(/usr/sbin/apache2 -v | sed -n 's/^Server version: //p')
    chromium=$(chromium_version)
    {
        echo "# Screenshots of /socket-status"
        echo
        echo "Made by \`make screenshots\` (scripts/screenshots.sh), which regenerates this file too."
        echo "Headless $chromium (Debian's package), window width $WIDTH px (a laptop),"
        echo "$(date -u +%Y-%m-%d); $apache, mpm_$MPM; the run took $1 s."
        echo
        echo "The load is \`make demo\`'s: $N clients on each vhost abandon \`/cgi-bin/slow\` while it"
        echo "runs. Those of \`shop.example.test\` (AutoClose On, 3 s) are force-closed by the guard and"
        echo "listed until their CGIs return; those of \`www.example.test\` (AutoClose Off) stay in"
        echo "CLOSE_WAIT, past 10 s, so the verdict is *leak*. $KEEPALIVE more clients hold idle"
        echo "keep-alive connections. The shots are taken once ?auto shows all of that, then"
        echo "reduced to 256 colours (scripts/png_palette.py: the pixels stay where Chromium drew them)."
        echo
        echo "| file | what |"
        echo "|---|---|"
        echo "| [status-top.png](status-top.png) | the first screen, ${WIDTH}x$TOP_HEIGHT |"
        echo "| [status-full.png](status-full.png) | the whole page, ${WIDTH}x$FULL_HEIGHT (its measured height) |"
        echo "| [status-close-wait.png](status-close-wait.png) | \`?state=close_wait\`: the connection tables filtered to the stuck ones, ${WIDTH}x$FILTER_HEIGHT |"
        echo
        echo "After a retake, look at each for layout at this width (a table wider than the window,"
        echo "text cut or overlapping, headings out of order) before committing them."
    } >"$f"
}

# --- main ------------------------------------------------------------------------------------
main() {
    local t0=$SECONDS
    ensure_chromium
    command -v curl >/dev/null || die "curl not found (scripts/bootstrap.sh installs it)"
    PORT=$(pick_port)
    export PORT
    BASE="http://$ADDR:$PORT"
    mkdir -p "$RUN_DIR" "$SHOTS_DIR"
    WORK=$(mktemp -d)
    CLIENT_PIDS=()
    trap stop_everything EXIT
    trap 'exit 130' INT TERM
    start_demo
    start_keepalive_clients
    wait_for_load
    say "screenshots with $(chromium_version), width $WIDTH"
    shoot "$SHOTS_DIR/status-top.png" "$TOP_HEIGHT" ""
    FULL_HEIGHT=$(page_height "")
    shoot "$SHOTS_DIR/status-full.png" "$FULL_HEIGHT" ""
    FILTER_HEIGHT=$(page_height "?state=close_wait")
    shoot "$SHOTS_DIR/status-close-wait.png" "$FILTER_HEIGHT" "?state=close_wait"
    write_readme "$((SECONDS - t0))"
    say "done in $((SECONDS - t0)) s; $SHOTS_DIR/README.md updated"
}

main "$@"
