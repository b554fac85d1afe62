#!/usr/bin/env bash
# Installs what building, running and testing mod_socket_guard needs, from Debian packages.
#
# Idempotent and quiet: when everything is present it prints nothing and exits 0 quickly, so
# `make build` can call it every time. It never starts, stops or enables the system apache2
# service: our servers run from generated configs on their own ports. If a package's postinst
# does start the system apache2 (port 80), it is left alone.
#
# Rust itself cannot be installed from here; when cargo is missing this says how to get it.
set -euo pipefail

log() { printf 'bootstrap: %s\n' "$*" >&2; }

missing=()
need() { # need PACKAGE -- adds PACKAGE to the install list (once)
    local pkg=$1 p
    for p in "${missing[@]+"${missing[@]}"}"; do
        [[ $p == "$pkg" ]] && return 0
    done
    missing+=("$pkg")
}
have_cmd() { command -v "$1" >/dev/null 2>&1; }
have_file_glob() { # have_file_glob PATTERN... -- true when any pattern matches an existing file
    local f
    for f in "$@"; do
        [[ -e $f ]] && return 0
    done
    return 1
}

# Apache httpd itself and the Debian modules scripts/run.sh, benches/run.sh and the tests load.
if [[ ! -x /usr/sbin/apache2 ]] || ! have_file_glob /usr/lib/apache2/modules/mod_mpm_event.so; then
    need apache2
fi
[[ -e /etc/mime.types ]] || need media-types
have_cmd apxs || [[ -x /usr/bin/apxs ]] || need apache2-dev
# bindgen loads libclang (the C API library) at build time. Only libclang itself counts:
# libclang.so, libclang.so.N, libclang-NN.so*; libclang-cpp (the C++ library, which LLVM's
# own packages pull in) is not what bindgen loads.
have_libclang() {
    local f base
    shopt -s nullglob
    for f in /usr/lib/llvm-*/lib/libclang*.so* /usr/lib/*-linux-gnu/libclang*.so* /usr/lib64/libclang*.so*; do
        base=${f##*/}
        if [[ $base =~ ^libclang(-[0-9][0-9.]*)?\.so(\.[0-9.]+)?$ ]]; then
            shopt -u nullglob
            return 0
        fi
    done
    shopt -u nullglob
    return 1
}
# libclang also needs clang's own headers (stddef.h, ...): libclang-common-NN-dev.
if [[ -z ${LIBCLANG_PATH:-} ]] && ! have_libclang; then
    need libclang-dev
fi
have_file_glob /usr/lib/llvm-*/lib/clang/*/include/stddef.h /usr/lib/clang/*/include/stddef.h ||
    need libclang-dev
# make deb: dpkg-buildpackage, dh (dh_apache2 itself comes with apache2-dev), fakeroot.
have_cmd dpkg-buildpackage || need dpkg-dev
# dpkg-buildpackage refuses to build without the build-essential package itself (an implicit
# build dependency), even when gcc and make are there; purging dpkg-dev removes it.
dpkg -s build-essential >/dev/null 2>&1 || need build-essential
have_cmd dh || need debhelper
have_cmd fakeroot || need fakeroot
have_cmd wrk || need wrk
have_cmd ab || need apache2-utils
have_cmd ss || need iproute2
have_cmd curl || need curl
have_cmd make || need make
have_cmd gcc || need gcc
# With --no-install-recommends gcc comes without the C library headers.
[[ -e /usr/include/stdio.h ]] || need libc6-dev
have_cmd pkg-config || need pkg-config
have_cmd timeout || need coreutils
have_cmd runuser || need util-linux
# make test-bench (the bench report's unit tests) and the bench, soak and demo scripts.
have_cmd python3 || need python3
# promtool (`make test-contrib` checks contrib/prometheus) ships only in Debian's prometheus
# package, which also carries the server: see prometheus_stays_off below.
have_cmd promtool || need prometheus

# We install prometheus for promtool only. Its postinst starts the server (invoke-rc.d, or
# deb-systemd-invoke under systemd) unless policy-rc.d forbids it, which the guard below does,
# and enables it at boot. Disable it at boot, and if a server was started anyway (a
# policy-rc.d that allows starts was already there) stop exactly that one, by the init
# script's pid file, which did not exist before the install.
prom_pidfile=/run/prometheus/prometheus.pid
prom_pid_before=$([[ -e $prom_pidfile ]] && echo yes || echo no)
prometheus_stays_off() {
    "${SUDO[@]}" update-rc.d prometheus disable >/dev/null 2>&1 || true
    if [[ $prom_pid_before == no && -e $prom_pidfile ]]; then
        log "the prometheus package started its server: stopping it (pid $(cat "$prom_pidfile"))"
        "${SUDO[@]}" start-stop-daemon --stop --quiet --oknodo --retry=TERM/30/KILL/5 \
            --exec /usr/bin/prometheus --pidfile "$prom_pidfile" --remove-pidfile || true
    fi
    if [[ -d /run/systemd/system ]]; then
        "${SUDO[@]}" systemctl stop prometheus.service >/dev/null 2>&1 || true
    fi
    log "prometheus is installed for promtool only; its server is not running and is disabled at boot"
}

if [[ ${#missing[@]} -gt 0 ]]; then
    if ! have_cmd apt-get; then
        log "missing: ${missing[*]}"
        log "this script only knows apt-get (Debian/Ubuntu); install the equivalents by hand."
        exit 1
    fi
    SUDO=()
    if [[ $(id -u) -ne 0 ]]; then
        if have_cmd sudo; then
            SUDO=(sudo)
        else
            log "missing: ${missing[*]}"
            log "not root and no sudo: run as root: apt-get update && apt-get install -y --no-install-recommends ${missing[*]}"
            exit 1
        fi
    fi

    # Keep Debian's postinst scripts from starting the system apache2 on port 80: a
    # policy-rc.d that answers 101 ("action forbidden") is the documented way. Only add one
    # when there is none, and remove exactly the one we added.
    policy=/usr/sbin/policy-rc.d
    added_policy=0
    cleanup() {
        if [[ $added_policy -eq 1 ]]; then
            "${SUDO[@]}" rm -f "$policy" || true
        fi
    }
    trap cleanup EXIT
    if [[ ! -e $policy ]]; then
        if printf '#!/bin/sh\n# added by mod_socket_guard scripts/bootstrap.sh during apt-get install\nexit 101\n' |
            "${SUDO[@]}" tee "$policy" >/dev/null && "${SUDO[@]}" chmod 0755 "$policy"; then
            added_policy=1
        fi
    fi

    log "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q </dev/null
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        "${missing[@]}" </dev/null
    cleanup
    added_policy=0
    trap - EXIT
    log "installed: ${missing[*]}"
    if [[ " ${missing[*]} " == *" prometheus "* ]]; then
        prometheus_stays_off
    fi
fi

# Rust: installed by the user (rustup or Debian's cargo), never downloaded from here.
if ! have_cmd cargo; then
    home=${HOME:-$(getent passwd "$(id -u)" 2>/dev/null | cut -d: -f6)}
    if [[ -n $home && -x $home/.cargo/bin/cargo ]]; then
        log "cargo is installed in $home/.cargo/bin but not on PATH: run"
        log "    . \"$home/.cargo/env\""
        log "(the Makefile adds \$HOME/.cargo/bin to PATH by itself)"
    else
        log "cargo (Rust) is not installed. Install a recent stable Rust toolchain, either"
        log "    rustup (https://rustup.rs): curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal"
        log "or Debian's packages (may be older than this crate needs):"
        log "    apt-get install -y cargo rustc"
        log "then run make again."
        exit 1
    fi
fi
exit 0
