#!/usr/bin/env python3
"""Benchmark of mod_socket_guard's guard process (the `socket-guard` helper that Apache's root
parent forks; its pid is `GuardProcessPid` on /socket-status?auto).

Standard library only. Run as root from anywhere:  benches/guard_process.py
Results are printed and written to build/bench/guard-process.md.

Each phase runs on its own freshly started Apache (event MPM, 127.0.0.1, two random free ports,
config generated in a temporary directory under build/bench/, `User`/`Group www-data` when run
as root, `LoadModule socket_guard_module` from build/mod_socket_guard.so or $SOCKET_GUARD_SO,
the default SocketGuardScanInterval, mod_cgid with a slow CGI, /socket-status with
`SetHandler socket-status`). Both servers use the same config:
  - main server on port 1 (SocketGuardAutoClose left at its default, Off): the idle clients;
  - `<VirtualHost 127.0.0.1:port2>` with `SocketGuardAutoClose On` and
    `SocketGuardCloseWaitTimeout 1s`: the hung-rescue clients;
  - `SocketGuardHungChildTimeout 2s` (server config, where the SPEC allows it);
  - `SocketGuardSlots` sized for the idle connections (see GUARD_SLOTS), since the module's
    default table (ServerLimit x ThreadLimit x 4 + 64 = 1088 slots here) would leave most of
    10,000 idle keep-alive connections untracked;
  - event MPM sized to hold the idle connections: ServerLimit 4, ThreadsPerChild 64,
    AsyncRequestWorkerFactor 100, KeepAliveTimeout 300, MaxKeepAliveRequests 0, and
    RLIMIT_NOFILE raised for Apache and for this script.

Phase 1, hung rescue (first server): HUNG_CLIENTS clients request /cgi-bin/slow on the AutoClose
On vhost; the CGI prints its headers and a first line at once and then sleeps (mod_cgid passes
the first line on when the CGI's pipe has nothing more to read). When every client has that
first line, the Apache children holding the connections (owner pids from /socket-status?json,
`ss -tnp` as fallback) are SIGSTOPped at time ts; the clients then shut down their write side
(FIN) and read until EOF at t1. Reported: per-socket t1 - ts (min/median/max), how many ended
with a FIN, a reset or nothing before the deadline, against the target
SocketGuardHungChildTimeout + 2 x scan interval (interval read from ?auto). The children are
then SIGCONTed and one request must still succeed; ForceClosedRescue and the SG0024 log lines
are counted.

Phase 2, idle cost (second server): first a baseline window with no client connections, then
IDLE_CONNS keep-alive connections (opened in batches with non-blocking sockets, each GETs a small
static file once and then stays idle; ESTABLISHED/CLOSE_WAIT counted with `ss` on the server
port). In each window the CPU time of the guard process (sum of the first field of
/proc/<pid>/task/*/schedstat, ns on CPU) is taken before and after and given as % of one core;
the same for the MPM children (all threads; their `socket-guard` threads also separately), the
root parent and the mod_cgid daemon. Nothing talks to the server during a window. Scan duration
(LastScanUs on ?auto, over SCAN_SAMPLES distinct scans) is read before each window. At the end
the idle connections are closed with SO_LINGER 0 (a reset), so no TIME_WAIT is left.

Environment:
  IDLE_CONNS      idle keep-alive connections in phase 2 (default 10000, 0..30000)
  MEASURE_SECS    CPU window with the idle connections open (default 30, 5..600)
  BASELINE_SECS   CPU window with no connections (default: MEASURE_SECS)
  HUNG_CLIENTS    clients of the hung-rescue phase (default 8, 1..64)
  SCAN_SAMPLES    distinct scans whose LastScanUs is read before each window (default 5, 1..30)
  OPEN_BATCH      connections opened at once in phase 2 (default 500, 1..4000)
  GUARD_SLOTS     SocketGuardSlots (default IDLE_CONNS + 2048; `default` leaves the directive
                  out, i.e. the module's own sizing)
  PHASES          which phases to run, in order (default "hung idle")
  SOCKET_GUARD_SO module to load (default build/mod_socket_guard.so)
  APACHE2         httpd binary (default /usr/sbin/apache2)
  APACHE_MODULES_DIR  Apache's modules (default /usr/lib/apache2/modules)
  BENCH_KEEP=1    keep the generated configs and logs (they are kept anyway after a failure)

Everything is bounded in time (a watchdog ends the run after a budget computed from the
settings); on any exit, SIGINT or SIGTERM the stopped children are resumed, all client sockets
reset, the slow CGIs released and each Apache stopped by its pid file.
"""

import errno
import hashlib
import json
import os
import random
import re
import resource
import selectors
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time

from procstat import read_stat

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOST = "127.0.0.1"
BENCH_DIR = os.path.join(ROOT, "build", "bench")
RESULTS = os.path.join(BENCH_DIR, "guard-process.md")
HUNG_CHILD_TIMEOUT_MS = 2000
RESCUE_CLOSE_WAIT_TIMEOUT = "1s"
NOFILE_WANT = 65536


class BenchError(Exception):
    pass


class Interrupted(BaseException):
    pass


def mono():
    return time.monotonic()


def note(msg):
    print(f"guard-process: {msg}", file=sys.stderr, flush=True)


def env_int(name, default, lo, hi):
    raw = os.environ.get(name, "")
    if raw == "":
        return default
    if not re.fullmatch(r"[0-9]+", raw):
        raise BenchError(f"{name} must be a whole number, got {raw!r}")
    v = int(raw)
    if not lo <= v <= hi:
        raise BenchError(f"{name} must be within {lo}..{hi}, got {v}")
    return v


# --- settings ----------------------------------------------------------------------------------

def settings():
    s = {}
    s["idle_conns"] = env_int("IDLE_CONNS", 10000, 0, 30000)
    s["measure_secs"] = env_int("MEASURE_SECS", 30, 5, 600)
    s["baseline_secs"] = env_int("BASELINE_SECS", s["measure_secs"], 5, 600)
    s["hung_clients"] = env_int("HUNG_CLIENTS", 8, 1, 64)
    s["scan_samples"] = env_int("SCAN_SAMPLES", 5, 1, 30)
    s["open_batch"] = env_int("OPEN_BATCH", 500, 1, 4000)
    slots = os.environ.get("GUARD_SLOTS", "")
    if slots == "default":
        s["slots"] = None
    elif slots == "":
        s["slots"] = s["idle_conns"] + 2048
    elif re.fullmatch(r"[0-9]+", slots) and 16 <= int(slots) <= 1_000_000:
        s["slots"] = int(slots)
    else:
        raise BenchError(f"GUARD_SLOTS must be 16..1000000 or 'default', got {slots!r}")
    phases = os.environ.get("PHASES", "hung idle").replace(",", " ").split()
    if not phases or any(p not in ("hung", "idle") for p in phases):
        raise BenchError(f"PHASES must name 'hung' and/or 'idle', got {os.environ.get('PHASES')!r}")
    s["phases"] = phases
    s["so"] = os.path.abspath(os.environ.get("SOCKET_GUARD_SO")
                              or os.path.join(ROOT, "build", "mod_socket_guard.so"))
    s["apache2"] = os.environ.get("APACHE2", "/usr/sbin/apache2")
    s["modules"] = os.environ.get("APACHE_MODULES_DIR", "/usr/lib/apache2/modules")
    s["keep"] = os.environ.get("BENCH_KEEP", "0") == "1"
    # Apache keeps idle connections this long; it must outlast opening them, the scan samples
    # and the window.
    s["keepalive_timeout"] = max(300, s["measure_secs"] + 240)
    if not os.path.exists(s["so"]):
        raise BenchError(f"module {s['so']} not found (set SOCKET_GUARD_SO)")
    if not os.access(s["apache2"], os.X_OK):
        raise BenchError(f"{s['apache2']} not found (set APACHE2)")
    for m in ("mpm_event", "authz_core", "authz_host", "mime", "dir", "alias", "cgid"):
        if not os.path.exists(os.path.join(s["modules"], f"mod_{m}.so")):
            raise BenchError(f"mod_{m}.so not in {s['modules']}")
    if shutil.which("ss") is None:
        raise BenchError("ss not found (iproute2)")
    return s


# --- resources ---------------------------------------------------------------------------------

def raise_nofile(want=None):
    """Raise RLIMIT_NOFILE to `want` (NOFILE_WANT by default; root may raise the hard limit
    too). Also used as Apache's preexec_fn, so it must not print or raise."""
    want = want or NOFILE_WANT
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if os.geteuid() == 0 and (hard == resource.RLIM_INFINITY or hard < want):
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
                return
            except (ValueError, OSError):
                pass
        want = want if hard == resource.RLIM_INFINITY else min(hard, want)
        if soft < want:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    except (ValueError, OSError):
        pass


class Registry:
    """Everything to undo on exit: client sockets, stopped pids, servers."""

    def __init__(self):
        self.sockets = set()
        self.stopped = {}  # pid -> starttime
        self.servers = []

    def track(self, s):
        self.sockets.add(s)
        return s

    def reset_close(self, s):
        reset_close(s)
        self.sockets.discard(s)

    def reset_all(self):
        for s in list(self.sockets):
            reset_close(s)
        self.sockets.clear()


REG = Registry()


def reset_close(s):
    """Close with SO_LINGER 0: the peer gets a reset, neither side keeps TIME_WAIT."""
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    try:
        s.close()
    except OSError:
        pass


# --- /proc -------------------------------------------------------------------------------------

def all_pids():
    return [int(n) for n in os.listdir("/proc") if n.isdigit()]


def children_of(parent):
    out = {}
    for pid in all_pids():
        st = read_stat(pid)
        if st is not None and st[0] == parent and st[3] != "Z":
            out[pid] = st
    return out


def descendants(root):
    table = {}
    for pid in all_pids():
        st = read_stat(pid)
        if st is not None:
            table[pid] = st
    kids = {}
    for pid, st in table.items():
        kids.setdefault(st[0], []).append(pid)
    out, todo = {}, list(kids.get(root, []))
    while todo:
        p = todo.pop()
        out[p] = table[p]
        todo.extend(kids.get(p, []))
    return out


def thread_cpu(pid):
    """{tid: (comm, ns on CPU)} of a process, from /proc/<pid>/task/*/schedstat."""
    out = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                ns = int(f.read().split()[0])
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                comm = f.read().strip()
        except (OSError, ValueError, IndexError):
            continue
        out[int(tid)] = (comm, ns)
    return out


# --- ss ----------------------------------------------------------------------------------------

def ss_states(filt):
    """{state: count} of TCP sockets matching an ss filter, e.g. '( sport = :8080 )'."""
    r = subprocess.run(["ss", "-Htan"] + ([filt] if filt else []), capture_output=True,
                       text=True, timeout=30)
    counts = {}
    for line in r.stdout.splitlines():
        f = line.split()
        if f:
            counts[f[0]] = counts.get(f[0], 0) + 1
    return counts


def ss_owner_pids(server_port, client_port):
    """Pids holding the server side of the connection from client_port (ss -tnp)."""
    r = subprocess.run(["ss", "-Htnp", f"( sport = :{server_port} and dport = :{client_port} )"],
                       capture_output=True, text=True, timeout=30)
    return sorted({int(p) for p in re.findall(r"pid=([0-9]+)", r.stdout)})


def file_sha(path):
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    except OSError:
        return "missing"
    return h.hexdigest()[:12]


def nofile_of(pid):
    """Soft RLIMIT_NOFILE of a process, from /proc/<pid>/limits."""
    try:
        with open(f"/proc/{pid}/limits") as f:
            for line in f:
                if line.startswith("Max open files"):
                    return line.split()[3]
    except OSError:
        pass
    return "?"


def loadavg():
    try:
        with open("/proc/loadavg") as f:
            return f.read().split()[0]
    except OSError:
        return "?"


def free_port(exclude=()):
    for _ in range(400):
        p = random.randint(20000, 32000)
        if p in exclude:
            continue
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind((HOST, p))
        except OSError:
            continue
        finally:
            s.close()
        if not any(ss_states(f"( sport = :{p} or dport = :{p} )").values()):
            return p
    raise BenchError("no free port found between 20000 and 32000")


# --- HTTP --------------------------------------------------------------------------------------

def parse_head(buf):
    """(status, headers dict, body offset) once the head is complete, else None."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    lines = buf[:end].decode("latin-1").split("\r\n")
    try:
        status = int(lines[0].split(" ", 2)[1])
    except (IndexError, ValueError):
        status = 0
    headers = {}
    for l in lines[1:]:
        k, _, v = l.partition(":")
        headers[k.strip().lower()] = v.strip()
    return status, headers, end + 4


def body_complete(buf, head):
    """The body if the whole response is in buf (Content-Length or chunked), else None."""
    status, headers, off = head
    body = buf[off:]
    if "content-length" in headers:
        n = int(headers["content-length"])
        return body[:n] if len(body) >= n else None
    if headers.get("transfer-encoding", "").lower() == "chunked":
        out, i = b"", 0
        while True:
            j = body.find(b"\r\n", i)
            if j < 0:
                return None
            try:
                size = int(body[i:j].split(b";")[0], 16)
            except ValueError:
                return None
            if size == 0:
                return out if body.find(b"\r\n", j + 2) >= 0 else None
            if len(body) < j + 2 + size + 2:
                return None
            out += body[j + 2:j + 2 + size]
            i = j + 2 + size + 2
    return None


def http_get(port, path, timeout=5.0, host=HOST):
    """(status, body bytes) or None. HTTP/1.1, closed with a reset afterwards (no TIME_WAIT)."""
    deadline = mono() + timeout
    s = REG.track(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
    try:
        s.settimeout(timeout)
        s.connect((HOST, port))
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: guard-process-bench\r\n\r\n"
                  .encode())
        buf = b""
        while True:
            left = deadline - mono()
            if left <= 0:
                return None
            s.settimeout(left)
            b = s.recv(262144)
            if not b:
                head = parse_head(buf)
                return (head[0], buf[head[2]:]) if head else None
            buf += b
            head = parse_head(buf)
            if head:
                body = body_complete(buf, head)
                if body is not None:
                    return head[0], body
            if len(buf) > 64 << 20:
                return None
    except OSError:
        return None
    finally:
        REG.reset_close(s)


def parse_auto(text):
    out = {}
    for line in text.splitlines():
        k, sep, v = line.partition(": ")
        if sep and k not in ("Vhost", "Child", "Leaked"):
            out[k] = v.strip()
        elif sep:
            out.setdefault(k + "[]", []).append(v.strip())
    return out


def status_auto(port, timeout=5.0):
    r = http_get(port, "/socket-status?auto", timeout)
    if r is None or r[0] != 200:
        raise BenchError(f"/socket-status?auto on port {port} did not answer 200: {r and r[0]}")
    return parse_auto(r[1].decode("utf-8", "replace"))


def num(auto, key):
    try:
        return int(auto[key])
    except (KeyError, ValueError):
        raise BenchError(f"no numeric {key} on /socket-status?auto")


# --- the server --------------------------------------------------------------------------------

CGI = r"""#!/bin/sh
# /cgi-bin/slow?SLEEP=N: headers and a first line at once, then silence for N s (1 s steps),
# ending early when the benchmark releases it (@STOP@ exists) or its Apache is gone.
stop="@STOP@"
pidfile="@PIDFILE@"
secs=30
case "&${QUERY_STRING:-}&" in
    *"&SLEEP="*)
        v=${QUERY_STRING#*SLEEP=}
        v=${v%%&*}
        case "$v" in "" | *[!0-9]*) ;; *) secs=$v ;; esac
        ;;
esac
[ "${#secs}" -gt 3 ] && secs=120
[ "$secs" -gt 120 ] && secs=120
server=$(cat "$pidfile" 2>/dev/null)
printf 'Content-Type: text/plain\r\n\r\n'
printf 'first line\n'
left=$secs
while [ "$left" -gt 0 ]; do
    sleep 1
    [ -e "$stop" ] && exit 0
    [ -n "$server" ] && [ ! -d "/proc/$server" ] && exit 0
    left=$((left - 1))
done
printf 'done after %s s\n' "$secs"
"""


def user_lines():
    """User/Group for a root-started server (it must not serve as root)."""
    return "User www-data\nGroup www-data" if os.geteuid() == 0 else \
        "# not root: the server runs as the current user"


def types_line():
    return "TypesConfig /etc/mime.types" if os.access("/etc/mime.types", os.R_OK) \
        else "AddType text/html .html"


STATUS_LOCATION = """<Location "/socket-status">
    SetHandler socket-status
    Require local
</Location>"""


def load_lines(modules_dir, mpm, names):
    """LoadModule lines for the MPM and the named modules of Apache's modules directory."""
    return "\n".join(f'LoadModule {n}_module "{modules_dir}/mod_{n}.so"'
                     for n in (f"mpm_{mpm}",) + tuple(names))


def docroot_lines(d):
    return f"""DocumentRoot "{d}/htdocs"
<Directory "{d}/htdocs">
    Require all granted
</Directory>"""


class Server:
    def __init__(self, cfg, work, name):
        self.cfg = cfg
        self.dir = os.path.join(work, name)
        self.conf = os.path.join(self.dir, "apache2.conf")
        self.pidfile = os.path.join(self.dir, "apache2.pid")
        self.stopfile = os.path.join(self.dir, "cgi-stop")
        self.port = None
        self.port2 = None
        self.pid = None
        self.start_time = None
        self.seen = {}  # descendants ever seen: pid -> (starttime, comm)

    def write(self):
        c = self.cfg
        os.makedirs(os.path.join(self.dir, "htdocs"))
        os.makedirs(os.path.join(self.dir, "cgi-bin"))
        self.port = free_port()
        self.port2 = free_port(exclude=(self.port,))
        with open(os.path.join(self.dir, "htdocs", "small.html"), "w") as f:
            f.write("<!DOCTYPE html>\n<html><head><title>bench</title></head><body><p>"
                    "mod_socket_guard guard-process benchmark: a small static page.</p></body></html>\n")
        cgi = os.path.join(self.dir, "cgi-bin", "slow")
        with open(cgi, "w") as f:
            f.write(CGI.replace("@STOP@", self.stopfile).replace("@PIDFILE@", self.pidfile))
        for d in (self.dir, os.path.join(self.dir, "htdocs"), os.path.join(self.dir, "cgi-bin")):
            os.chmod(d, 0o755)
        os.chmod(cgi, 0o755)
        os.chmod(os.path.join(self.dir, "htdocs", "small.html"), 0o644)
        with open(self.conf, "w") as f:
            f.write(self.config_text())

    def head_lines(self, *ports, log_level="warn socket_guard:notice"):
        """Where the server lives, listens and logs."""
        d = self.dir
        listen = "\n".join(f"Listen {HOST}:{p}" for p in ports)
        return f"""ServerRoot "{d}"
ServerName 127.0.0.1
{listen}
PidFile "{self.pidfile}"
DefaultRuntimeDir "{d}"
ErrorLog "{d}/error.log"
LogLevel {log_level}"""

    def config_text(self):
        """The apache2.conf; other benches override it (ports, cgi-bin and htdocs exist)."""
        c = self.cfg
        m = c["modules"]
        user, types = user_lines(), types_line()
        kids = c.get("children", 4)
        slots = f"SocketGuardSlots {c['slots']}" if c["slots"] is not None \
            else "# SocketGuardSlots: the module's default sizing"
        d = self.dir
        return f"""# Generated by benches/guard_process.py
{self.head_lines(self.port, self.port2)}
{load_lines(m, "event", ("authz_core", "authz_host", "mime", "dir", "alias", "cgid"))}
LoadModule socket_guard_module "{c['so']}"
{user}
ScriptSock "{d}/cgisock"
# Children that never come or go (4 unless cfg["children"]): 64 threads each, and up to
# 64 + AsyncRequestWorkerFactor x idle threads connections per child (event keeps idle
# keep-alive connections without a thread).
StartServers {kids}
ServerLimit {kids}
ThreadLimit 64
ThreadsPerChild 64
MaxRequestWorkers {64 * kids}
MinSpareThreads 64
MaxSpareThreads {64 * kids}
MaxConnectionsPerChild 0
AsyncRequestWorkerFactor {c.get('async_factor', 100)}
ListenBacklog 4096
Timeout 60
KeepAlive On
MaxKeepAliveRequests 0
KeepAliveTimeout {c['keepalive_timeout']}
{types}
{docroot_lines(d)}
ScriptAlias /cgi-bin/ "{d}/cgi-bin/"
<Directory "{d}/cgi-bin">
    Require all granted
</Directory>
# SocketGuardScanInterval: not set (the default)
{slots}
SocketGuardHungChildTimeout {HUNG_CHILD_TIMEOUT_MS // 1000}s
{STATUS_LOCATION}
<VirtualHost 127.0.0.1:{self.port2}>
    ServerName rescue.test
    SocketGuardAutoClose On
    SocketGuardCloseWaitTimeout {RESCUE_CLOSE_WAIT_TIMEOUT}
</VirtualHost>
"""

    def start(self):
        self.write()
        self.so_sha = file_sha(self.cfg["so"])
        REG.servers.append(self)
        r = subprocess.run([self.cfg["apache2"], "-f", self.conf, "-k", "start"],
                           env=dict(os.environ, **self.cfg.get("env", {})),
                           capture_output=True, text=True, timeout=30,
                           preexec_fn=lambda: raise_nofile(self.cfg.get("nofile")),
                           cwd=self.dir)
        if r.returncode != 0:
            raise BenchError(f"Apache did not start ({r.returncode}): {r.stderr.strip()}")
        until = mono() + 15
        while mono() < until:
            pid = self.pid_from_file()
            if pid:
                r = http_get(self.port, "/small.html", 2.0)
                if r is not None and r[0] == 200:
                    self.pid = pid
                    self.start_time = read_stat(pid)[1]
                    self.remember()
                    return
            time.sleep(0.1)
        raise BenchError(f"Apache from {self.conf} did not answer within 15 s; see {self.dir}/error.log")

    def pid_from_file(self):
        try:
            with open(self.pidfile) as f:
                pid = int(f.read().strip())
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode("utf-8", "replace")
        except (OSError, ValueError):
            return None
        # Only an Apache started from our config: the pid may have been reused.
        return pid if self.conf in cmdline else None

    def remember(self):
        if self.pid:
            for p, st in descendants(self.pid).items():
                self.seen.setdefault(p, (st[1], st[2]))

    def release_cgis(self):
        try:
            with open(self.stopfile, "w"):
                pass
        except OSError:
            pass

    def error_log(self):
        try:
            with open(os.path.join(self.dir, "error.log"), errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def stop(self):
        """SIGTERM by pid file (verified), SIGKILL after 15 s; then SIGKILL whatever it left
        behind among the descendants seen (verified by start time)."""
        self.release_cgis()
        pid = self.pid_from_file()
        if pid is None:
            self.pid = None
            return
        self.remember()
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        until = mono() + 15
        while mono() < until:
            st = read_stat(pid)
            if st is None or st[3] == "Z":
                break
            self.remember()
            time.sleep(0.1)
        else:
            note(f"Apache pid {pid} still runs 15 s after SIGTERM: SIGKILL")
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            time.sleep(0.3)
        for p, (start, comm) in self.seen.items():
            st = read_stat(p)
            if st is not None and st[1] == start and st[3] != "Z":
                try:
                    os.kill(p, signal.SIGKILL)
                    note(f"SIGKILLed pid {p} ({comm}) left behind by Apache")
                except ProcessLookupError:
                    pass
        self.pid = None


# --- CPU ---------------------------------------------------------------------------------------

def cpu_snapshot(server, guard_pid, mpm_children):
    """CPU ns of each process group of interest, plus the pids (and start times) seen."""
    snap = {"guard": 0, "parent": 0, "children": 0, "children_guard_threads": 0, "other": 0,
            "pids": {}, "t": mono()}
    for pid, st in children_of(server.pid).items():
        snap["pids"][pid] = st[1]
    snap["pids"][server.pid] = server.start_time
    for pid in snap["pids"]:
        threads = thread_cpu(pid)
        total = sum(ns for _, ns in threads.values())
        if pid == guard_pid:
            snap["guard"] += total
        elif pid == server.pid:
            snap["parent"] += total
        elif pid in mpm_children:
            snap["children"] += total
            snap["children_guard_threads"] += sum(ns for c, ns in threads.values()
                                                  if c == "socket-guard")
        else:
            snap["other"] += total
    snap["t"] = (snap["t"] + mono()) / 2
    return snap


def cpu_window(server, guard_pid, mpm_children, secs):
    before = cpu_snapshot(server, guard_pid, mpm_children)
    time.sleep(secs)
    after = cpu_snapshot(server, guard_pid, mpm_children)
    wall = after["t"] - before["t"]
    pct = {k: (after[k] - before[k]) / (wall * 1e9) * 100
           for k in ("guard", "parent", "children", "children_guard_threads", "other")}
    pct["wall"] = wall
    pct["changed"] = sorted(set(before["pids"].items()) ^ set(after["pids"].items()))
    return pct


def wait_ready(srv, children, until):
    """Until `children` children checked in and the guard process scanned twice (a condition,
    not a sleep); returns that ?auto."""
    while mono() < until:
        auto = status_auto(srv.port)
        if len(auto.get("Child[]", [])) >= children and num(auto, "Scans") >= 2:
            return auto
        time.sleep(0.2)
    raise BenchError(f"{srv.dir}: fewer than {children} children or no scans after start")


def scan_autos(port, n, interval_ms):
    """?auto as read right after each of n distinct scans (Scans changed since the last read);
    fewer if the scans stall."""
    autos, last_scans = [], None
    until = mono() + n * interval_ms / 1000 * 3 + 10
    while len(autos) < n and mono() < until:
        auto = status_auto(port)
        scans = num(auto, "Scans")
        if scans != last_scans:
            if last_scans is not None or scans > 0:
                autos.append(auto)
            last_scans = scans
        time.sleep(min(interval_ms / 1000 / 2, 1.0) + 0.05)
    return autos


def scan_samples(port, n, interval_ms):
    """LastScanUs of n distinct scans, and the last ?auto read."""
    autos = scan_autos(port, n, interval_ms)
    return [num(a, "LastScanUs") for a in autos], (autos[-1] if autos else status_auto(port))


# --- phase 1: hung rescue ------------------------------------------------------------------------

def phase_hung(cfg, work):
    note("phase 1 (hung rescue): starting Apache")
    srv = Server(cfg, work, "hung")
    srv.start()
    res = {"port": srv.port, "port2": srv.port2}
    try:
        auto = status_auto(srv.port)
        interval = num(auto, "ScanIntervalMs")
        res["interval_ms"] = interval
        res["guard_pid"] = num(auto, "GuardProcessPid")
        res["guard_reach"] = auto.get("GuardProcessReach", "?")
        res["target_ms"] = HUNG_CHILD_TIMEOUT_MS + 2 * interval
        r = http_get(srv.port2, "/cgi-bin/slow?SLEEP=0", 10, host="rescue.test")
        if r is None or r[0] != 200 or b"first line" not in r[1]:
            raise BenchError(f"the slow CGI does not run: {r}; see {srv.dir}/error.log")

        n = cfg["hung_clients"]
        sel = selectors.DefaultSelector()
        clients = []
        req = (b"GET /cgi-bin/slow?SLEEP=90 HTTP/1.1\r\nHost: rescue.test\r\n"
               b"User-Agent: guard-process-bench\r\n\r\n")
        for i in range(n):
            s = REG.track(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            s.settimeout(5)
            s.connect((HOST, srv.port2))
            s.sendall(req)
            s.setblocking(False)
            c = {"i": i, "sock": s, "buf": b"", "first": None, "port": s.getsockname()[1]}
            clients.append(c)
            sel.register(s, selectors.EVENT_READ, c)
        t_sent = mono()
        waiting = n
        until = mono() + 20
        while waiting and mono() < until:
            for key, _ in sel.select(timeout=0.5):
                c = key.data
                try:
                    b = c["sock"].recv(65536)
                except BlockingIOError:
                    continue
                except OSError as e:
                    raise BenchError(f"client #{c['i']}: {e} before the first line")
                if not b:
                    raise BenchError(f"client #{c['i']}: closed before the first line")
                c["buf"] += b
                if c["first"] is None and b"first line" in c["buf"]:
                    c["first"] = mono() - t_sent
                    waiting -= 1
        if waiting:
            raise BenchError(f"{waiting} of {n} clients got no first line within 20 s "
                             f"(does mod_cgid flush it?); see {srv.dir}/error.log")
        res["first_line_ms"] = max(c["first"] for c in clients) * 1000

        # Owners: the connection rows of /socket-status?json, `ss -tnp` as fallback.
        holders = set()
        j = None
        until = mono() + 10
        missing = clients
        while missing and mono() < until:
            r = http_get(srv.port, "/socket-status?json&all", 5)
            j = json.loads(r[1]) if r and r[0] == 200 else None
            rows = j["connections"] if j else []
            owner = {}
            for row in rows:
                if row.get("local_port") == srv.port2 and isinstance(row.get("client"), str):
                    owner[int(row["client"].rsplit(":", 1)[1])] = (row.get("pid"), row.get("state"))
            missing = []
            for c in clients:
                o = owner.get(c["port"])
                if o and o[0] and o[1] == "handling":
                    c["owner"] = o[0]
                else:
                    missing.append(c)
            if missing:
                time.sleep(0.2)
        res["owners_from"] = "status ?json"
        for c in missing:
            pids = [p for p in ss_owner_pids(srv.port2, c["port"]) if p != srv.pid]
            if len(pids) != 1:
                raise BenchError(f"client #{c['i']} (port {c['port']}): owner not found "
                                 f"(?json and ss -tnp: {pids})")
            c["owner"] = pids[0]
            res["owners_from"] = "status ?json + ss -tnp"
        mpm_children = {int(l.split()[0]) for l in status_auto(srv.port).get("Child[]", [])}
        for c in clients:
            holders.add(c["owner"])
        for p in holders:
            st = read_stat(p)
            if st is None or st[0] != srv.pid or p not in mpm_children or p == res["guard_pid"]:
                raise BenchError(f"owner pid {p} is not an MPM child of Apache {srv.pid}")
        res["holders"] = sorted(holders)
        res["children_total"] = len(mpm_children)

        # Stop the holders, then the clients' FIN.
        for p in sorted(holders):
            REG.stopped[p] = read_stat(p)[1]
            os.kill(p, signal.SIGSTOP)
        ts = mono()
        stopped_ok = False
        until = mono() + 1
        while mono() < until:
            if all((read_stat(p) or (0, 0, "", "?"))[3] == "T" for p in holders):
                stopped_ok = True
                break
            time.sleep(0.001)
        if not stopped_ok:
            raise BenchError(f"holders {sorted(holders)} not all stopped within 1 s")
        res["stop_confirmed_ms"] = (mono() - ts) * 1000
        for c in clients:
            c["sock"].shutdown(socket.SHUT_WR)
        res["fin_sent_ms"] = (mono() - ts) * 1000
        limit = res["target_ms"] / 1000 + 10
        open_ = {c["i"] for c in clients}
        while open_ and mono() - ts < limit:
            for key, _ in sel.select(timeout=0.2):
                c = key.data
                try:
                    b = c["sock"].recv(65536)
                except BlockingIOError:
                    continue
                except ConnectionResetError:
                    c["end"], c["t1"] = "reset", mono() - ts
                except OSError as e:
                    c["end"], c["t1"] = f"error {e.errno}", mono() - ts
                else:
                    if b:
                        c["buf"] += b
                        continue
                    c["end"], c["t1"] = "fin", mono() - ts
                sel.unregister(c["sock"])
                open_.discard(c["i"])
        for c in clients:
            c.setdefault("end", "none")
        res["waited_s"] = limit

        # Resume the children before asking the server anything.
        for p in sorted(holders):
            st = read_stat(p)
            if st is not None and st[1] == REG.stopped.get(p):
                os.kill(p, signal.SIGCONT)
            REG.stopped.pop(p, None)
        t_resumed = mono()
        r = http_get(srv.port, "/small.html", 10)
        res["after_status"] = r[0] if r else None
        res["after_ms"] = (mono() - t_resumed) * 1000
        auto = status_auto(srv.port)
        res["guard_reach"] = auto.get("GuardProcessReach", "?")
        res["force_closed_rescue"] = num(auto, "ForceClosedRescue")
        res["force_closed_guard"] = num(auto, "ForceClosedGuard")
        log = srv.error_log()
        sg24 = [l for l in log.splitlines() if "SG0024" in l]
        res["sg0024"] = len(sg24)
        res["sg0024_hung_s"] = [float(x) for l in sg24 for x in re.findall(r"hung for ([0-9.]+)s", l)]
        res["sg0024_cw_s"] = [float(x) for l in sg24
                              for x in re.findall(r"in CLOSE_WAIT for ([0-9.]+)s", l)]
        res["log_problems"] = [l for l in log.splitlines()
                               if re.search(r"\[(\w+:)?(emerg|alert|crit|error|warn)\]", l)][:10]
        res["so_changed"] = file_sha(cfg["so"]) != srv.so_sha
        res["clients"] = [{"port": c["port"], "owner": c["owner"], "end": c["end"],
                           "t1_ms": round(c["t1"] * 1000, 1) if "t1" in c else None,
                           "extra_bytes": len(c["buf"])} for c in clients]
        for c in clients:
            REG.reset_close(c["sock"])
        sel.close()
        srv.release_cgis()
    finally:
        stop_all_stopped()
        srv.stop()
        REG.servers.remove(srv)
    return res


# --- phase 2: idle cost --------------------------------------------------------------------------

# Linux's IP_BIND_ADDRESS_NO_PORT (not in Python's socket module): bind() takes the address
# only and connect() picks the port per 4-tuple, so each source address has its own ~28k ports.
IP_BIND_ADDRESS_NO_PORT = 24
PORTS_PER_SOURCE = 25000


def client_socket(i, sources):
    """A non-blocking client socket; with `sources`, the i-th one is bound to source address
    sources[i // PORTS_PER_SOURCE] (more connections than one address has ephemeral ports)."""
    s = REG.track(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
    if sources:
        s.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
        s.bind((sources[min(i // PORTS_PER_SOURCE, len(sources) - 1)], 0))
    s.setblocking(False)
    return s


def open_idle(port, n, batch, deadline, sources=None):
    """n keep-alive connections that each completed one GET /small.html. Returns (sockets,
    failures dict, seconds taken). `sources`: see client_socket."""
    req = b"GET /small.html HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: guard-process-bench\r\n\r\n"
    held, fails = [], {}
    t0 = mono()
    sel = selectors.DefaultSelector()

    def fail(c, why):
        fails[why] = fails.get(why, 0) + 1
        try:
            sel.unregister(c["sock"])
        except (KeyError, ValueError):
            pass
        REG.reset_close(c["sock"])

    attempted = 0
    while attempted < n:
        if mono() >= deadline:
            fails["not attempted (time)"] = n - attempted
            break
        k = min(batch, n - attempted)
        attempted += k
        pending = 0
        for i in range(attempted - k, attempted):
            s = client_socket(i, sources)
            c = {"sock": s, "buf": b"", "phase": "connect"}
            rc = s.connect_ex((HOST, port))
            if rc not in (0, errno.EINPROGRESS):
                fail(c, f"connect {errno.errorcode.get(rc, rc)}")
                continue
            sel.register(s, selectors.EVENT_WRITE, c)
            pending += 1
        batch_until = min(deadline, mono() + 30)
        while pending and mono() < batch_until:
            for key, _ in sel.select(timeout=0.5):
                c = key.data
                s = c["sock"]
                if c["phase"] == "connect":
                    err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if err:
                        fail(c, f"connect {errno.errorcode.get(err, err)}")
                        pending -= 1
                        continue
                    try:
                        s.send(req)
                    except OSError as e:
                        fail(c, f"send {e.errno}")
                        pending -= 1
                        continue
                    c["phase"] = "read"
                    sel.modify(s, selectors.EVENT_READ, c)
                    continue
                try:
                    b = s.recv(65536)
                except BlockingIOError:
                    continue
                except OSError as e:
                    fail(c, f"recv {errno.errorcode.get(e.errno, e.errno)}")
                    pending -= 1
                    continue
                if not b:
                    fail(c, "closed by server")
                    pending -= 1
                    continue
                c["buf"] += b
                head = parse_head(c["buf"])
                if head and body_complete(c["buf"], head) is not None:
                    sel.unregister(s)
                    pending -= 1
                    if head[0] != 200:
                        fail(c, f"status {head[0]}")
                    elif head[1].get("connection", "").lower() == "close":
                        fail(c, "Connection: close")
                    else:
                        held.append(s)
        if pending:
            for key in list(sel.get_map().values()):
                fail(key.data, "timeout")
    sel.close()
    return held, fails, mono() - t0


def closed_by_server(socks):
    """How many of the held client sockets are readable (the server sent a FIN, a reset or
    data), checked without waiting."""
    sel = selectors.DefaultSelector()
    for s in socks:
        sel.register(s, selectors.EVENT_READ)
    n = len(sel.select(timeout=0))
    sel.close()
    return n


def phase_idle(cfg, work):
    note("phase 2 (idle cost): starting Apache")
    srv = Server(cfg, work, "idle")
    srv.start()
    res = {"port": srv.port}
    held = []
    try:
        time.sleep(2)  # children finish starting their threads
        auto = status_auto(srv.port)
        interval = num(auto, "ScanIntervalMs")
        guard = num(auto, "GuardProcessPid")
        res.update(interval_ms=interval, guard_pid=guard, slots_total=num(auto, "SlotsTotal"),
                   guard_reach=auto.get("GuardProcessReach", "?"))
        st = read_stat(guard)
        if st is None or st[0] != srv.pid:
            raise BenchError(f"GuardProcessPid {guard} is not a child of Apache {srv.pid}")
        res["guard_comm"] = st[2]
        res["nofile"] = {"script": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
                         "apache": nofile_of(srv.pid)}
        mpm_children = {int(l.split()[0]) for l in auto.get("Child[]", [])}
        res["mpm_children"] = len(mpm_children)
        others = {p: s[2] for p, s in children_of(srv.pid).items()
                  if p != guard and p not in mpm_children}
        res["other_procs"] = sorted(set(others.values()))

        windows = []
        for label, n, secs in (("0 connections (baseline)", 0, cfg["baseline_secs"]),
                               (f"{cfg['idle_conns']:,} idle keep-alive connections",
                                cfg["idle_conns"], cfg["measure_secs"])):
            w = {"label": label, "n": n}
            if n:
                note(f"opening {n} keep-alive connections in batches of {cfg['open_batch']}")
                held, fails, took = open_idle(srv.port, n, cfg["open_batch"], mono() + 240)
                w.update(held=len(held), fails=fails, open_s=took)
                note(f"held {len(held)} after {took:.1f} s; failures {fails or 'none'}")
                time.sleep(3)  # let the last connections settle into keep-alive
            w["scan_us"], auto = scan_samples(srv.port, cfg["scan_samples"], interval)
            w["auto_before"] = {k: auto.get(k) for k in (
                "Open", "OpenKeepalive", "OpenReading", "SlotsUsed", "Untracked", "Scans",
                "ScannerPid", "CloseWaitNow", "KernelCloseWaitTracked", "KernelCloseWaitUntracked")}
            w["ss_before"] = ss_states(f"( sport = :{srv.port} )")
            w["host_tcp"] = sum(ss_states("").values())
            w["load_before"] = loadavg()
            scans0 = num(auto, "Scans")
            note(f"window: {label}, {secs} s")
            cpu = cpu_window(srv, guard, mpm_children, secs)
            w["cpu"] = cpu
            w["load_after"] = loadavg()
            w["ss_after"] = ss_states(f"( sport = :{srv.port} )")
            w["closed_by_server"] = closed_by_server(held) if held else 0
            auto = status_auto(srv.port)
            w["scans"] = num(auto, "Scans") - scans0
            w["scanner_pid"] = num(auto, "ScannerPid")
            w["auto_after"] = {k: auto.get(k) for k in (
                "Open", "OpenKeepalive", "CloseWaitNow", "KernelCloseWaitTracked",
                "KernelCloseWaitUntracked", "Untracked", "ScanErrors")}
            w["guard_pid_after"] = num(auto, "GuardProcessPid")
            windows.append(w)
            note(f"  guard process {cpu['guard']:.4f}% of a core, MPM children "
                 f"{cpu['children']:.3f}%, parent {cpu['parent']:.4f}%; "
                 f"LastScanUs {w['scan_us']}")
        res["windows"] = windows

        # Close the idle connections with a reset: nothing left in TIME_WAIT.
        n_held = len(held)
        for s in held:
            REG.reset_close(s)
        held = []
        until = mono() + 10
        while mono() < until:
            left = ss_states(f"( sport = :{srv.port} )")
            if sum(v for k, v in left.items() if k != "LISTEN") <= 1:
                break
            time.sleep(0.2)
        res["after_close"] = {"closed": n_held, "server": ss_states(f"( sport = :{srv.port} )"),
                              "client": ss_states(f"( dport = :{srv.port} )")}
        res["so_changed"] = file_sha(cfg["so"]) != srv.so_sha
        log = srv.error_log()
        res["log_problems"] = [l for l in log.splitlines()
                               if re.search(r"\[(\w+:)?(emerg|alert|crit|error|warn)\]", l)][:10]
    finally:
        for s in held:
            REG.reset_close(s)
        srv.stop()
        REG.servers.remove(srv)
    return res


# --- report --------------------------------------------------------------------------------------

def fmt_states(d):
    d = {k: v for k, v in d.items() if k != "LISTEN"}
    return ", ".join(f"{k} {v}" for k, v in sorted(d.items())) or "none"


def append_log_problems(out, problems):
    """The error log's warn-and-above lines of a phase, as a code block."""
    if problems:
        out.extend(["- Error log (warn and above):", "", "```", *problems, "```"])


def report(cfg, hung, idle, started, elapsed):
    out = []
    ver = subprocess.run([cfg["apache2"], "-v"], capture_output=True, text=True, timeout=10).stdout
    ver = re.search(r"Server version: (.*)", ver)
    so_mtime = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(os.stat(cfg["so"]).st_mtime))
    changed = [name for name, r in (("phase 1", hung), ("phase 2", idle)) if r and r["so_changed"]]
    out.append("# mod_socket_guard: the guard process")
    out.append("")
    out.append(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(started))}; "
               f"{ver.group(1) if ver else 'Apache'}; mpm_event; {os.cpu_count()} CPUs; "
               f"kernel {os.uname().release}; module {os.path.relpath(cfg['so'], ROOT)} "
               f"(sha256 {cfg['so_sha']}…, modified {so_mtime}); run time {elapsed:.0f} s "
               "(`benches/guard_process.py`).")
    if changed:
        out.append("")
        out.append(f"**Warning: the module file changed while the server of {' and '.join(changed)} "
                   "ran; that phase measured the build it loaded at its start.**")
    out.append("")
    out.append("Config (both phases, each on a fresh server): event MPM, ServerLimit 4 x "
               "ThreadsPerChild 64, AsyncRequestWorkerFactor 100, KeepAliveTimeout "
               f"{cfg['keepalive_timeout']}, MaxKeepAliveRequests 0, default "
               "SocketGuardScanInterval, SocketGuardHungChildTimeout 2s, "
               + (f"SocketGuardSlots {cfg['slots']}" if cfg["slots"] else "default SocketGuardSlots")
               + f"; a vhost with SocketGuardAutoClose On, CloseWaitTimeout {RESCUE_CLOSE_WAIT_TIMEOUT}"
               " on a second port for phase 1.")
    out.append("")
    if idle:
        w0, w1 = idle["windows"][0], idle["windows"][-1]
        out.append("## Idle cost (phase 2)")
        out.append("")
        out.append(f"Guard process pid {idle['guard_pid']} (`{idle['guard_comm']}`, reach "
                   f"{idle['guard_reach']}), {idle['mpm_children']} MPM children, scan interval "
                   f"{idle['interval_ms']} ms, {idle['slots_total']} slots. CPU = ns on CPU from "
                   "/proc/<pid>/task/*/schedstat over the window, as % of one core.")
        out.append("")
        out.append("| window | s | guard process % | MPM children % (their guard threads %) | "
                   "parent % | mod_cgid daemon % | scans in window (by guard process) | "
                   "LastScanUs median / max | server ESTABLISHED / CLOSE_WAIT (before → after) |")
        out.append("|---|---:|---:|---:|---:|---:|---:|---:|---|")
        for w in idle["windows"]:
            c = w["cpu"]
            sb, sa = w["ss_before"], w["ss_after"]
            su = w["scan_us"]
            scan = f"{statistics.median(su):.0f} / {max(su)}" if su else "n/a"
            by = "yes" if w["scanner_pid"] == idle["guard_pid"] else f"no: {w['scanner_pid']}"
            out.append(
                f"| {w['label']} | {c['wall']:.1f} | **{c['guard']:.4f}** | {c['children']:.4f} "
                f"({c['children_guard_threads']:.4f}) | {c['parent']:.4f} | {c['other']:.4f} | "
                f"{w['scans']} ({by}) | {scan} | "
                f"{sb.get('ESTAB', 0)} / {sb.get('CLOSE-WAIT', 0)} → "
                f"{sa.get('ESTAB', 0)} / {sa.get('CLOSE-WAIT', 0)} |")
        out.append("")
        g = w1["cpu"]["guard"]
        out.append(f"Target (issue): guard process ≤ 0.2% of one core at 10,000 connections, none in "
                   f"CLOSE_WAIT → **{g:.4f}%** with {w1.get('held', 0):,} connections: "
                   f"{'met' if g <= 0.2 and w1['ss_after'].get('CLOSE-WAIT', 0) == 0 else 'NOT met'}"
                   f"{'' if w1['n'] >= 10000 else ' (fewer connections than the target names)'}.")
        out.append("")
        ab = w1["auto_before"]
        out.append(f"- Opening: {w1.get('held', 0):,} of {w1['n']:,} held after "
                   f"{w1.get('open_s', 0):.1f} s, failures: "
                   f"{', '.join(f'{k} {v}' for k, v in w1.get('fails', {}).items()) or 'none'}; "
                   f"the server closed {w1['closed_by_server']} of them by the end of the window.")
        out.append(f"- Status page before the window: Open {ab['Open']}, OpenKeepalive "
                   f"{ab['OpenKeepalive']}, SlotsUsed {ab['SlotsUsed']}, Untracked {ab['Untracked']}; "
                   f"after: CloseWaitNow {w1['auto_after']['CloseWaitNow']}, ScanErrors "
                   f"{w1['auto_after']['ScanErrors']}.")
        out.append(f"- LastScanUs samples (distinct scans): 0 connections {w0['scan_us']}; "
                   f"{w1['n']:,} connections {w1['scan_us']}.")
        out.append("- Background: " + "; ".join(
            f"'{w['label']}': {w['host_tcp']:,} TCP sockets on the host at the start, load average "
            f"{w['load_before']} → {w['load_after']}" for w in idle["windows"]) + ".")
        for w in idle["windows"]:
            if w["cpu"]["changed"]:
                out.append(f"- Processes changed during '{w['label']}': {w['cpu']['changed']} "
                           "(their CPU is counted only while present).")
        ac = idle["after_close"]
        out.append(f"- After closing the {ac['closed']:,} connections with SO_LINGER 0: server side "
                   f"{fmt_states(ac['server'])}; client side {fmt_states(ac['client'])}.")
        out.append(f"- RLIMIT_NOFILE: this script {idle['nofile']['script']}, Apache (parent, "
                   f"inherited by its children) {idle['nofile']['apache']}.")
        if idle["other_procs"]:
            out.append(f"- Other children of the root parent (the mod_cgid daemon column): "
                       f"{', '.join(idle['other_procs'])}.")
        append_log_problems(out, idle["log_problems"])
        out.append("")
    if hung:
        out.append("## Hung rescue timing (phase 1)")
        out.append("")
        t = [c["t1_ms"] for c in hung["clients"] if c["end"] == "fin"]
        ends = {}
        for c in hung["clients"]:
            ends[c["end"]] = ends.get(c["end"], 0) + 1
        n = len(hung["clients"])
        out.append("| clients | holders SIGSTOPped (of MPM children) | FIN | reset | no EOF | "
                   "t1 − ts min / median / max ms | target ms (HungChildTimeout + 2 × interval) | met |")
        out.append("|---:|---:|---:|---:|---:|---:|---:|---|")
        met = len(t) == n and max(t) <= hung["target_ms"]
        out.append(
            f"| {n} | {len(hung['holders'])} of {hung['children_total']} | {ends.get('fin', 0)} | "
            f"{ends.get('reset', 0)} | {n - ends.get('fin', 0) - ends.get('reset', 0)} | "
            + (f"{min(t):.0f} / {statistics.median(t):.0f} / {max(t):.0f}" if t else "n/a")
            + f" | {hung['target_ms']} (2000 + 2 × {hung['interval_ms']}) | {'yes' if met else 'NO'} |")
        out.append("")
        out.append(f"- ts = when SIGSTOP was sent to the holder(s) {hung['holders']} (owners from "
                   f"{hung['owners_from']}; all in state T {hung['stop_confirmed_ms']:.1f} ms later); "
                   f"the clients half-closed {hung['fin_sent_ms']:.1f} ms after ts and read until EOF "
                   f"(waited up to {hung['waited_s']:.0f} s). Every client had the CGI's headers and "
                   f"first line {hung['first_line_ms']:.0f} ms after sending its request.")
        out.append("- A child counts as hung once its last check-in (one per scan interval) is "
                   "SocketGuardHungChildTimeout old, so t1 − ts can be up to one interval below "
                   "HungChildTimeout; the target bounds it from above.")
        out.append(f"- Per client t1 − ts ms: "
                   f"{', '.join(str(c['t1_ms']) + ('' if c['end'] == 'fin' else ' ' + c['end']) for c in hung['clients'])}.")
        out.append(f"- After SIGCONT: GET /small.html → {hung['after_status']} "
                   f"({hung['after_ms']:.0f} ms); ForceClosedRescue {hung['force_closed_rescue']}, "
                   f"ForceClosedGuard {hung['force_closed_guard']}; {hung['sg0024']} SG0024 lines "
                   f"(hung for {sorted(hung['sg0024_hung_s'])} s, in CLOSE_WAIT for "
                   f"{sorted(hung['sg0024_cw_s'])} s); guard process reach {hung['guard_reach']}.")
        append_log_problems(out, hung["log_problems"])
        out.append("")
    return "\n".join(out)


# --- main ----------------------------------------------------------------------------------------

def stop_all_stopped():
    for p, start in list(REG.stopped.items()):
        st = read_stat(p)
        if st is not None and st[1] == start:
            try:
                os.kill(p, signal.SIGCONT)
            except ProcessLookupError:
                pass
        REG.stopped.pop(p, None)


def cleanup():
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGALRM):
        signal.signal(sig, signal.SIG_IGN)
    signal.alarm(0)
    stop_all_stopped()
    REG.reset_all()
    for srv in list(REG.servers):
        try:
            srv.stop()
        except Exception as e:  # keep stopping the others
            note(f"stopping {srv.dir}: {e}")
    REG.servers.clear()


def on_signal(signum, _frame):
    raise Interrupted(f"signal {signal.Signals(signum).name}")


def main():
    started = time.time()
    t0 = mono()
    try:
        cfg = settings()
    except BenchError as e:
        note(str(e))
        return 2
    if os.geteuid() != 0:
        note("not root: Apache runs as the current user (no User/Group), rescue may be degraded")
    raise_nofile()
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft != resource.RLIM_INFINITY and soft < cfg["idle_conns"] + 256:
        note(f"RLIMIT_NOFILE is {soft}: too low for IDLE_CONNS={cfg['idle_conns']}")
        return 2
    budget = 240 + 300 + cfg["baseline_secs"] + cfg["measure_secs"] + 30 * cfg["scan_samples"]
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGALRM):
        signal.signal(sig, on_signal)
    signal.alarm(budget)

    def body(work):
        hung = idle = None
        cfg["so_sha"] = file_sha(cfg["so"])
        note(f"module {cfg['so']} (sha256 {cfg['so_sha']}); phases {' '.join(cfg['phases'])}; work dir {work}; "
             f"time budget {budget} s")
        for ph in cfg["phases"]:
            if ph == "hung":
                hung = phase_hung(cfg, work)
            else:
                idle = phase_idle(cfg, work)
        return report(cfg, hung, idle, started, mono() - t0)

    return run_bench("guard-process.", RESULTS, cfg["keep"], note, body)


def server_settings():
    """The settings every bench server takes from the environment (SOCKET_GUARD_SO, APACHE2,
    APACHE_MODULES_DIR, BENCH_KEEP), the module checked to exist."""
    cfg = {"so": os.path.abspath(os.environ.get("SOCKET_GUARD_SO")
                                 or os.path.join(ROOT, "build", "mod_socket_guard.so")),
           "apache2": os.environ.get("APACHE2", "/usr/sbin/apache2"),
           "modules": os.environ.get("APACHE_MODULES_DIR", "/usr/lib/apache2/modules"),
           "keep": os.environ.get("BENCH_KEEP", "0") == "1"}
    if not os.path.exists(cfg["so"]):
        raise BenchError(f"module {cfg['so']} not found (set SOCKET_GUARD_SO)")
    return cfg


def bench_main(settings_fn, budget_fn, body_fn, prefix, results, say):
    """main() of a bench script: its settings (exit 2 on a bad one), SIGINT/SIGTERM and a
    watchdog of budget_fn(cfg) seconds turned into a clean stop, then run_bench with
    body_fn(cfg, work dir) returning the text to write."""
    try:
        cfg = settings_fn()
    except BenchError as e:
        say(str(e))
        return 2
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGALRM):
        signal.signal(sig, on_signal)
    signal.alarm(budget_fn(cfg))
    return run_bench(prefix, results, cfg["keep"], say, lambda work: body_fn(cfg, work))


def run_bench(prefix, results, keep, say, body):
    """Runs `body(work dir)` (a fresh directory under build/bench/), prints the report it
    returns and writes it to `results`; on any exit resumes what was stopped, resets the
    client sockets and stops the servers (`cleanup`). The work dir is removed after a success
    unless `keep`. Returns the exit status. Shared by the bench scripts."""
    os.makedirs(BENCH_DIR, exist_ok=True)
    work = tempfile.mkdtemp(prefix=prefix, dir=BENCH_DIR)
    os.chmod(work, 0o755)  # the server runs as www-data
    ok = False
    try:
        text = body(work)
        with open(results, "w") as f:
            f.write(text + "\n")
        print(text)
        say(f"results written to {os.path.relpath(results, ROOT)}")
        ok = True
        return 0
    except BenchError as e:
        say(f"error: {e}")
        return 1
    except Interrupted as e:
        say(f"interrupted ({e}{', time budget exceeded' if 'SIGALRM' in str(e) else ''})")
        return 130
    finally:
        cleanup()
        if ok and not keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            say(f"configs and logs kept in {work}")


if __name__ == "__main__":
    sys.exit(main())
