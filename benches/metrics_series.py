#!/usr/bin/env python3
"""How many Prometheus series one server emits: a real /socket-status?metrics scrape with N
name-based vhosts whose leak reports are full (16 paths + 16 clients each). For
docs/SCALING.md; part of `make bench`.

Standard library only; run as root. For each N of VHOSTS a fresh Apache (the config of
benches/guard_process.py — its main server and the `rescue.test` vhost on a second port —
plus N vhosts `vK.test` on the first port with `SocketGuardAutoClose On`,
`SocketGuardCloseWaitTimeout 100ms`, and `SocketGuardScanInterval 100ms`) gets, per vhost,
16 clients from 16 source addresses 127.0.0.10..25, client i asking for
/cgi-bin/slow/pNN (a CGI that answers a first line, then sleeps). Once every client has its
first line, all half-close: their connections sit in CLOSE_WAIT, the guard closes them past
the timeout and counts each in the leak report, under 16 distinct paths and 16 distinct
clients per vhost. When ?auto lists 16 LeakPath and 16 LeakClient lines per vhost, ?metrics is
scraped and its series (sample lines) counted per family.

Writes build/bench/series.json, which benches/bench.py turns into the table and the formula.

Environment: VHOSTS (1,4), SOCKET_GUARD_SO, APACHE2, APACHE_MODULES_DIR, BENCH_KEEP=1.
"""

import json
import os
import selectors
import socket
import sys

import guard_process as gp

OUT = os.path.join(gp.BENCH_DIR, "series.json")
REPORT_K = 16
CHILDREN = 4
HOLD_SECS = 60


def note(msg):
    print(f"metrics-series: {msg}", file=sys.stderr, flush=True)


class SeriesServer(gp.Server):
    """guard_process.py's server plus cfg["vhosts"] name-based vhosts on its first port."""

    def config_text(self):
        vhosts = "".join(f"""<VirtualHost 127.0.0.1:{self.port}>
    ServerName v{k}.test
    SocketGuardAutoClose On
    SocketGuardCloseWaitTimeout 100ms
</VirtualHost>
""" for k in range(1, self.cfg["vhosts"] + 1))
        return super().config_text() + "SocketGuardScanInterval 100ms\n" + vhosts


def settings():
    raw = os.environ.get("VHOSTS", "1,4")
    try:
        counts = sorted({int(x) for x in raw.replace(",", " ").split()})
    except ValueError:
        raise gp.BenchError(f"VHOSTS must list whole numbers, got {raw!r}")
    if not counts or counts[0] < 1 or counts[-1] > 8:
        raise gp.BenchError(f"VHOSTS must list numbers within 1..8, got {raw!r}")
    return dict(gp.server_settings(), counts=counts, slots=4096, keepalive_timeout=300)


def stuck_client(port, vhost, i):
    """A client from 127.0.0.(10 + i) asking vhost for the i-th path of the slow CGI."""
    s = gp.REG.track(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
    s.setsockopt(socket.IPPROTO_IP, gp.IP_BIND_ADDRESS_NO_PORT, 1)
    s.bind((f"127.0.0.{10 + i}", 0))
    s.settimeout(5)
    s.connect((gp.HOST, port))
    s.sendall(f"GET /cgi-bin/slow/p{i:02}?SLEEP={HOLD_SECS} HTTP/1.1\r\nHost: {vhost}\r\n\r\n"
              .encode())
    s.setblocking(False)
    return s


def wait_first_lines(socks, until):
    """Until every client has the CGI's first line: its request is being handled."""
    sel = selectors.DefaultSelector()
    bufs = {s: b"" for s in socks}
    for s in socks:
        sel.register(s, selectors.EVENT_READ)
    while bufs and gp.mono() < until:
        for key, _ in sel.select(timeout=0.5):
            b = key.fileobj.recv(65536)
            if not b:
                raise gp.BenchError("a stuck client was closed before its first line")
            bufs[key.fileobj] += b
            if b"first line" in bufs[key.fileobj]:
                sel.unregister(key.fileobj)
                del bufs[key.fileobj]
    sel.close()
    if bufs:
        raise gp.BenchError(f"{len(bufs)} clients got no first line in time")


def wait_full_report(port, n_vhosts, until):
    """Until ?auto lists REPORT_K paths and clients for each of the n vhosts."""
    want = REPORT_K * n_vhosts
    while gp.mono() < until:
        r = gp.http_get(port, "/socket-status?auto")
        text = r[1].decode("utf-8", "replace") if r and r[0] == 200 else ""
        lines = text.splitlines()
        got = (sum(l.startswith("LeakPath: v") for l in lines),
               sum(l.startswith("LeakClient: v") for l in lines))
        if got == (want, want):
            return sum(l.startswith("Vhost: ") for l in lines)
        gp.time.sleep(0.2)
    raise gp.BenchError(f"the leak report did not fill ({want} paths and clients wanted)")


def count_series(text):
    """{family: series} of a Prometheus text exposition (histograms: _bucket, _sum, _count)."""
    types, out = {}, {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            types[name] = kind
            out[name] = 0
        elif line and not line.startswith("#"):
            name = line.split("{", 1)[0].split(" ", 1)[0]
            for suffix in ("_bucket", "_sum", "_count"):
                base = name[: -len(suffix)]
                if name.endswith(suffix) and types.get(base) == "histogram":
                    name = base
            out[name] = out.get(name, 0) + 1
    return out


def one(cfg, work, n):
    srv = SeriesServer(dict(cfg, vhosts=n), work, f"series-{n}")
    note(f"{n} vhosts: starting Apache")
    srv.start()
    socks = []
    try:
        gp.wait_ready(srv, CHILDREN, gp.mono() + 30)
        socks = [stuck_client(srv.port, f"v{k}.test", i)
                 for k in range(1, n + 1) for i in range(REPORT_K)]
        wait_first_lines(socks, gp.mono() + 30)
        for s in socks:
            s.shutdown(socket.SHUT_WR)
        rows = wait_full_report(srv.port, n, gp.mono() + 30)
        r = gp.http_get(srv.port, "/socket-status?metrics")
        if r is None or r[0] != 200:
            raise gp.BenchError("?metrics did not answer 200")
        families = count_series(r[1].decode("utf-8", "replace"))
        children = len(gp.status_auto(srv.port).get("Child[]", []))
        note(f"  {rows} vhost rows, {children} children, {sum(families.values())} series")
        return {"vhosts": n, "vhost_rows": rows, "children": children, "families": families,
                "series": sum(families.values()), "bytes": len(r[1])}
    finally:
        for s in socks:
            gp.REG.reset_close(s)
        srv.stop()
        gp.REG.servers.remove(srv)


def body(cfg, work):
    return json.dumps({"runs": [one(cfg, work, n) for n in cfg["counts"]],
                       "report_k": REPORT_K}, indent=1)


if __name__ == "__main__":
    sys.exit(gp.bench_main(settings, lambda cfg: 120 * len(cfg["counts"]), body, "series.",
                           OUT, note))
