#!/usr/bin/env python3
"""Size and time of /socket-status with many idle keep-alive connections, before and after the
page was bounded (issue 9: "a page that stays readable at scale").

Standard library only; reuses the server and client helpers of benches/guard_process.py. Run
as root from anywhere:

    benches/status_page.py                                   # this build only
    BEFORE_SO=build/main-src/target/release/libmod_socket_guard.so benches/status_page.py

For each module (BEFORE_SO when given, then SOCKET_GUARD_SO or build/mod_socket_guard.so), a
fresh Apache (event MPM, the config of guard_process.py: ServerLimit 4 x ThreadsPerChild 64,
AsyncRequestWorkerFactor 100, KeepAliveTimeout >= 300, SocketGuardSlots IDLE_CONNS + 2048,
RLIMIT_NOFILE raised for Apache and this script) is started and IDLE_CONNS keep-alive
connections are opened, OPEN_BATCH at a time (each GETs a small page once, then stays idle;
larger bursts make event close keep-alive connections while all of a child's workers are
busy). Then each URL below is fetched REPS times, one after the other, over a new connection
with HTTP/1.0 (the body ends at the server's close), and the body size and the wall time from
connect to the last byte are recorded (median, min, max):

    HTML default   /socket-status
    HTML all       /socket-status?all
    JSON default   /socket-status?json
    JSON all       /socket-status?json&all
    ?auto          /socket-status?auto
    ?metrics       /socket-status?metrics

A module from before the bound ignores `all` (unknown tokens are ignored), so its "default"
and "all" rows are the same page. The time includes building the snapshot (a walk of every
slot), rendering and the transfer over loopback; nothing else talks to the server meanwhile.
Results are printed and written to build/bench/status-page.md.

Environment:
  IDLE_CONNS   idle keep-alive connections (default 10000, 0..30000)
  REPS         fetches per URL (default 7, 1..50)
  OPEN_BATCH   connections opened at once (default 32, 1..500)
  BEFORE_SO    the module to compare with (optional; e.g. main's build)
  SOCKET_GUARD_SO, APACHE2, APACHE_MODULES_DIR, BENCH_KEEP: as in guard_process.py
"""

import os
import resource
import signal
import socket
import statistics
import sys
import time

import guard_process as gp

RESULTS = os.path.join(gp.BENCH_DIR, "status-page.md")
URLS = (
    ("HTML default", "/socket-status"),
    ("HTML all", "/socket-status?all"),
    ("JSON default", "/socket-status?json"),
    ("JSON all", "/socket-status?json&all"),
    ("?auto", "/socket-status?auto"),
    ("?metrics", "/socket-status?metrics"),
)
MAX_BODY = 256 << 20


def note(msg):
    print(f"status-page: {msg}", file=sys.stderr, flush=True)


def settings():
    cfg = dict(gp.server_settings(),
               idle_conns=gp.env_int("IDLE_CONNS", 10000, 0, 30000),
               reps=gp.env_int("REPS", 7, 1, 50),
               open_batch=gp.env_int("OPEN_BATCH", 32, 1, 500),
               before_so=os.environ.get("BEFORE_SO", ""),
               keepalive_timeout=600)
    cfg["slots"] = cfg["idle_conns"] + 2048
    if cfg["before_so"] and not os.path.exists(cfg["before_so"]):
        raise gp.BenchError(f"module {cfg['before_so']} not found")
    if cfg["before_so"]:
        cfg["before_so"] = os.path.abspath(cfg["before_so"])
    if not os.access(cfg["apache2"], os.X_OK):
        raise gp.BenchError(f"{cfg['apache2']} not found (set APACHE2)")
    return cfg


def fetch(port, path, timeout=60.0):
    """(status, body bytes, seconds from connect to the server's close)."""
    s = gp.REG.track(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
    try:
        s.settimeout(timeout)
        t0 = time.perf_counter()
        s.connect((gp.HOST, port))
        s.sendall(f"GET {path} HTTP/1.0\r\nHost: {gp.HOST}\r\n\r\n".encode())
        parts, size = [], 0
        while True:
            b = s.recv(1 << 20)
            if not b:
                break
            parts.append(b)
            size += len(b)
            if size > MAX_BODY:
                raise gp.BenchError(f"{path}: more than {MAX_BODY} bytes")
        took = time.perf_counter() - t0
    finally:
        gp.REG.reset_close(s)
    data = b"".join(parts)
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/") else 0
    return status, body, took


def measure(cfg, name, so, work):
    note(f"{name}: starting Apache with {so}")
    srv = gp.Server(dict(cfg, so=so), work, name)
    srv.start()
    held = []
    res = {"name": name, "so": so, "sha": gp.file_sha(so), "urls": []}
    try:
        time.sleep(2)  # the children finish starting their threads
        if cfg["idle_conns"]:
            note(f"{name}: opening {cfg['idle_conns']} keep-alive connections, "
                 f"{cfg['open_batch']} at a time")
            held, fails, took = gp.open_idle(srv.port, cfg["idle_conns"], cfg["open_batch"],
                                             gp.mono() + 600)
            res.update(held=len(held), fails=fails, open_s=took)
            note(f"{name}: held {len(held)} after {took:.1f} s; failures {fails or 'none'}")
            time.sleep(3)  # the last ones settle into keep-alive
        auto = gp.status_auto(srv.port)
        res["open"] = gp.num(auto, "Open")
        res["slots_used"] = gp.num(auto, "SlotsUsed")
        res["untracked"] = gp.num(auto, "Untracked")
        for label, path in URLS:
            sizes, times = set(), []
            for _ in range(cfg["reps"]):
                status, body, took = fetch(srv.port, path)
                if status != 200:
                    raise gp.BenchError(f"{name}: {path} answered {status}")
                sizes.add(len(body))
                times.append(took)
            res["urls"].append({"label": label, "path": path, "sizes": sorted(sizes),
                                "times": times})
            note(f"{name}: {label:13} {max(sizes):>10,} bytes, median "
                 f"{statistics.median(times) * 1000:.1f} ms")
        res["closed_by_server"] = gp.closed_by_server(held) if held else 0
        res["open_after"] = gp.num(gp.status_auto(srv.port), "Open")
    finally:
        for s in held:
            gp.REG.reset_close(s)
        srv.stop()
        gp.REG.servers.remove(srv)
    return res


def size_text(sizes):
    lo, hi = min(sizes), max(sizes)
    if hi >= 100_000:
        return f"{hi / 1e6:.2f} MB" if lo == hi or hi - lo < 10_000 else \
            f"{lo / 1e6:.2f}–{hi / 1e6:.2f} MB"
    return f"{hi / 1000:.1f} kB"


def report(cfg, runs, started, elapsed):
    out = ["# mod_socket_guard: /socket-status at scale", ""]
    out.append(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(started))}; "
               f"{os.cpu_count()} CPUs, load average {gp.loadavg()} at the end; "
               f"{cfg['idle_conns']:,} idle keep-alive connections; {cfg['reps']} fetches per "
               f"URL; run time {elapsed:.0f} s (`benches/status_page.py`).")
    out.append("")
    out.append("| module | URL | body | time median (min–max) |")
    out.append("|---|---|---:|---:|")
    for r in runs:
        for u in r["urls"]:
            t = [x * 1000 for x in u["times"]]
            out.append(f"| {r['name']} | `{u['path']}` ({u['label']}) | {size_text(u['sizes'])} "
                       f"| {statistics.median(t):.1f} ms ({min(t):.1f}–{max(t):.1f}) |")
    out.append("")
    for r in runs:
        out.append(f"- {r['name']}: {r['so']} (sha256 {r['sha']}…); held {r.get('held', 0):,} "
                   f"connections (failures: {r.get('fails') or 'none'}), Open {r['open']:,} "
                   f"before the fetches and {r['open_after']:,} after, SlotsUsed "
                   f"{r['slots_used']:,}, Untracked {r['untracked']}, closed by the server "
                   f"during the fetches {r['closed_by_server']}.")
    return "\n".join(out)


def main():
    started, t0 = time.time(), gp.mono()
    try:
        cfg = settings()
    except gp.BenchError as e:
        note(str(e))
        return 2
    gp.raise_nofile()
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft != resource.RLIM_INFINITY and soft < cfg["idle_conns"] + 256:
        note(f"RLIMIT_NOFILE is {soft}: too low for IDLE_CONNS={cfg['idle_conns']}")
        return 2
    modules = ([("before", cfg["before_so"])] if cfg["before_so"] else []) + [("after", cfg["so"])]
    signal.signal(signal.SIGALRM, gp.on_signal)
    signal.signal(signal.SIGINT, gp.on_signal)
    signal.signal(signal.SIGTERM, gp.on_signal)
    signal.alarm(len(modules) * (660 + 60 * cfg["reps"]))
    return gp.run_bench("status-page.", RESULTS, cfg["keep"], note, lambda work: report(
        cfg, [measure(cfg, name, so, work) for name, so in modules], started, gp.mono() - t0))


if __name__ == "__main__":
    sys.exit(main())
