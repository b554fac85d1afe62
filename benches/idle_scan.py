#!/usr/bin/env python3
"""One detection pass at 1k / 10k / 100k idle keep-alive connections, the status page at
10,000, and the shared memory per slot (part of `make bench`).

Standard library only; run as root. For each level of IDLE a fresh Apache is started with
the config of benches/guard_process.py (event MPM, ServerLimit 4 x ThreadsPerChild 64,
default SocketGuardScanInterval), sized so that event keeps every connection open:
SocketGuardSlots = level + 2048, four children (more above 48,000 connections, so that none
holds more than 15,000), AsyncRequestWorkerFactor large enough for the level, KeepAliveTimeout
900. Then `level` keep-alive connections are opened OPEN_BATCH at a time (each GETs a small
page once and stays idle; above 18,000, from several source addresses 127.0.0.2, .3, ...,
since one address has ~28k ephemeral ports), and:

  - the detection pass: LastScanUs (and the other LastScan* keys: LastScanFull tells the
    lookup passes from the full dumps, LastScanLookups counts the tuples asked for) of
    SCAN_SAMPLES distinct scans, read from /socket-status?auto right after each;
  - at STATUS_CONNS connections: every format of the status page fetched REPS times over a
    new HTTP/1.0 connection (connect to the last byte), with its size; at the other levels
    ?metrics only (what a Prometheus scrape costs there);
  - the SG0001 line: the segment's size for that slot count. Two levels give the bytes per
    slot as the slope (the fixed parts cancel).

Before each level it waits (up to 65 s) for the host's TIME_WAIT sockets to drain: the kernel's
dump walks them too, and the other parts of `make bench` leave tens of thousands. Above 18,000
connections the clients are held by helper processes (benches/idle_holders.py), since one
process may not have more than RLIMIT_NOFILE's hard limit of descriptors.

Writes build/bench/idle.json, which benches/bench.py turns into the table.

Environment: IDLE (1000,10000,100000), STATUS_CONNS (10000; 0: no status page), SCAN_SAMPLES
(12: with the default full-dump period of 5 intervals, 2 of them are dumps), REPS (7), OPEN_BATCH (32; event closes keep-alive connections of a child whose workers
are all busy), SOCKET_GUARD_SO, APACHE2, APACHE_MODULES_DIR, BENCH_KEEP=1.
"""

import json
import os
import re
import statistics
import sys

import guard_process as gp
import status_page
from idle_holders import Holders

OUT = os.path.join(gp.BENCH_DIR, "idle.json")
FORMATS = (("HTML", "/socket-status"), ("?json", "/socket-status?json"),
           ("?metrics", "/socket-status?metrics"), ("?auto", "/socket-status?auto"))
MAX_LEVEL = 200_000
TW_QUIET = 1000
# Four children of 64 threads; more for large levels, so that no child holds more than
# PER_CHILD connections (the descriptor limit of 20,000 a process cannot be raised here).
CHILDREN, THREADS, PER_CHILD = 4, 64, 15000
SG0001 = re.compile(r"SG0001: connection table created: ([0-9]+) slots, ([0-9]+) child rows, "
                    r"([0-9]+) bytes of shared memory")


def note(msg):
    print(f"idle-scan: {msg}", file=sys.stderr, flush=True)


def levels_of(raw):
    try:
        levels = sorted({int(x) for x in raw.replace(",", " ").split()})
    except ValueError:
        raise gp.BenchError(f"IDLE must list whole numbers, got {raw!r}")
    if not levels or levels[0] < 1 or levels[-1] > MAX_LEVEL:
        raise gp.BenchError(f"IDLE must list numbers within 1..{MAX_LEVEL}, got {raw!r}")
    return levels


def settings():
    return dict(gp.server_settings(),
                levels=levels_of(os.environ.get("IDLE", "1000,10000,100000")),
                status_conns=gp.env_int("STATUS_CONNS", 10000, 0, MAX_LEVEL),
                scan_samples=gp.env_int("SCAN_SAMPLES", 12, 1, 30),
                reps=gp.env_int("REPS", 7, 1, 50),
                open_batch=gp.env_int("OPEN_BATCH", 32, 1, 500),
                keepalive_timeout=900)


def server_cfg(cfg, n):
    """The server for n idle connections: a slot each (and room for the bench's own), enough
    children that none needs more descriptors than RLIMIT_NOFILE allows, each allowed 1.5 x
    its share by AsyncRequestWorkerFactor."""
    kids = max(CHILDREN, -(-n * 5 // (4 * PER_CHILD)))
    per_child = min(PER_CHILD, n * 3 // (2 * kids))
    return dict(cfg, slots=n + 2048, children=kids,
                async_factor=max(100, -(-(per_child - THREADS) // THREADS)))


def host_tcp():
    """TCP sockets on the host (/proc/net/sockstat: inuse, tw): the kernel's dump walks them."""
    with open("/proc/net/sockstat") as f:
        for line in f:
            if line.startswith("TCP:"):
                v = line.split()[1:]
                return dict(zip(v[::2], (int(x) for x in v[1::2])))
    return {}


def wait_time_wait(until):
    """Until the host's TIME_WAIT sockets (left by earlier benchmarks; they last 60 s) are few:
    the kernel's dump walks them too. Returns the seconds waited."""
    t0 = gp.mono()
    while host_tcp().get("tw", 0) > TW_QUIET and gp.mono() < until:
        gp.time.sleep(1)
    return round(gp.mono() - t0)


def wait_settled(srv, held, until):
    """Until the status page counts every held connection as open and idle."""
    auto = gp.status_auto(srv.port)
    while gp.num(auto, "OpenKeepalive") < held and gp.mono() < until:
        gp.time.sleep(0.5)
        auto = gp.status_auto(srv.port)
    return auto


def scan_keys(auto):
    """LastScanUs and whatever else the page says about the last pass (LastScan*)."""
    return sorted(k for k in auto if k.startswith("LastScan") and k != "LastScanAgeMs")


def sample_scans(srv, n):
    """n scans that all ran after the level settled: scan_autos's first read reports the scan
    before it, which may have run while the last batch's requests were still in flight."""
    interval = gp.num(gp.status_auto(srv.port), "ScanIntervalMs")
    autos = gp.scan_autos(srv.port, n + 1, interval)[1:]
    keys = scan_keys(autos[0]) if autos else ["LastScanUs"]
    return {k: [gp.num(a, k) for a in autos] for k in keys}


def status_formats(port, reps, formats=FORMATS):
    out = []
    for label, path in formats:
        sizes, times = set(), []
        for _ in range(reps):
            status, body, took = status_page.fetch(port, path)
            if status != 200:
                raise gp.BenchError(f"{path} answered {status}")
            sizes.add(len(body))
            times.append(took * 1000)
        out.append({"label": label, "path": path, "ms": times, "bytes": max(sizes)})
        note(f"  {label:9} {max(sizes):>9,} bytes, median {statistics.median(times):.1f} ms")
    return out


def segment(log):
    m = SG0001.search(log)
    return {"slots": int(m.group(1)), "child_rows": int(m.group(2)),
            "bytes": int(m.group(3))} if m else None


def level(cfg, work, n):
    waited = wait_time_wait(gp.mono() + 65)
    scfg = server_cfg(cfg, n)
    srv = gp.Server(scfg, work, f"idle-{n}")
    note(f"{n:,} connections: starting Apache ({scfg['children']} children, SocketGuardSlots "
         f"{scfg['slots']}, AsyncRequestWorkerFactor {scfg['async_factor']})")
    srv.start()
    holders = Holders()
    res = {"conns": n, "time_wait_waited_s": waited, "children": scfg["children"]}
    try:
        gp.wait_ready(srv, scfg["children"], gp.mono() + 30)
        held, fails, took = holders.open(srv.port, n, cfg["open_batch"], 60 + n / 200)
        res.update(held=held, fails=fails, open_s=round(took, 1))
        note(f"  held {held:,} after {took:.0f} s; failures {fails or 'none'}")
        auto = wait_settled(srv, held, gp.mono() + 60)
        res["auto"] = {k: auto.get(k) for k in ("Open", "OpenKeepalive", "OpenReading",
                                                "OpenHandling", "SlotsUsed", "SlotsTotal",
                                                "Untracked", "ScanIntervalMs",
                                                "FullScanIntervalMs")}
        res["host_tcp"] = host_tcp()
        res["scan"] = sample_scans(srv, cfg["scan_samples"]) if n in cfg["levels"] else {}
        if res["scan"]:
            note(f"  LastScanUs {res['scan'].get('LastScanUs')}")
        if n == cfg["status_conns"]:
            res["status"] = status_formats(srv.port, cfg["reps"])
        else:  # what a Prometheus scrape costs at this level (docs/SCALING.md)
            res["scrape"] = status_formats(srv.port, cfg["reps"], FORMATS[2:3])
        res["closed_by_server"] = holders.closed_by_server()
        res["segment"] = segment(srv.error_log())
        res["load"] = gp.loadavg()
    finally:
        holders.close()
        srv.stop()
        gp.REG.servers.remove(srv)
    return res


def todo(cfg):
    """The levels to run: IDLE's and the status page's."""
    return sorted(set(cfg["levels"]) | ({cfg["status_conns"]} if cfg["status_conns"] else set()))


def body(cfg, work):
    t0 = gp.mono()
    gp.raise_nofile()  # as far as the hard limit lets it; the helpers share the connections
    results = [level(cfg, work, n) for n in todo(cfg)]
    return json.dumps({"levels": results, "status_conns": cfg["status_conns"],
                       "scan_samples": cfg["scan_samples"], "reps": cfg["reps"],
                       "seconds": round(gp.mono() - t0)}, indent=1)


if __name__ == "__main__":
    sys.exit(gp.bench_main(settings, lambda cfg: sum(240 + n // 100 for n in todo(cfg)), body,
                           "idle.", OUT, note))
