#!/usr/bin/env bash
# make deb: builds the Debian package libapache2-mod-socket-guard into build/.
#
# dpkg-buildpackage writes its results to the parent of the source tree and its work files
# into debian/, so it runs on a staging copy (build/deb/src); the .deb files, .buildinfo and
# .changes are then moved to build/ and the copy is removed. Cargo builds into target/deb, so a
# second `make deb` recompiles only what changed. docs/packaging.md describes the package.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$PWD
pkg=libapache2-mod-socket-guard
stage=build/deb

log() { printf 'deb: %s\n' "$*" >&2; }
die() {
    log "$*"
    exit 1
}

# The package's version is Cargo.toml's: debian/changelog must say the same upstream version.
check_version() {
    local cargo_version deb_version
    cargo_version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
    deb_version=$(dpkg-parsechangelog -S Version)
    [[ ${deb_version%-*} == "$cargo_version" ]] ||
        die "debian/changelog is at $deb_version but Cargo.toml at $cargo_version: add an entry (dch -v $cargo_version-1)"
    printf '%s\n' "$deb_version"
}

# major*1000+minor of a "1.82" or "rustc 1.95.0 (...)" version, for comparing.
version_number() {
    local v
    v=$(grep -o '[0-9]\+\.[0-9]\+' <<<"$1" | head -n 1)
    echo $((${v%.*} * 1000 + ${v#*.}))
}

# Prints the dpkg-buildpackage option for the build dependencies: nothing when all are
# installed as Debian packages, -d when only cargo/rustc are missing because the toolchain
# comes from rustup (~/.cargo/bin); its version is then checked here instead.
builddeps_option() {
    local out unmet word need have
    if out=$(dpkg-checkbuilddeps 2>&1); then
        return 0
    fi
    unmet=$(sed -n 's/.*Unmet build dependencies: //p' <<<"$out" | sed 's/([^)]*)//g')
    [[ -n $unmet ]] || die "dpkg-checkbuilddeps failed: $out"
    for word in $unmet; do
        [[ $word == cargo || $word == rustc ]] ||
            die "missing build dependencies: $unmet (make deb runs scripts/bootstrap.sh first)"
    done
    command -v cargo >/dev/null && command -v rustc >/dev/null ||
        die "missing build dependencies: $unmet (no cargo/rustc on PATH either)"
    need=$(sed -n 's/.*rustc (>= \([0-9.]*\)).*/\1/p' debian/control)
    have=$(rustc --version)
    (($(version_number "$have") >= $(version_number "$need"))) ||
        die "$have is older than the rustc (>= $need) debian/control asks for"
    log "cargo and rustc are not Debian packages here; using $(command -v cargo) ($have): building with -d"
    printf '%s\n' -d
}

# Copies the source tree (without build output or VCS data) to $stage/src.
stage_tree() {
    rm -rf "$stage"
    mkdir -p "$stage/src"
    tar -c --exclude=./target --exclude=./build --exclude=./.git --exclude=__pycache__ . |
        tar -x -C "$stage/src"
}

main() {
    local version option arch
    local -a options=(-us -uc -b)
    version=$(check_version)
    option=$(builddeps_option)
    [[ -z $option ]] || options+=("$option")
    arch=$(dpkg --print-architecture)
    rm -f build/"${pkg}"_*.deb build/"${pkg}"-dbgsym_*.deb build/"${pkg}"_*.buildinfo build/"${pkg}"_*.changes
    stage_tree
    log "building $pkg $version ($arch) in $stage/src"
    (cd "$stage/src" && CARGO_TARGET_DIR="$root/target/deb" \
        dpkg-buildpackage "${options[@]}")
    mv "$stage"/*.deb "$stage"/*.buildinfo "$stage"/*.changes build/
    rm -rf "$stage"
    [[ -e build/${pkg}_${version}_${arch}.deb ]] || die "build/${pkg}_${version}_${arch}.deb was not made"
    log "built build/${pkg}_${version}_${arch}.deb"
}

main "$@"
