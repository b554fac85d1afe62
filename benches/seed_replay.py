#!/usr/bin/env python3
"""Load driver, sampler and report for `make seed-replay` (see benches/seed-replay.sh).

Standard library only. Subcommands:

  load     one arm's load against an Apache on 127.0.0.1: crawler-like clients at a fixed rate
           (a share of them ask for URLs that never answer and give up after a few seconds),
           a probe that fetches a healthy page every 100 ms, and a TCP backend that accepts and
           never answers (the target of the server's ProxyPass /stuck/). Samples the server every
           500 ms (CLOSE_WAIT on its port, busy workers, memory) and writes one JSON result.
  ready    waits until the server answers a page with 200.
  stop     stops the Apache whose pid file is given (only if its command line names the
           config), then SIGKILLs the processes it left behind: those seen below it before and
           while it stopped (CGIs), verified by start time.
  report   the markdown table from the arms' JSON results.

Everything talks only to 127.0.0.1 and is bounded in time and in the number of open sockets.
"""

import argparse
import errno
import json
import os
import resource
import selectors
import signal
import socket
import sys
import threading
import time

from procstat import read_stat

HOST = "127.0.0.1"
STATE_CLOSE_WAIT = "08"
STATE_LISTEN = "0A"


def mono():
    return time.monotonic()


def log(msg):
    print(msg, flush=True)


# --- /proc ------------------------------------------------------------------------------------

def process_table():
    """{pid: (ppid, starttime, comm, state)} of every process."""
    table = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = read_stat(int(name))
            if st is not None:
                table[int(name)] = st
    return table


def descendants(table, root):
    """Pids below root (not root itself), by ppid links."""
    children = {}
    for pid, (ppid, _, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    out, todo = [], list(children.get(root, []))
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def memory_kib(pid):
    """PSS of a process in KiB (smaps_rollup), else RSS; 0 if it is gone."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]), "pss"
    except OSError:
        pass
    try:
        with open(f"/proc/{pid}/statm") as f:
            rss_pages = int(f.read().split()[1])
        return rss_pages * (os.sysconf("SC_PAGE_SIZE") // 1024), "rss"
    except (OSError, ValueError, IndexError):
        return 0, "none"


def tcp_sockets():
    """[(local_port, remote_port, state, inode)] from /proc/net/tcp and tcp6."""
    out = []
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(path) as f:
                next(f, None)
                for line in f:
                    p = line.split()
                    if len(p) < 10:
                        continue
                    out.append((int(p[1].rsplit(":", 1)[1], 16), int(p[2].rsplit(":", 1)[1], 16),
                                p[3], int(p[9])))
        except OSError:
            pass
    return out


def socket_inodes(pid):
    inodes = []
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return inodes
    for fd in names:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.append(int(target[8:-1]))
    return inodes


# --- tiny HTTP helpers (blocking, for status pages and readiness) -----------------------------

def http_get(port, path, timeout):
    """(status, body) or None on any failure or timeout."""
    deadline = mono() + timeout
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as s:
            s.sendall(f"GET {path} HTTP/1.0\r\nHost: {HOST}\r\nUser-Agent: seed-replay-sampler\r\n\r\n"
                      .encode())
            chunks = []
            while True:
                left = deadline - mono()
                if left <= 0:
                    return None
                s.settimeout(left)
                b = s.recv(65536)
                if not b:
                    break
                chunks.append(b)
                if sum(map(len, chunks)) > 1 << 20:
                    return None
    except OSError:
        return None
    data = b"".join(chunks)
    head, _, body = data.partition(b"\r\n\r\n")
    try:
        status = int(head.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return None
    return status, body.decode("utf-8", "replace")


def parse_auto(body):
    out = {}
    for line in body.splitlines():
        k, sep, v = line.partition(":")
        if sep and k and " " not in k:
            out[k] = v.strip()
    return out


# --- sampler ----------------------------------------------------------------------------------

class Sampler(threading.Thread):
    """Every `interval` s: CLOSE_WAIT on the server port, busy workers, memory of the server."""

    def __init__(self, port, backend_port, server_pid, module, interval, t0, max_workers):
        super().__init__(daemon=True)
        self.port, self.backend_port, self.server_pid = port, backend_port, server_pid
        self.module, self.interval, self.t0 = module, interval, t0
        self.max_workers = max_workers
        self.samples = []
        self.guard = {}  # last ?auto values of /socket-status that answered
        self.guard_t = None  # when they were read (s since the load started)
        self.guard_misses = 0
        self.stop_event = threading.Event()
        self.mem_reads = 0
        self.mem_rss_reads = 0  # smaps_rollup unreadable, RSS used instead

    def run(self):
        n = 0
        next_at = mono()
        while not self.stop_event.is_set():
            try:
                self.samples.append(self.sample(n))
            except Exception as e:  # a sampler bug must not hang the run
                log(f"  sampler error: {e!r}")
            n += 1
            next_at += self.interval
            self.stop_event.wait(max(0.0, next_at - mono()))

    def sample(self, n):
        t = mono() - self.t0
        socks = tcp_sockets()
        cw = [s for s in socks if s[0] == self.port and s[2] == STATE_CLOSE_WAIT]
        cw_total = len(cw)
        # A socket still in the listen queue has no file yet: inode 0. Those were never accepted.
        cw_backlog = sum(1 for s in cw if s[3] == 0)
        by_inode = {s[3]: s for s in socks if s[3] != 0}

        table = process_table()
        tree = [self.server_pid] + descendants(table, self.server_pid)
        mem = 0
        for pid in tree:
            kib, kind = memory_kib(pid)
            mem += kib
            if kib:  # an exiting process may have no memory left to read
                self.mem_reads += 1
                self.mem_rss_reads += kind == "rss"
        # Busy estimate from /proc: a child of the server that holds a client connection on the
        # server port, a connection to the backend, or a child process of its own (a CGI).
        parents = {table[p][0] for p in tree if p in table}
        busy_proc = 0
        for pid in tree:
            st = table.get(pid)
            if st is None or st[0] != self.server_pid:
                continue
            busy = pid in parents
            if not busy:
                for ino in socket_inodes(pid):
                    s = by_inode.get(ino)
                    if s is None or s[2] == STATE_LISTEN:
                        continue
                    if s[0] == self.port or s[1] == self.backend_port:
                        busy = True
                        break
            busy_proc += busy

        # When /proc says every worker is busy, a status request would only wait in the listen
        # queue, time out and add a CLOSE_WAIT socket of our own: skip it.
        busy_status, status = None, "skipped"
        if busy_proc < self.max_workers:
            status = "unanswered"
            r = http_get(self.port, "/server-status?auto", 0.4)
            if r is not None and r[0] == 200:
                v = parse_auto(r[1]).get("BusyWorkers")
                if v is not None and v.isdigit():
                    busy_status, status = int(v), "ok"
            if self.module and n % 4 == 0:
                self.poll_guard()
        return {"t": round(t, 2), "close_wait": cw_total, "close_wait_backlog": cw_backlog,
                "busy_status": busy_status, "status": status, "busy_proc": busy_proc,
                "mem_kib": mem, "procs": len(tree)}

    def poll_guard(self, timeout=0.4):
        r = http_get(self.port, "/socket-status?auto", timeout)
        if r is not None and r[0] == 200:
            self.guard = parse_auto(r[1])
            self.guard_t = round(mono() - self.t0, 1)
            return True
        self.guard_misses += 1
        return False


# --- load -------------------------------------------------------------------------------------

class Conn:
    __slots__ = ("sock", "role", "kind", "t_rel", "deadline", "out", "head", "state")


class Load:
    def __init__(self, a):
        self.a = a
        self.sel = selectors.DefaultSelector()
        self.open = {}  # fileno -> Conn
        self.backend_conns = {}
        self.crawl = {"sent": 0, "stuck": 0, "ok": 0, "http_other": 0, "gave_up": 0, "errors": 0,
                      "skipped_cap": 0, "stuck_ok": 0, "stuck_http_other": 0, "stuck_gave_up": 0,
                      "stuck_errors": 0, "statuses": {}}
        self.probes = []  # (t_rel, ok, latency_s)
        self.probe_skipped = 0
        self.backend_accepted = 0

    def start_backend(self):
        ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind((HOST, self.a.backend_port))
        ls.listen(1024)
        ls.setblocking(False)
        self.sel.register(ls, selectors.EVENT_READ, ("listen", None))
        self.listener = ls

    def backend_accept(self):
        for _ in range(64):
            try:
                s, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            self.backend_accepted += 1
            if len(self.backend_conns) >= self.a.max_open:
                s.close()
                continue
            s.setblocking(False)
            self.backend_conns[s.fileno()] = s
            self.sel.register(s, selectors.EVENT_READ, ("backend", None))

    def backend_read(self, s):
        try:
            b = s.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            b = b""
        if not b:  # Apache gave up on it (its child ended or timed out): close our side too
            self.sel.unregister(s)
            self.backend_conns.pop(s.fileno(), None)
            s.close()
        # else: read and ignore the request; never answer

    def launch(self, role, kind, path, t_rel, timeout):
        if len(self.open) >= self.a.max_open:
            if role == "probe":
                self.probe_skipped += 1
                self.probes.append((t_rel, False, None))
            else:
                self.crawl["skipped_cap"] += 1
            return
        c = Conn()
        c.role, c.kind, c.t_rel, c.deadline = role, kind, t_rel, mono() + timeout
        agent = "seed-replay-probe" if role == "probe" else "seed-replay-crawler"
        c.out = (f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\nUser-Agent: {agent}\r\n"
                 f"Accept: */*\r\nConnection: close\r\n\r\n").encode()
        c.head = b""
        c.state = "connect"
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        c.sock = s
        if role == "crawler":
            self.crawl["sent"] += 1
            if kind != "healthy":
                self.crawl["stuck"] += 1
        rc = s.connect_ex((HOST, self.a.port))
        if rc not in (0, errno.EINPROGRESS):
            s.close()
            self.record(c, "error")
            return
        self.open[s.fileno()] = c
        self.sel.register(s, selectors.EVENT_WRITE, ("client", c))

    def record(self, c, outcome, status=None):
        if c.role == "probe":
            ok = outcome == "done" and status == 200
            self.probes.append((c.t_rel, ok, (mono() - (c.deadline - self.a.probe_timeout)) if ok else None))
            return
        pre = "stuck_" if c.kind != "healthy" else ""
        if outcome == "done":
            key = "ok" if status is not None and 200 <= status < 300 else "http_other"
            st = self.crawl["statuses"]
            st[str(status)] = st.get(str(status), 0) + 1
        elif outcome == "gave_up":
            key = "gave_up"
        else:
            key = "errors"
        self.crawl[key] += 1
        if pre:
            self.crawl[pre + key] += 1

    def finish(self, c, outcome):
        s = c.sock
        self.open.pop(s.fileno(), None)
        try:
            self.sel.unregister(s)
        except (KeyError, ValueError):
            pass
        status = None
        if outcome == "done":
            try:
                status = int(c.head.split(b" ", 2)[1])
            except (IndexError, ValueError):
                outcome = "error"
        # Giving up: close() sends a FIN (nothing unread is left in the receive buffer), as a
        # crawler's timeout does. The server's socket goes to CLOSE_WAIT if it still holds it.
        s.close()
        self.record(c, outcome, status)

    def client_event(self, c, mask):
        s = c.sock
        if c.state == "connect":
            err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                self.finish(c, "error")
                return
            c.state = "send"
        if c.state == "send":
            try:
                n = s.send(c.out)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self.finish(c, "error")
                return
            c.out = c.out[n:]
            if not c.out:
                c.state = "read"
                self.sel.modify(s, selectors.EVENT_READ, ("client", c))
            return
        try:
            b = s.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.finish(c, "error")
            return
        if not b:
            self.finish(c, "done")
            return
        if len(c.head) < 64:
            c.head += b[:64]

    def run(self, server_pid):
        a = self.a
        self.start_backend()
        t0 = mono() + 0.2
        sampler = Sampler(a.port, a.backend_port, server_pid, a.module, a.sample_interval, t0,
                          a.max_workers)
        sampler.start()
        n_crawl = int(a.duration * a.rate)
        n_probe = int(a.duration / a.probe_interval)
        ci = pj = 0
        next_progress = t0 + a.progress
        last_probe_idx = 0
        end_by = t0 + a.duration + max(a.give_up, a.probe_timeout) + 2
        while True:
            now = mono()
            while ci < n_crawl and t0 + ci / a.rate <= now:
                t_rel = ci / a.rate
                kind, path = "healthy", "/page.html"
                if a.stuck_every > 0 and ci % a.stuck_every == a.stuck_every - 1:
                    if (ci // a.stuck_every) % 2 == 0:
                        kind, path = "cgi", "/cgi-bin/hang"
                    else:
                        kind, path = "proxy", f"/stuck/item/{ci}"
                self.launch("crawler", kind, path, t_rel, a.give_up)
                ci += 1
            while pj < n_probe and t0 + pj * a.probe_interval <= now:
                self.launch("probe", "probe", "/index.html", pj * a.probe_interval, a.probe_timeout)
                pj += 1
            for c in [c for c in self.open.values() if now >= c.deadline]:
                self.finish(c, "gave_up")
            if now >= next_progress:
                next_progress += a.progress
                recent = self.probes[last_probe_idx:]
                last_probe_idx = len(self.probes)
                ok = sum(1 for p in recent if p[1])
                s = sampler.samples[-1] if sampler.samples else {}
                bs = s.get("busy_status")
                log(f"  [{a.arm}] t={now - t0:5.1f}s  probe {ok}/{len(recent)} ok"
                    f"  CLOSE_WAIT {s.get('close_wait', '?')} (backlog {s.get('close_wait_backlog', '?')})"
                    f"  busy {bs if bs is not None else '?'}/proc {s.get('busy_proc', '?')}"
                    f"  mem {s.get('mem_kib', 0) / 1024:.1f} MiB  open sockets {len(self.open)}"
                    f"  backend conns {len(self.backend_conns)}")
            if ci >= n_crawl and pj >= n_probe and not self.open:
                break
            if now > end_by:  # cannot happen (every client has a deadline); belt and braces
                for c in list(self.open.values()):
                    self.finish(c, "gave_up")
                break
            nxt = now + 0.05
            if ci < n_crawl:
                nxt = min(nxt, t0 + ci / a.rate)
            if pj < n_probe:
                nxt = min(nxt, t0 + pj * a.probe_interval)
            for key, mask in self.sel.select(max(0.0, nxt - mono())):
                role, c = key.data
                if role == "client":
                    self.client_event(c, mask)
                elif role == "listen":
                    self.backend_accept()
                else:
                    self.backend_read(key.fileobj)
        # One more look at the guard's counters once the load is over.
        sampler.stop_event.set()
        sampler.join(5)
        guard, guard_final = {}, False
        if a.module:
            for _ in range(6):
                if sampler.poll_guard(timeout=1.0):
                    guard_final = True
                    break
                time.sleep(0.5)
            guard = sampler.guard
        for s in list(self.backend_conns.values()):
            s.close()
        self.listener.close()
        res = self.result(sampler, guard)
        res["guard_final"] = guard_final
        res["guard_t"] = sampler.guard_t
        res["error_log"] = error_log_counts(a.error_log) if a.error_log else None
        return res

    def result(self, sampler, guard):
        a = self.a
        samples = sampler.samples
        # "The last 30 s" of a full-length arm; the second half of a short trial run.
        window = 30.0 if a.duration >= 45 else a.duration / 2
        probes = self.probes
        last = [p for p in probes if p[0] >= a.duration - window]

        def pct(xs):
            return round(100.0 * sum(1 for p in xs if p[1]) / len(xs), 2) if xs else None

        def mx(key):
            vals = [s[key] for s in samples if s.get(key) is not None]
            return max(vals) if vals else None
        lat = sorted(p[2] for p in probes if p[1])
        guard_keys = ("StoppedCgi", "StoppedChild", "ForceClosedGuard", "AbandonedNow",
                      "CloseWaitNow", "Accepted", "KernelCloseWaitUntracked")
        # The probe's first failure: when the site went down (if it did).
        first_fail = next((p[0] for p in probes if not p[1]), None)
        return {
            "arm": a.arm, "label": a.label, "port": a.port, "duration_s": a.duration,
            "rate": a.rate, "stuck_every": a.stuck_every, "give_up_s": a.give_up,
            "probe": {"attempts": len(probes), "ok": sum(1 for p in probes if p[1]),
                      "availability_pct": pct(probes), "window_s": window,
                      "availability_last_pct": pct(last), "last_attempts": len(last),
                      "skipped_cap": self.probe_skipped,
                      "first_failure_s": first_fail,
                      "latency_ms_median": round(lat[len(lat) // 2] * 1000, 1) if lat else None},
            "crawler": self.crawl,
            "backend_accepted": self.backend_accepted,
            "max_close_wait": mx("close_wait"),
            "max_close_wait_backlog": mx("close_wait_backlog"),
            "max_close_wait_accepted": max((s["close_wait"] - s["close_wait_backlog"] for s in samples),
                                           default=None),
            "max_busy_status": mx("busy_status"),
            "max_busy_proc": mx("busy_proc"),
            "status_misses": sum(1 for s in samples if s.get("busy_status") is None),
            "status_skipped": sum(1 for s in samples if s.get("status") == "skipped"),
            "samples_n": len(samples),
            "max_mem_mib": round(mx("mem_kib") / 1024, 1) if mx("mem_kib") is not None else None,
            "mem_kind": ("rss" if sampler.mem_rss_reads * 10 > sampler.mem_reads else "pss"),
            "max_procs": mx("procs"),
            "guard": {k: guard.get(k) for k in guard_keys} if a.module else None,
            "guard_misses": sampler.guard_misses if a.module else None,
            "samples": samples,
        }


def error_log_counts(path):
    """How often the module's action messages appear in the error log."""
    ids = {"SG0015": "closed", "SG0021": "cgi_signals", "SG0022": "children_ended"}
    out = {v: 0 for v in ids.values()}
    try:
        with open(path, errors="replace") as f:
            for line in f:
                for k, v in ids.items():
                    if k + ":" in line:
                        out[v] += 1
    except OSError:
        return None
    return out


def cmd_load(a):
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = min(hard, 65536) if hard != resource.RLIM_INFINITY else 65536
        if soft < want:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    except (ValueError, OSError):
        pass
    with open(a.pidfile) as f:
        server_pid = int(f.read().strip())
    load = Load(a)
    res = load.run(server_pid)
    with open(a.json, "w") as f:
        json.dump(res, f, indent=1)
    p, c = res["probe"], res["crawler"]
    log(f"  [{a.arm}] done: probe {p['ok']}/{p['attempts']} ok ({p['availability_pct']}%),"
        f" last {p['window_s']:g}s {p['availability_last_pct']}%;"
        f" crawler sent {c['sent']} (stuck {c['stuck']}): ok {c['ok']}, other status {c['http_other']}"
        f" {c['statuses']}, gave up {c['gave_up']}, errors {c['errors']};"
        f" max CLOSE_WAIT {res['max_close_wait']} (never accepted {res['max_close_wait_backlog']}),"
        f" busy max {res['max_busy_status']} (server-status; {res['status_misses']}/{res['samples_n']}"
        f" samples without it) / {res['max_busy_proc']} (/proc), mem max {res['max_mem_mib']} MiB")
    if res["guard"] is not None:
        when = "at the end" if res["guard_final"] else f"last answered at t={res['guard_t']}s"
        log(f"  [{a.arm}] /socket-status?auto ({when}): {res['guard']}")
    if res["error_log"] is not None and a.module:
        e = res["error_log"]
        log(f"  [{a.arm}] error log: {e['closed']} connections closed by the guard (SG0015),"
            f" {e['cgi_signals']} CGI signals (SG0021), {e['children_ended']} children ended (SG0022)")


# --- readiness and stop -----------------------------------------------------------------------

def cmd_ready(a):
    until = mono() + a.timeout
    while mono() < until:
        r = http_get(a.port, a.path, 1.0)
        if r is not None and r[0] == 200:
            return 0
        time.sleep(0.1)
    print(f"seed_replay: the server on port {a.port} did not answer {a.path} within {a.timeout}s",
          file=sys.stderr)
    return 1


def server_pid_from(pidfile, conf):
    try:
        with open(pidfile) as f:
            pid = int(f.read().strip())
    except (OSError, ValueError):
        return None
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return None
    # Only an Apache started from our config: the pid may have been reused.
    return pid if conf in cmdline else None


def cmd_stop(a):
    pid = server_pid_from(a.pidfile, a.conf)
    if pid is None:
        return 0
    st = read_stat(pid)
    if st is None:
        return 0
    root_start = st[1]
    seen = {}  # pid -> (starttime, comm) of everything seen below the server

    def remember():
        table = process_table()
        for d in descendants(table, pid):
            seen.setdefault(d, (table[d][1], table[d][2]))
    remember()
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    until = mono() + a.timeout
    while mono() < until:
        st = read_stat(pid)
        if st is None or st[1] != root_start or st[3] == "Z":
            break
        remember()
        time.sleep(0.1)
    else:
        print(f"seed_replay: Apache pid {pid} still runs {a.timeout}s after SIGTERM: SIGKILL",
              file=sys.stderr)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        time.sleep(0.2)
    # Whatever it left behind (e.g. a CGI's `sleep`, re-parented away when its parent died),
    # verified by start time so a reused pid is never touched.
    left = []
    for d, (start, comm) in seen.items():
        st = read_stat(d)
        if st is not None and st[1] == start and st[3] != "Z":
            try:
                os.kill(d, signal.SIGKILL)
                left.append(f"{d}:{comm}")
            except ProcessLookupError:
                pass
    if a.report:
        with open(a.report, "w") as f:
            json.dump({"left_behind": left}, f)
    if left:
        print(f"  stopped; SIGKILLed {len(left)} process(es) it left behind: {' '.join(left[:10])}"
              f"{' ...' if len(left) > 10 else ''}")
    return 0


# --- report -----------------------------------------------------------------------------------

def fmt(v, suffix=""):
    return "n/a" if v is None else f"{v}{suffix}"


def cmd_report(a):
    arms = []
    for path in a.results:
        with open(path) as f:
            arms.append(json.load(f))
    if not arms:
        print("seed_replay: no results", file=sys.stderr)
        return 1
    left = {}
    for path in a.results:
        lp = os.path.join(os.path.dirname(path), "left-behind.json")
        try:
            with open(lp) as f:
                left[path] = len(json.load(f)["left_behind"])
        except (OSError, ValueError, KeyError):
            left[path] = None
    cwt, scan = a.close_wait_timeout_ms / 1000, a.scan_interval_ms / 1000
    duration, rate, every = arms[0]["duration_s"], arms[0]["rate"], arms[0]["stuck_every"]
    stuck_rate = rate / every if every else 0.0
    hold = cwt + scan
    bound = stuck_rate * hold
    # Stuck requests arrive evenly spaced, so a window of `hold` seconds holds at most
    # floor(rate * hold) + 1 of them (one at each end).
    bound_n = int(bound + 1e-9) + 1
    window = arms[0]["probe"]["window_s"]
    L = []
    L.append("# seed-replay: stuck handlers and crawlers that give up")
    L.append("")
    L.append(f"{a.date}; {a.version}; {a.nproc} CPUs; mpm_prefork, MaxRequestWorkers 20;"
             f" {duration:g} s of load per arm.")
    L.append("")
    L.append(f"Load: crawler clients open a new connection {rate:g}/s and give up after"
             f" {arms[0]['give_up_s']:g} s; every {every}th request"
             f" ({100 / every if every else 0:g}%) asks for a URL that never answers, alternately"
             f" /cgi-bin/hang (a CGI sleeping 120 s) and /stuck/ (mod_proxy to a backend that"
             f" accepts and never answers; ProxyTimeout 120, Timeout 120). A probe fetches"
             f" /index.html every 100 ms (new connection, 1 s timeout).")
    L.append("")
    L.append(f"| arm | probe availability | availability last {window:g} s | max CLOSE_WAIT"
             f" (never accepted) | max busy workers | max memory (MiB) | requests sent |"
             f" stuck requests | stopped CGIs / children |")
    L.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in arms:
        p = r["probe"]
        busy = fmt(r["max_busy_status"])
        if r["status_misses"]:
            busy = (f"{fmt(r['max_busy_proc'])} (server-status max {fmt(r['max_busy_status'])};"
                    f" {r['status_misses']}/{r['samples_n']} samples from /proc)")
        g = r.get("guard")
        stopped = "—"
        if g is not None:
            stopped = f"{fmt(g.get('StoppedCgi'))} / {fmt(g.get('StoppedChild'))}"
            if not r.get("guard_final"):
                stopped += f" (as of t={fmt(r.get('guard_t'))} s)"
        L.append(f"| {r['label']} | {fmt(p['availability_pct'], '%')} ({p['ok']}/{p['attempts']})"
                 f" | {fmt(p['availability_last_pct'], '%')} | {fmt(r['max_close_wait'])}"
                 f" ({fmt(r['max_close_wait_backlog'])}) | {busy} | {fmt(r['max_mem_mib'])} |"
                 f" {r['crawler']['sent']} | {r['crawler']['stuck']} | {stopped} |")
    L.append("")
    verdicts = []
    for r in arms:
        if r["arm"] == "stock":
            continue
        total, acc = r["max_close_wait"], r["max_close_wait_accepted"]
        ok_total = total is not None and total <= bound_n
        ok_acc = acc is not None and acc <= bound_n
        verdicts.append(f"{r['label']}: max {fmt(total)} ({'under' if ok_total else 'over'}),"
                        f" of them accepted by Apache {fmt(acc)} ({'under' if ok_acc else 'over'})")
    L.append(f"CLOSE_WAIT bound: stuck-request arrival rate {stuck_rate:g}/s × (CloseWaitTimeout"
             f" {cwt:g} s + scan interval {scan:g} s) = {bound:g} sockets (at most {bound_n} at one"
             f" instant: the arrivals are evenly spaced, so a {hold:g} s window can hold one at"
             f" each end). " + ("; ".join(verdicts) + "." if verdicts else "")
             + " Sockets never accepted (still in the listen queue when their client gave up) are"
             " not Apache's to close: no worker was free to take them.")
    L.append("")
    L.append("Details per arm:")
    L.append("")
    for r in arms:
        c, p = r["crawler"], r["probe"]
        g = r.get("guard")
        line = (f"- {r['label']}: probe first failed at {fmt(p['first_failure_s'], ' s')},"
                f" median probe latency {fmt(p['latency_ms_median'], ' ms')};"
                f" crawler answers 2xx {c['ok']}, other status {c['http_other']}"
                f" {json.dumps(c['statuses'], sort_keys=True)}, gave up {c['gave_up']}"
                f" (stuck URLs {c['stuck_gave_up']}), errors {c['errors']};"
                f" backend connections {r['backend_accepted']}; peak processes {fmt(r['max_procs'])}")
        if r["mem_kind"] != "pss":
            line += f"; memory is {r['mem_kind'].upper()} (smaps_rollup unreadable)"
        if g is not None:
            when = "at the end" if r.get("guard_final") else f"as of t={fmt(r.get('guard_t'))} s"
            line += (f"; /socket-status?auto {when}: ForceClosedGuard {fmt(g.get('ForceClosedGuard'))},"
                     f" AbandonedNow {fmt(g.get('AbandonedNow'))}")
        e = r.get("error_log")
        if g is not None and e is not None:
            line += (f"; error log: {e['closed']} closes (SG0015), {e['cgi_signals']} CGI signals"
                     f" (SG0021), {e['children_ended']} children ended (SG0022)")
        lb = left.get(a.results[arms.index(r)])
        if lb:
            line += f"; {lb} process(es) left behind after the stop (SIGKILLed)"
        L.append(line + ".")
    L.append("")
    L.append("Busy workers: mod_status `BusyWorkers` (the status request itself counts). When the"
             " server is saturated that request cannot be answered (and is not sent once /proc"
             " shows every worker busy), so the column then shows the /proc count: children holding"
             " a client connection, a backend connection or a CGI. Memory: PSS (smaps_rollup) of"
             " the Apache parent and all its descendants, CGIs included.")
    text = "\n".join(L) + "\n"
    with open(a.out, "w") as f:
        f.write(text)
    print(text, end="")
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("load")
    p.add_argument("--arm", required=True)
    p.add_argument("--label", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--backend-port", type=int, required=True)
    p.add_argument("--pidfile", required=True)
    p.add_argument("--module", type=int, default=0)
    p.add_argument("--duration", type=float, default=55)
    p.add_argument("--rate", type=float, default=20)
    p.add_argument("--stuck-every", type=int, default=10)
    p.add_argument("--give-up", type=float, default=3.0)
    p.add_argument("--probe-interval", type=float, default=0.1)
    p.add_argument("--probe-timeout", type=float, default=1.0)
    p.add_argument("--sample-interval", type=float, default=0.5)
    p.add_argument("--progress", type=float, default=5.0)
    p.add_argument("--max-open", type=int, default=2000)
    p.add_argument("--max-workers", type=int, default=20)
    p.add_argument("--error-log")
    p.add_argument("--json", required=True)
    p = sub.add_parser("ready")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--path", default="/index.html")
    p.add_argument("--timeout", type=float, default=10)
    p = sub.add_parser("stop")
    p.add_argument("--pidfile", required=True)
    p.add_argument("--conf", required=True)
    p.add_argument("--timeout", type=float, default=20)
    p.add_argument("--report")
    p = sub.add_parser("report")
    p.add_argument("--out", required=True)
    p.add_argument("--date", required=True)
    p.add_argument("--version", required=True)
    p.add_argument("--nproc", required=True)
    p.add_argument("--close-wait-timeout-ms", type=int, required=True)
    p.add_argument("--scan-interval-ms", type=int, required=True)
    p.add_argument("results", nargs="+")
    a = ap.parse_args()
    if a.cmd == "load":
        for name, lo, hi in (("duration", 1, 600), ("rate", 0.1, 200), ("give_up", 0.1, 60),
                             ("probe_interval", 0.01, 10), ("probe_timeout", 0.05, 60)):
            v = getattr(a, name)
            if not lo <= v <= hi:
                ap.error(f"--{name.replace('_', '-')} must be within {lo}..{hi}, got {v}")
        if not 1 <= a.max_open <= 10000:
            ap.error("--max-open must be within 1..10000")
        return cmd_load(a) or 0
    return {"ready": cmd_ready, "stop": cmd_stop, "report": cmd_report}[a.cmd](a)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
