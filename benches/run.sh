#!/usr/bin/env bash
# Measures what mod_socket_guard costs on healthy traffic (used by `make bench`).
#
# For each MPM (prefork, worker, event) the same Apache config (one small static file, no access
# log) is started three ways: without `LoadModule socket_guard_module`, with it, and with it but
# with the children's guard thread left out (SOCKET_GUARD_BENCH_NO_CHILD_THREAD=1, a benchmark
# setting: it tells how much of the module's cost is that thread). The order rotates in each
# round to cancel drift. Each start is measured with
#   wrk -t2 -c32 -d${BENCH_SECS}s      keep-alive: many requests per connection
#   ab -n ${AB_N} -c16                 a new connection for every request (no -k)
# recording requests/sec and the server's CPU time (utime+stime of the parent, its children and
# the children it already reaped, from /proc/<pid>/stat) per 1000 requests. Medians over the
# rounds, with the spread (min–max), are printed and written to build/bench/results.md.
#
# Environment: BENCH_MPMS ("prefork worker event"), BENCH_ROUNDS (3), BENCH_SECS (5), AB_N (20000),
# SOCKET_GUARD_SO
# (build/mod_socket_guard.so), BENCH_KEEP=1 keeps the generated configs and logs.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SO=${SOCKET_GUARD_SO:-$ROOT/build/mod_socket_guard.so}
ROUNDS=${BENCH_ROUNDS:-3}
MPMS=${BENCH_MPMS:-prefork worker event}
VARIANTS=(without with nothread)
SECS=${BENCH_SECS:-5}
AB_N=${AB_N:-20000}
APACHE2=${APACHE2:-/usr/sbin/apache2}
MODULES_DIR=${APACHE_MODULES_DIR:-/usr/lib/apache2/modules}
BENCH_DIR=$ROOT/build/bench
WRK_THREADS=2
WRK_CONNS=32
AB_CONC=16

die() { printf 'bench: %s\n' "$*" >&2; exit 1; }
note() { printf 'bench: %s\n' "$*" >&2; }

for v in ROUNDS SECS AB_N; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer, got '${!v}'"
done
((ROUNDS <= 20)) || die "BENCH_ROUNDS is at most 20"
((SECS <= 120)) || die "BENCH_SECS is at most 120"
((AB_N <= 1000000)) || die "AB_N is at most 1000000"
for c in wrk ab ss curl timeout; do
    command -v "$c" >/dev/null 2>&1 || die "$c not found: run scripts/bootstrap.sh"
done
[[ -x $APACHE2 ]] || die "$APACHE2 not found: run scripts/bootstrap.sh"
[[ -e $SO ]] || die "module $SO not found: run 'make build' (or set SOCKET_GUARD_SO)"
SO=$(cd "$(dirname "$SO")" && pwd)/$(basename "$SO")

CLK_TCK=$(getconf CLK_TCK)
mkdir -p "$BENCH_DIR"
WORK=$(mktemp -d "$BENCH_DIR/run.XXXXXX")
chmod 0755 "$WORK" # mktemp makes it 0700; the server runs as www-data when we are root
RESULTS=$BENCH_DIR/results.md

# --- servers ---------------------------------------------------------------------------------
started_pidfiles=()

stop_pidfile() { # stop_pidfile PIDFILE CONF -- TERM the Apache recorded there, KILL after 10s
    local pidfile=$1 conf=$2 pid i
    [[ -s $pidfile ]] || return 0
    pid=$(<"$pidfile")
    [[ $pid =~ ^[0-9]+$ ]] || return 0
    # Only a process started from our config: the pid may have been reused.
    [[ -r /proc/$pid/cmdline ]] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$conf" || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    note "Apache pid $pid did not stop after SIGTERM; sending SIGKILL to its process group"
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
}

cleanup() {
    local pf
    for pf in "${started_pidfiles[@]+"${started_pidfiles[@]}"}"; do
        stop_pidfile "$pf" "$(dirname "$pf")/apache2.conf"
    done
    if [[ ${BENCH_KEEP:-0} != 1 ]]; then
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_in_use() { ss -Htan "( sport = :$1 )" 2>/dev/null | grep -q .; }

free_port() {
    local p i
    for ((i = 0; i < 200; i++)); do
        p=$((20000 + RANDOM % 12000))
        port_in_use "$p" || { printf '%s\n' "$p"; return 0; }
    done
    die "no free port found between 20000 and 32000"
}

# The MPM's section: a fixed pool, so no process starts or stops during a measurement, with
# workers for every wrk connection (32).
mpm_lines() {
    case $1 in
        prefork) printf '%s\n' 'StartServers 32' 'MinSpareServers 32' 'MaxSpareServers 64' \
            'ServerLimit 32' 'MaxRequestWorkers 32' ;;
        worker | event) printf '%s\n' 'StartServers 2' 'ServerLimit 2' 'ThreadsPerChild 32' \
            'MaxRequestWorkers 64' 'MinSpareThreads 32' 'MaxSpareThreads 64' ;;
    esac
}

# write_conf DIR PORT WITH(0|1) MPM
write_conf() {
    local dir=$1 port=$2 with=$3 mpm=$4 module_line user_lines types_line
    mkdir -p "$dir/htdocs"
    # A small static file (~200 bytes), the common case the guard must not slow down.
    printf '<!DOCTYPE html>\n<html><head><title>bench</title></head><body><p>%s</p></body></html>\n' \
        "mod_socket_guard benchmark: a small static page served from the page cache." \
        >"$dir/htdocs/small.html"
    chmod 0755 "$dir" "$dir/htdocs"
    chmod 0644 "$dir/htdocs/small.html"
    module_line="# without mod_socket_guard"
    [[ $with == 1 ]] && module_line="LoadModule socket_guard_module \"$SO\""
    user_lines=""
    [[ $(id -u) -eq 0 ]] && user_lines=$'User www-data\nGroup www-data'
    types_line="AddType text/html .html"
    [[ -r /etc/mime.types ]] && types_line="TypesConfig /etc/mime.types"
    cat >"$dir/apache2.conf" <<EOF
# Generated by benches/run.sh ($([[ $with == 1 ]] && echo with || echo without) mod_socket_guard)
ServerRoot "$dir"
ServerName 127.0.0.1
Listen 127.0.0.1:$port
PidFile "$dir/apache2.pid"
DefaultRuntimeDir "$dir"
ErrorLog "$dir/error.log"
LogLevel warn
LoadModule mpm_${mpm}_module "$MODULES_DIR/mod_mpm_${mpm}.so"
LoadModule authz_core_module "$MODULES_DIR/mod_authz_core.so"
LoadModule authz_host_module "$MODULES_DIR/mod_authz_host.so"
LoadModule mime_module "$MODULES_DIR/mod_mime.so"
LoadModule dir_module "$MODULES_DIR/mod_dir.so"
$module_line
$user_lines
$(mpm_lines "$mpm")
MaxConnectionsPerChild 0
ListenBacklog 511
Timeout 30
KeepAlive On
MaxKeepAliveRequests 0
KeepAliveTimeout 5
$types_line
DocumentRoot "$dir/htdocs"
<Directory "$dir/htdocs">
    Require all granted
</Directory>
<IfModule socket_guard_module>
    <Location "/socket-status">
        SetHandler socket-status
        Require local
    </Location>
</IfModule>
EOF
}

# start_server DIR [ENV=VALUE...] -- prints the parent pid
start_server() {
    local dir=$1 out pid i port
    shift
    port=$(sed -n 's/^Listen 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$dir/apache2.conf")
    if ! out=$(env "$@" "$APACHE2" -f "$dir/apache2.conf" -k start 2>&1); then
        printf '%s\n' "$out" >&2
        die "Apache failed to start with $dir/apache2.conf"
    fi
    for ((i = 0; i < 100; i++)); do
        if [[ -s $dir/apache2.pid ]] &&
            curl -s -o /dev/null --max-time 2 "http://127.0.0.1:$port/small.html"; then
            printf '%s\n' "$(<"$dir/apache2.pid")"
            return 0
        fi
        sleep 0.1
    done
    die "Apache from $dir did not answer within 10s; see $dir/error.log"
}

# cpu_ticks PID -- utime+stime (+ reaped children's) of PID and every process in its group or
# whose parent it is, in clock ticks.
cpu_ticks() {
    local parent=$1 total=0 f line rest pid
    local -a fld
    for f in /proc/[0-9]*/stat; do
        line=$(<"$f") 2>/dev/null || continue
        pid=${line%% *}
        rest=${line##*) }
        read -r -a fld <<<"$rest"
        # fld[0]=state [1]=ppid [2]=pgrp ... [11]=utime [12]=stime [13]=cutime [14]=cstime
        if [[ $pid == "$parent" || ${fld[1]} == "$parent" || ${fld[2]} == "$parent" ]]; then
            total=$((total + fld[11] + fld[12] + fld[13] + fld[14]))
        fi
    done 2>/dev/null
    printf '%s\n' "$total"
}

# --- measurements ----------------------------------------------------------------------------
# Each run_* prints "requests rps cpu_us_per_1k".
run_wrk() {
    local port=$1 pid=$2 out before after reqs rps errs
    before=$(cpu_ticks "$pid")
    out=$(timeout $((SECS + 30)) wrk -t"$WRK_THREADS" -c"$WRK_CONNS" -d"${SECS}s" \
        "http://127.0.0.1:$port/small.html") || die "wrk failed: $out"
    after=$(cpu_ticks "$pid")
    reqs=$(awk '/ requests in /{print $1; exit}' <<<"$out")
    rps=$(awk '/^Requests\/sec:/{print $2; exit}' <<<"$out")
    errs=$(awk '/Non-2xx or 3xx responses:|Socket errors:/{sub(/^ +/, ""); print}' <<<"$out")
    [[ -z $errs ]] || note "wrk reported errors: $errs"
    [[ -n $reqs && -n $rps && $reqs -gt 0 ]] || die "could not read wrk's output: $out"
    printf '%s %s %s\n' "$reqs" "$rps" "$(cpu_per_1k "$before" "$after" "$reqs")"
}

run_ab() {
    local port=$1 pid=$2 out before after reqs rps failed non2xx
    before=$(cpu_ticks "$pid")
    out=$(timeout $((AB_N / 100 + 120)) ab -q -s 10 -n "$AB_N" -c "$AB_CONC" \
        "http://127.0.0.1:$port/small.html" 2>&1) || die "ab failed: $out"
    after=$(cpu_ticks "$pid")
    reqs=$(awk '/^Complete requests:/{print $3; exit}' <<<"$out")
    rps=$(awk '/^Requests per second:/{print $4; exit}' <<<"$out")
    failed=$(awk '/^Failed requests:/{print $3; exit}' <<<"$out")
    non2xx=$(awk '/^Non-2xx responses:/{print $3; exit}' <<<"$out")
    [[ ${failed:-0} == 0 && -z $non2xx ]] || note "ab: failed requests ${failed:-?}, non-2xx ${non2xx:-0}"
    [[ -n $reqs && -n $rps && $reqs -gt 0 ]] || die "could not read ab's output: $out"
    printf '%s %s %s\n' "$reqs" "$rps" "$(cpu_per_1k "$before" "$after" "$reqs")"
}

cpu_per_1k() { # cpu_per_1k BEFORE AFTER REQUESTS -- CPU µs per 1000 requests
    awk -v b="$1" -v a="$2" -v n="$3" -v hz="$CLK_TCK" \
        'BEGIN { printf "%.1f", (a - b) * 1e6 / hz / n * 1000 }'
}

median() { # median VALUE...
    printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END {
        if (NR == 0) { print "nan"; exit }
        if (NR % 2) printf "%.1f", v[(NR + 1) / 2]; else printf "%.1f", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

declare -A samples # samples[scenario.variant.metric] = space-separated values
add_sample() { samples[$1]="${samples[$1]:-} $2"; }

measure_variant() { # measure_variant MPM ROUND VARIANT(without|with|nothread)
    local mpm=$1 round=$2 variant=$3 dir port pid with=1 reqs rps cpu code out s
    local -a env=()
    [[ $variant == without ]] && with=0
    [[ $variant == nothread ]] && env=(SOCKET_GUARD_BENCH_NO_CHILD_THREAD=1)
    dir=$WORK/$mpm-r$round-$variant
    port=$(free_port)
    write_conf "$dir" "$port" "$with" "$mpm"
    started_pidfiles+=("$dir/apache2.pid") # before starting: start_server runs in a subshell
    pid=$(start_server "$dir" "${env[@]+"${env[@]}"}")
    if [[ $with == 1 ]]; then
        code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://127.0.0.1:$port/socket-status?auto") || code=000
        [[ $code == 200 ]] || note "warning: /socket-status?auto answered $code with the module loaded"
    fi
    # Warm up (page cache, worker threads, first connections), then measure.
    timeout 30 wrk -t1 -c4 -d1s "http://127.0.0.1:$port/small.html" >/dev/null 2>&1 || true
    for s in wrk ab; do
        out=$("run_$s" "$port" "$pid")
        read -r reqs rps cpu <<<"$out"
        add_sample "$mpm.$s.$variant.rps" "$rps"
        add_sample "$mpm.$s.$variant.cpu" "$cpu"
        printf '  %-7s round %s %-8s %-3s %8s req %10s req/s %8s CPU-us/1k req\n' \
            "$mpm" "$round" "$variant" "$s" "$reqs" "$rps" "$cpu" >&2
    done
    if [[ $with == 1 ]]; then
        grep -E '\[socket_guard:(emerg|alert|crit|warn)\]' "$dir/error.log" | head -5 >&2 || true
    fi
    stop_pidfile "$dir/apache2.pid" "$dir/apache2.conf"
}

note "MPMs: $MPMS; $ROUNDS rounds; wrk -t$WRK_THREADS -c$WRK_CONNS -d${SECS}s (keep-alive), ab -n $AB_N -c $AB_CONC (new connection per request)"
note "module: $SO"
for mpm in $MPMS; do
    for ((r = 1; r <= ROUNDS; r++)); do
        # Rotate the order so that no variant always runs first (or last) in a round.
        for ((k = 0; k < ${#VARIANTS[@]}; k++)); do
            measure_variant "$mpm" "$r" "${VARIANTS[(k + r) % ${#VARIANTS[@]}]}"
        done
    done
done

# --- report ----------------------------------------------------------------------------------
med() { # med KEY -- median of the samples under KEY
    # shellcheck disable=SC2086 # word splitting of the sample list is intended
    median ${samples[$1]}
}
span() { # span KEY -- "min–max" of the samples under KEY
    printf '%s\n' ${samples[$1]} | sort -g | awk 'NR == 1 { lo = $1 } { hi = $1 } END { printf "%.0f–%.0f", lo, hi }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.3f", a / b; else print "nan" }'; }
per_req() { awk -v v="$1" 'BEGIN { printf "%.1f", v / 1000 }'; } # µs/1k req → µs/req
cell() { # cell KEY -- "median (min–max)" in µs per request
    local lo hi
    IFS=– read -r lo hi <<<"$(span "$1")"
    printf '%s (%s–%s)' "$(per_req "$(med "$1")")" "$(per_req "$lo")" "$(per_req "$hi")"
}

label_of() {
    case $1 in
        wrk) echo "keep-alive (wrk -c$WRK_CONNS)" ;;
        ab) echo "new connection per request (ab -c$AB_CONC)" ;;
    esac
}

{
    echo "# mod_socket_guard benchmark: CPU per request with and without the module"
    echo
    echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $("$APACHE2" -v | sed -n 's/^Server version: //p'), $(nproc) CPUs," \
        "127.0.0.1, ~200-byte static file; $ROUNDS rounds per MPM, order of the three servers rotated each round."
    echo
    echo "CPU µs per request: the server's utime+stime (parent, children, reaped children) from /proc"
    echo "over the run, divided by the requests served; median of the rounds (min–max in brackets)."
    echo "\"no child thread\" is the module with SOCKET_GUARD_BENCH_NO_CHILD_THREAD=1."
    echo
    echo "| MPM | traffic | without module | with module | with, no child thread | with ÷ without | no thread ÷ without | req/s without → with |"
    echo "|---|---|---:|---:|---:|---:|---:|---:|"
    for mpm in $MPMS; do
        for s in wrk ab; do
            k=$mpm.$s
            echo "| $mpm | $(label_of "$s") | $(cell "$k.without.cpu") | $(cell "$k.with.cpu") | $(cell "$k.nothread.cpu")" \
                "| $(ratio "$(med "$k.with.cpu")" "$(med "$k.without.cpu")")" \
                "| $(ratio "$(med "$k.nothread.cpu")" "$(med "$k.without.cpu")")" \
                "| $(med "$k.without.rps") → $(med "$k.with.rps") |"
        done
    done
    echo
    echo "CPU is counted in $CLK_TCK Hz ticks; with the spread shown, a ratio whose ranges overlap is not a"
    echo "measured difference."
    echo
    echo "Per-round samples (CPU µs per 1000 requests; requests/s):"
    echo
    echo '```'
    for mpm in $MPMS; do
        for s in wrk ab; do
            for v in "${VARIANTS[@]}"; do
                printf '%-30s cpu%s\n' "$mpm.$s.$v" "${samples[$mpm.$s.$v.cpu]}"
                printf '%-30s rps%s\n' "" "${samples[$mpm.$s.$v.rps]}"
            done
        done
    done
    echo '```'
} >"$RESULTS"

echo
cat "$RESULTS"
echo "results written to ${RESULTS#"$ROOT"/}"
