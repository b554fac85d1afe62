# mod_socket_guard — build, test, run and install the Apache httpd 2.4 module.
#
#   make            build the release module into build/mod_socket_guard.so
#   make test       unit tests, test-contrib, then integration tests (real Apache, one at a time)
#   make test-contrib  promtool check and unit tests of the alert rules in contrib/prometheus
#   make run        start a demo Apache on 127.0.0.1:8080 in the foreground (PORT=, MPM=)
#   make start      the same server in the background; `make stop` stops it
#   make install    install the module with apxs and the Debian a2enmod files
#   make deb        Debian package build/libapache2-mod-socket-guard_*.deb (docs/packaging.md)
#   make test-deb   install that package, serve /socket-status from it, purge it (root; in make test)
#   make test-bench  unit tests of the bench report writer (benches/test_bench_report.py; in make test)
#   make bench      issue 10's measures in one run (~10 min, root): CPU per request with/without
#                   the module on 3 MPMs, instruction counts, one detection pass at 1k/10k/100k
#                   idle connections, the status page at 10,000, shm per slot, Prometheus series;
#                   build/bench/results.{md,svg} and docs/PERFORMANCE.md's summary (ROUNDS=,
#                   REQUESTS=, IDLE=, PARTS=, UPDATE_DOCS=0: see benches/bench.py)
#   make bench-floor  instructions of hooks that do nothing, and on Debian's default modules
#   make bench-extra  the older benches: cargo benches, CPU per request with/without/no child
#                   thread, guard_process.py, status_page.py (docs/PERFORMANCE.md's history)
#   make demo-rescue  prefork story (~25 s): stuck, old_generation, hung, leaked, backlog
#   make screenshots  headless Chromium shots of /socket-status under demo load (~25 s), into
#                   docs/screenshots/ (installs chromium when missing; not part of make test)
#   make seed-replay  headline benchmark (~3 min): stuck handlers + crawlers, stock vs. the module
#   make memcheck   Apache -X and a graceful restart under valgrind: module's memory errors/leaks
#   make soak       SOAK_MINUTES (30) of traffic, restarts, kills, SIGSTOPs on every MPM, checked
#   make fuzz       the parsers' property tests with FUZZ_CASES (1000000) cases in all (proptest)
#   make lint       cargo fmt --check and cargo clippy
#
# Every target that needs system packages runs scripts/bootstrap.sh first (quiet and fast when
# nothing is missing).

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := all

# A rustup install lives in ~/.cargo/bin, which a non-login shell (CI, sudo) may not have on PATH.
ifneq ($(HOME),)
export PATH := $(HOME)/.cargo/bin:$(PATH)
endif

CARGO       ?= cargo
APXS        ?= apxs
TARGET_DIR  := $(or $(CARGO_TARGET_DIR),target)
SO_BUILT    := $(TARGET_DIR)/release/libmod_socket_guard.so
SO          := build/mod_socket_guard.so
PORT        ?= 8080
FUZZ_CASES  ?= 1000000
MPM         ?= event
CLIPPY_ARGS ?= --all-targets -- -D warnings
MODS_AVAILABLE := /etc/apache2/mods-available

# The integration tests load the module from here (absolute path; overridable on the command line).
SOCKET_GUARD_SO := $(CURDIR)/$(SO)
export SOCKET_GUARD_SO

# The Debian package (make deb): its version is debian/changelog's, which scripts/deb.sh checks
# against Cargo.toml's. Rebuilt only when one of its inputs changed (directories count: a
# removed file changes its directory's time).
DEB_VERSION := $(shell sed -n '1s/^[^(]*(\([^)]*\)).*/\1/p' debian/changelog)
DEB_ARCH    := $(shell dpkg --print-architecture 2>/dev/null)
DEB         := build/libapache2-mod-socket-guard_$(DEB_VERSION)_$(DEB_ARCH).deb
DEB_INPUTS  := Cargo.toml Cargo.lock build.rs scripts/deb.sh \
               $(shell find src include debian apache-conf \( -type f -o -type d \) 2>/dev/null)
# tests/deb_package.rs installs this one.
SOCKET_GUARD_DEB := $(CURDIR)/$(DEB)
export SOCKET_GUARD_DEB

.PHONY: all build bootstrap test test-unit test-bench test-contrib test-integration run start stop \
        demo install deb test-deb bench bench-extra bench-floor valgrind demo-rescue screenshots seed-replay \
        memcheck soak fuzz clean fmt lint help

all: build

help:
	@# The header comment, from line 3 to its first empty '#' line.
	@sed -n '3,/^#$$/{/^#$$/!s/^# \{0,1\}//p}' Makefile

bootstrap:
	@scripts/bootstrap.sh

build: bootstrap
	$(CARGO) build --release
	@mkdir -p build
	@install -m 0755 $(SO_BUILT) $(SO)
	@echo "module: $(SO)"

test: build
	$(MAKE) --no-print-directory test-unit
	$(MAKE) --no-print-directory test-bench
	$(MAKE) --no-print-directory test-contrib
	$(MAKE) --no-print-directory test-integration

test-unit:
	$(CARGO) test --release --lib

# The pure part of make bench (table, SVG, the PERFORMANCE.md section): well under a second.
test-bench:
	python3 -m unittest discover -s benches -p 'test_*.py'

# The alert rules and their promtool unit tests (docs/fleet.md). That the rules and the Grafana
# dashboard name only metrics the module emits is tests/contrib_metrics.rs, an integration test.
test-contrib: bootstrap
	promtool check rules contrib/prometheus/socket_guard.rules.yml
	cd contrib/prometheus && promtool test rules socket_guard.rules.test.yml

# Integration tests start real Apache servers: run them serially (2 cores, bounded time).
# tests/deb_package.rs among them installs the package, so it is built first.
test-integration: build deb
	@if compgen -G 'tests/*.rs' >/dev/null; then \
	    echo "$(CARGO) test --release --no-fail-fast --test '*' -- --test-threads=1"; \
	    $(CARGO) test --release --no-fail-fast --test '*' -- --test-threads=1; \
	else \
	    echo "no integration tests in tests/"; \
	fi

deb: $(DEB)

$(DEB): $(DEB_INPUTS) | bootstrap
	scripts/deb.sh

# Only the package test (it also runs in test-integration): root, like CI.
test-deb: deb
	$(CARGO) test --release --test deb_package -- --test-threads=1

run: build
	PORT=$(PORT) MPM=$(MPM) scripts/run.sh

start: build
	PORT=$(PORT) MPM=$(MPM) scripts/run.sh --background

stop:
	@scripts/run.sh --stop

# scripts/demo.sh (when present) starts the demo server in the background and shows the guard at work.
demo: build
	@if [[ -x scripts/demo.sh ]]; then PORT=$(PORT) MPM=$(MPM) scripts/demo.sh; \
	else echo "scripts/demo.sh is not there yet; try 'make run'" >&2; exit 1; fi

install: build
	$(APXS) -i -n socket_guard $(SO)
	@if [[ -d $(MODS_AVAILABLE) ]]; then \
	    install -m 0644 apache-conf/socket_guard.load $(MODS_AVAILABLE)/socket_guard.load; \
	    if [[ -e $(MODS_AVAILABLE)/socket_guard.conf ]] && \
	       ! cmp -s apache-conf/socket_guard.conf $(MODS_AVAILABLE)/socket_guard.conf; then \
	        install -m 0644 apache-conf/socket_guard.conf $(MODS_AVAILABLE)/socket_guard.conf.new; \
	        echo "kept your $(MODS_AVAILABLE)/socket_guard.conf; the new default is socket_guard.conf.new"; \
	    else \
	        install -m 0644 apache-conf/socket_guard.conf $(MODS_AVAILABLE)/socket_guard.conf; \
	    fi; \
	    echo "installed $(MODS_AVAILABLE)/socket_guard.{load,conf}"; \
	    echo "enable with:  a2enmod socket_guard && apache2ctl configtest && systemctl reload apache2"; \
	else \
	    echo "no $(MODS_AVAILABLE): add to httpd.conf:"; \
	    echo "  LoadModule socket_guard_module $$($(APXS) -q LIBEXECDIR)/mod_socket_guard.so"; \
	    echo "and the <Location \"/socket-status\"> block from apache-conf/socket_guard.conf"; \
	fi

valgrind:
	@command -v valgrind >/dev/null 2>&1 || { echo "bench: installing valgrind (instruction counts)"; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null; }

# Not part of `make test`. Command-line variables (ROUNDS=5 ...) reach the scripts' environment.
bench: build valgrind
	benches/bench.py

bench-extra: build valgrind
	$(CARGO) bench --bench hooks
	$(CARGO) bench --bench scan
	$(CARGO) bench --bench latency
	$(CARGO) bench --bench status_render
	benches/instructions.sh
	KEEPALIVE=1 benches/instructions.sh
	VARIANTS="with without nothread" ROUNDS=3 benches/cpu_per_request.py
	benches/guard_process.py
	benches/status_page.py

# The instruction floor: hooks that do nothing (a C module, benches/floor/), and the module
# on Debian's default module set, both counted as `make bench` counts the module (~3 min).
bench-floor: build valgrind
	benches/floor.sh
	MODULE_SET=debian benches/floor.sh
	MODULE_SET=debian benches/instructions.sh
	MODULE_SET=debian KEEPALIVE=1 benches/instructions.sh

# The five kinds of CLOSE_WAIT socket on a real prefork server, end to end (needs root).
demo-rescue: build
	scripts/demo-rescue.py

# Not part of `make test` (root or sudo installs chromium): docs/screenshots/README.md. PORT
# only when given (the script takes 8080 if it is free, else a free port).
screenshots: build
	$(if $(filter command line environment,$(origin PORT)),PORT=$(PORT)) MPM=$(MPM) scripts/screenshots.sh

# Not part of `make test`: three Apache servers under load, one after the other (DURATION=, RATE=).
seed-replay: build
	benches/seed-replay.sh

# Not part of `make test` (~2 min, root): see docs/QUALITY.md. MEMCHECK_MPMS= picks the MPMs.
memcheck: build
	@command -v valgrind >/dev/null 2>&1 || { echo "memcheck: installing valgrind"; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null; }
	scripts/memcheck.py

# Not part of `make test` (root): SOAK_MINUTES= (whole run), SOAK_MPMS=; see docs/QUALITY.md.
soak: build
	scripts/soak.py

# Not part of `make test` (which runs 256 cases of each property): see docs/QUALITY.md.
fuzz: bootstrap
	FUZZ_CASES=$(FUZZ_CASES) CARGO=$(CARGO) scripts/fuzz.sh

# build/ holds the packages too; the debian/ files are what a dpkg-buildpackage run directly in
# this tree would leave (make deb builds in a copy under build/deb).
clean:
	@if [[ -e build/run/apache2.pid ]]; then scripts/run.sh --stop; fi
	-$(CARGO) clean
	rm -rf build
	rm -rf debian/.debhelper debian/libapache2-mod-socket-guard debian/tmp debian/files \
	       debian/*.substvars debian/debhelper-build-stamp debian/*.debhelper.log

fmt:
	$(CARGO) fmt --all

lint:
	$(CARGO) fmt --all --check
	@if $(CARGO) clippy --version >/dev/null 2>&1; then \
	    echo "$(CARGO) clippy $(CLIPPY_ARGS)"; \
	    $(CARGO) clippy $(CLIPPY_ARGS); \
	else \
	    echo "cargo clippy is not installed; skipped (rustup component add clippy)"; \
	fi
