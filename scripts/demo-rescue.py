#!/usr/bin/env python3
"""The five kinds of CLOSE_WAIT socket, and what mod_socket_guard does with each, on a real
Apache prefork server (python3 standard library only; run as root).

    python3 scripts/demo-rescue.py            (or: scripts/demo-rescue.py)

It generates its own config in a work dir, starts Apache (mpm_prefork, a fixed pool of 6
children, mod_cgi with a slow CGI, /socket-status, SocketGuardScanInterval 500ms,
SocketGuardHungChildTimeout 2s, SocketGuardCloseWaitTimeout 2s), and plays five acts. Each act
prints what it did, what the kernel shows (`ss`), what /socket-status?auto (and ?json) and the
error log say, with timings, and checks the outcome:

  1. stuck           clients of a slow CGI give up (FIN). On shop.demo.test (AutoClose On) the
                     in-child guard shuts each socket down after 2s (SG0015); on
                     www.demo.test (AutoClose Off) the socket stays in CLOSE_WAIT, shown as stuck.
  2. old_generation  clients wait on the slow CGI, the server is restarted gracefully
                     (apache2 -k graceful), then the clients give up: the old children's sockets
                     are shown as old_generation and still closed by their guard (SG0015).
  3. hung            the prefork child serving a client is SIGSTOPped; once it is hung (2s
                     without checking in) the client gives up: the guard process ("socket-guard")
                     takes the socket out of the stopped child and shuts it down (state rescued,
                     SG0024). The child is SIGCONTed afterwards and the server still serves.
  4. leaked          the server-side sockets of two clients are duplicated (pidfd_getfd) into a
                     helper process (`sleep`, run as www-data) and their Apache children are
                     SIGKILLed; the clients give up. Both are shown as leaked with the helper's
                     pid and command; the guard process closes the one on the AutoClose On vhost
                     (SG0024) and leaves the AutoClose Off one; the helper is never killed by the
                     module (the demo ends it).
  5. backlog         every worker is busy (5 slow CGIs + one kept-alive status connection),
                     three more clients send a request and close while queued: never accepted,
                     shown as backlog (KernelCloseWaitBacklog, SG0027), never closed by the
                     module; Apache takes them once workers are free.

Everything it started (Apache, by its pid file; the helper; CGIs; client sockets) is stopped on
exit, also on failure or Ctrl-C. Nothing is ever killed by name. It runs about 20-25 seconds
(every wait has a deadline; about 45 s when nothing happens as it should). It exits 0 when every
act showed what it should, 1 otherwise (the failed checks are listed), 2 when it could not run at
all, 130 when interrupted. The transcript is also written to $DEMO_DIR/transcript.txt (the
previous error log is kept as error.log.old).

Environment:
  DEMO_DIR         work dir for config, logs, pid file, docroot, CGI, transcript
                   (default build/demo-rescue/ in the repository; it must be searchable by
                   www-data, which serves it)
  PORT             port on 127.0.0.1 of the main server www.demo.test, AutoClose Off
                   (default: a free one); /socket-status is asked there
  ON_PORT          port of the vhost shop.demo.test, AutoClose On (default: a free one)
  SOCKET_GUARD_SO  module to load (default build/mod_socket_guard.so in the repository)
  APACHE2          httpd binary (default /usr/sbin/apache2)
  ACTS             which acts to play, e.g. "1,3" or "stuck,hung" (default: all five)

Needs root: Apache runs as User www-data, the demo SIGSTOPs and SIGKILLs its children and takes
sockets out of them with pidfd_getfd, and the guard process needs CAP_SYS_PTRACE to rescue.
Needs python3 3.9+, `ss` (iproute2) and Linux 5.6+ (pidfd_getfd).
"""

import ctypes
import json
import os
import pwd
import re
import selectors
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import sglab  # noqa: E402
from sglab import all_pids, alive, proc_stat  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
APACHE2 = os.environ.get("APACHE2", "/usr/sbin/apache2")
MODULES_DIR = "/usr/lib/apache2/modules"
DEMO_DIR = Path(os.environ.get("DEMO_DIR") or ROOT / "build" / "demo-rescue").resolve()
SO = Path(os.environ.get("SOCKET_GUARD_SO") or ROOT / "build" / "mod_socket_guard.so").resolve()
ADDR = "127.0.0.1"
POOL = 6                 # prefork: StartServers = Min/MaxSpare = MaxRequestWorkers = ServerLimit
SCAN_S = 0.5             # SocketGuardScanInterval 500ms
HUNG_S = 2.0             # SocketGuardHungChildTimeout 2s
TIMEOUT_S = 2.0          # SocketGuardCloseWaitTimeout 2s (both servers)
CGI_SECS = 60            # how long the slow CGI would sleep if not released
OFF_HOST = "www.demo.test"
ON_HOST = "shop.demo.test"
SYS_PIDFD_GETFD = 438    # the same number on every Linux architecture (asm-generic table)

T0 = time.monotonic()
TRANSCRIPT = []


class Abort(Exception):
    """The demo cannot go on (the server did not start, a precondition failed)."""


# --------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------

def now():
    return time.monotonic()


def out(text=""):
    """Prints one transcript line (prefixed with the time since the demo started)."""
    for line in str(text).split("\n"):
        s = f"[{now() - T0:5.1f}s] {line}" if line else ""
        print(s, flush=True)
        TRANSCRIPT.append(s)


def header(text):
    out("")
    out("=" * 94)
    out(text)
    out("=" * 94)


def step(text):
    out("")
    out(f"-- {text}")


def secs(t):
    return f"{t:.2f}s"


def span(ts):
    lo, hi = min(ts), max(ts)
    return secs(lo) if f"{lo:.2f}" == f"{hi:.2f}" else f"{lo:.2f}..{hi:.2f}s"


# --------------------------------------------------------------------------------------------
# Small HTTP client (one request per connection, HTTP/1.0: the server closes first, so our
# own status requests never sit in CLOSE_WAIT on the server)
# --------------------------------------------------------------------------------------------

def http_get(port, path, host=None, timeout=5.0):
    """Returns (status, body text). Raises OSError on connection problems."""
    with socket.create_connection((ADDR, port), timeout=timeout) as s:
        req = f"GET {path} HTTP/1.0\r\nHost: {host or ADDR}\r\nUser-Agent: demo-rescue\r\n\r\n"
        s.sendall(req.encode())
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    m = re.match(rb"HTTP/\d\.\d (\d{3})", head)
    if not m:
        raise OSError(f"bad HTTP response to {path}: {head[:80]!r}")
    return int(m.group(1)), body.decode("utf-8", "replace")


class Auto:
    """/socket-status?auto, parsed."""

    def __init__(self, text):
        self.raw = text
        self.lines = text.splitlines()
        self.kv = {}
        for line in self.lines:
            k, sep, v = line.partition(": ")
            if sep and k not in self.kv:
                self.kv[k] = v

    def num(self, key):
        try:
            return int(self.kv.get(key, "0"))
        except ValueError:
            return 0

    def prefixed(self, prefix):
        return [l for l in self.lines if l.startswith(prefix + ": ")]

    def vhost_field(self, host, field):
        for l in self.prefixed("Vhost"):
            if l.startswith(f"Vhost: {host}:"):
                m = re.search(rf" {field}=(\d+)", l)
                return int(m.group(1)) if m else 0
        return 0

    def child(self, pid):
        for l in self.prefixed("Child"):
            if l.startswith(f"Child: {pid} "):
                return l
        return None


class Server:
    def __init__(self, port, on_port):
        self.port = port
        self.on_port = on_port
        self.conf = DEMO_DIR / "apache2.conf"
        self.pidfile = DEMO_DIR / "apache2.pid"
        self.errlog = DEMO_DIR / "error.log"
        self.pid = 0

    # ---- status page
    def auto(self, timeout=5.0):
        st, body = http_get(self.port, "/socket-status?auto", timeout=timeout)
        if st != 200:
            raise OSError(f"/socket-status?auto answered {st}")
        return Auto(body)

    def json(self, timeout=5.0):
        st, body = http_get(self.port, "/socket-status?json&all", timeout=timeout)
        if st != 200:
            raise OSError(f"/socket-status?json answered {st}")
        return json.loads(body)

    def try_auto(self):
        try:
            return self.auto(timeout=2.0)
        except OSError:
            return None

    def try_json(self):
        try:
            return self.json(timeout=2.0)
        except (OSError, ValueError):
            return None

    # ---- error log
    def log_size(self):
        try:
            return self.errlog.stat().st_size
        except OSError:
            return 0

    def log_lines_since(self, offset, ids):
        try:
            with open(self.errlog, "rb") as f:
                f.seek(offset)
                text = f.read().decode("utf-8", "replace")
        except OSError:
            return []
        want = tuple(f"{i}:" for i in ids)
        return [l for l in text.splitlines() if any(w in l for w in want)]

    # ---- process
    def running_pid(self):
        """The pid in the pid file if it is a live Apache started with our config."""
        try:
            pid = int(self.pidfile.read_text().strip())
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            return 0
        return pid if str(self.conf).encode() in cmd else 0

    def children(self):
        """Live processes whose parent is the Apache parent (workers and the guard process)."""
        return [p for p in all_pids() if (st := proc_stat(p)) and st[1] == self.pid and st[0] != "Z"]


# --------------------------------------------------------------------------------------------
# /proc, the kernel's view, ss
# --------------------------------------------------------------------------------------------

def proc_comm(pid):
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


def tcp_inode(server_port, client_port):
    """Inode of the server-side socket 127.0.0.1:server_port <- client_port (/proc/net/tcp)."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        f = line.split()
        lp = int(f[1].rsplit(":", 1)[1], 16)
        rp = int(f[2].rsplit(":", 1)[1], 16)
        if lp == server_port and rp == client_port:
            return int(f[9])
    return 0


def fd_of_inode(pid, inode):
    want = f"socket:[{inode}]"
    for name in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{name}") == want:
                return int(name)
        except OSError:
            pass
    return -1


def ss_close_wait(ports):
    """Server-side CLOSE_WAIT sockets on `ports`, as `ss -tnp` lists them."""
    flt = " or ".join(f"sport = :{p}" for p in ports)
    r = subprocess.run(["ss", "-Htnp", "state", "close-wait", f"( {flt} )"],
                       capture_output=True, text=True, timeout=10)
    rows = []
    for line in r.stdout.splitlines():
        f = line.split(None, 4)
        if len(f) < 4:
            continue
        users = f[4] if len(f) > 4 else ""
        holders = re.findall(r'\("([^"]*)",pid=(\d+),fd=(\d+)\)', users)
        rows.append({
            "recvq": int(f[0]), "local": f[2], "peer": f[3],
            "lport": int(f[2].rsplit(":", 1)[1]), "cport": int(f[3].rsplit(":", 1)[1]),
            "holders": [(c, int(p), int(fd)) for c, p, fd in holders],
        })
    return rows


def show_ss(server, note=""):
    rows = ss_close_wait([server.port, server.on_port])
    cmd = f"ss -tnp state close-wait '( sport = :{server.port} or sport = :{server.on_port} )'"
    out(f"   kernel: {cmd}: {len(rows)} socket(s){note}")
    for r in rows:
        held = ", ".join(f"{c} pid {p} fd {fd}" for c, p, fd in r["holders"]) or "no process (never accepted)"
        out(f"     {r['local']:<21} <- {r['peer']:<21} Recv-Q {r['recvq']:<4} held by {held}")
    return rows


AUTO_KEYS = ["CloseWaitNow", "ForceClosedGuard", "ForceClosedRescue", "KernelCloseWaitTracked",
             "KernelCloseWaitStuck", "KernelCloseWaitOldGeneration", "KernelCloseWaitHung",
             "KernelCloseWaitLeaked", "KernelCloseWaitBacklog", "KernelCloseWaitUntracked"]


def show_auto(a, keys=None, vhosts=True, children=None, leaked=False):
    """Prints an excerpt of ?auto: the given keys on one or two lines, the Vhost lines, etc."""
    keys = keys or AUTO_KEYS
    out(f"   /socket-status?auto (excerpt):")
    pairs = [f"{k}: {a.kv.get(k, '?')}" for k in keys]
    line = "     "
    for p in pairs:
        if len(line) + len(p) > 100:
            out(line.rstrip())
            line = "     "
        line += p + "   "
    if line.strip():
        out(line.rstrip())
    if vhosts:
        for l in a.prefixed("Vhost"):
            if l.startswith(f"Vhost: {OFF_HOST}:") or l.startswith(f"Vhost: {ON_HOST}:"):
                # The fields a reader needs here; the rest are on the page.
                keep = re.sub(r" (Accepted|Reported|AbandonedTimeoutMs|StoppedCgi|StoppedChild)=\d+", "", l)
                out(f"     {keep}")
    if children is not None:
        for l in a.prefixed("Child"):
            if children == "all" or any(l.startswith(f"Child: {p} ") for p in children):
                out(f"     {l}")
    if leaked:
        for l in a.prefixed("Leaked"):
            out(f"     {l}")


def conn_rows(j, clients):
    """The ?json connection rows of `clients`, in order (None where there is none)."""
    rows = j.get("connections", []) if j else []
    res = []
    for c in clients:
        res.append(next((r for r in rows
                         if r.get("local_port") == c.sport
                         and str(r.get("client", "")).endswith(f":{c.cport}")), None))
    return res


def show_rows(j, clients):
    out("   /socket-status?json, connection rows of these clients:")
    for c, r in zip(clients, conn_rows(j, clients)):
        if r is None:
            out(f"     client :{c.cport} -> no row (not a tracked connection)")
            continue
        cw = r.get("close_wait_ms")
        cw_s = f"{cw / 1000:.1f}s" if isinstance(cw, (int, float)) else "-"
        out(f"     pid {r.get('pid')}  client {r.get('client')} -> {r.get('vhost')}  "
            f"state {r.get('state')}  class {r.get('class') or '-'}  in CLOSE_WAIT {cw_s}  "
            f"{r.get('method')} {r.get('path')}")


LOG_RE = re.compile(r"^\[\w+ \w+ +\d+ (\d\d:\d\d:\d\d\.\d{3})\d* \d+\] (\[[^\]]+\]) \[pid (\d+)(?::tid \d+)?\] (.*)$")


def show_log(server, offset, ids, limit=8):
    lines = server.log_lines_since(offset, ids)
    out(f"   error log ({server.errlog.name}), new {'/'.join(ids)} lines: {len(lines)}")
    for l in lines[:limit]:
        m = LOG_RE.match(l)
        out("     " + (f"{m.group(1)} {m.group(2)} [pid {m.group(3)}] {m.group(4)}" if m else l))
    if len(lines) > limit:
        out(f"     ... ({len(lines) - limit} more)")
    return lines


# --------------------------------------------------------------------------------------------
# Clients
# --------------------------------------------------------------------------------------------

class SlowClient:
    """A client of /cgi-bin/slow: sends the request, waits for the first bytes of the answer
    (the handler runs), later gives up with shutdown(SHUT_WR) — a FIN, as a browser or crawler
    that hangs up — and keeps reading to see when (and how) the server closes its side."""

    def __init__(self, port, host, tag, secs=CGI_SECS):
        self.sport = port
        self.sock = socket.create_connection((ADDR, port), timeout=5)
        self.cport = self.sock.getsockname()[1]
        self.buf = b""
        self.gave_up_at = None
        self.fin = None          # ("fin"|"reset", seconds after giving up)
        # Connection: close, so that a worker whose CGI the demo releases is free again at once
        # (not held for KeepAliveTimeout by a client that is still there).
        req = (f"GET /cgi-bin/slow?SLEEP={secs}&TAG={tag} HTTP/1.1\r\nHost: {host}\r\n"
               f"User-Agent: demo-rescue\r\nConnection: close\r\n\r\n")
        self.sock.sendall(req.encode())

    def started(self):
        return b"slow: running" in self.buf

    def give_up(self):
        self.sock.shutdown(socket.SHUT_WR)
        self.gave_up_at = now()

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def wait_started(clients, timeout):
    """Reads until every client has the CGI's first line; returns the ones that did not."""
    deadline = now() + timeout
    sel = selectors.DefaultSelector()
    for c in clients:
        if not c.started():
            sel.register(c.sock, selectors.EVENT_READ, c)
    while sel.get_map() and now() < deadline:
        for key, _ in sel.select(timeout=max(0.0, deadline - now())):
            c = key.data
            try:
                data = c.sock.recv(4096)
            except OSError:
                data = b""
            if not data:
                sel.unregister(c.sock)
                continue
            c.buf += data
            if c.started():
                sel.unregister(c.sock)
    sel.close()
    return [c for c in clients if not c.started()]


def wait_fins(clients, timeout):
    """Reads on half-closed clients until the server's FIN (or a reset); records c.fin."""
    deadline = now() + timeout
    sel = selectors.DefaultSelector()
    for c in clients:
        if c.fin is None:
            sel.register(c.sock, selectors.EVENT_READ, c)
    while sel.get_map() and now() < deadline:
        for key, _ in sel.select(timeout=max(0.0, deadline - now())):
            c = key.data
            try:
                data = c.sock.recv(65536)
            except ConnectionResetError:
                c.fin = ("reset", now() - c.gave_up_at)
                sel.unregister(c.sock)
                continue
            except OSError:
                data = b""
            if data:
                c.buf += data
                continue
            c.fin = ("fin", now() - c.gave_up_at)
            sel.unregister(c.sock)
    sel.close()
    return [c for c in clients if c.fin is None]


def peer_silent(c):
    """True while nothing (no FIN, no data, no reset) arrived on a half-closed client."""
    c.sock.setblocking(False)
    try:
        data = c.sock.recv(1, socket.MSG_PEEK)
        return False if data == b"" or data else True
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        c.sock.setblocking(True)
        c.sock.settimeout(5)


# --------------------------------------------------------------------------------------------
# Waiting
# --------------------------------------------------------------------------------------------

def wait_for(timeout, fn, every=0.1):
    """Calls fn until it returns something truthy or `timeout` passes: (value, seconds)."""
    start = now()
    while True:
        v = fn()
        if v:
            return v, now() - start
        if now() - start >= timeout:
            return None, now() - start
        time.sleep(every)


# --------------------------------------------------------------------------------------------
# Setting up: config, CGI, start and stop
# --------------------------------------------------------------------------------------------

SLOW_CGI = r"""#!/bin/sh
# /cgi-bin/slow?SLEEP=N&TAG=t — prints its headers and a first line at once, then answers
# after N seconds (at most 300): a handler stuck on a slow backend. It gives up early when the
# demo releases it (@DIR@/release-<TAG> or @DIR@/release-all exists) or the server is gone
# (no pid file), so nothing outlives the demo.
dir="@DIR@"
secs=30
tag=none
for kv in $(printf '%s' "${QUERY_STRING:-}" | tr '&' ' '); do
    case "$kv" in
        SLEEP=*) v=${kv#SLEEP=}; case "$v" in "" | *[!0-9]*) ;; *) secs=$v ;; esac ;;
        TAG=*) v=${kv#TAG=}; case "$v" in "" | *[!a-z0-9]*) ;; *) tag=$v ;; esac ;;
    esac
done
[ "${#secs}" -gt 3 ] && secs=300
secs=$((secs + 0))
[ "$secs" -gt 300 ] && secs=300
printf 'Content-Type: text/plain\r\n\r\n'
printf 'slow: running (pid %s), answering in %s s\n' "$$" "$secs"
steps=$((secs * 5))
while [ "$steps" -gt 0 ]; do
    sleep 0.2
    if [ -e "$dir/release-$tag" ] || [ -e "$dir/release-all" ] || [ ! -e "$dir/apache2.pid" ]; then
        printf 'slow: released\n'
        exit 0
    fi
    steps=$((steps - 1))
done
printf 'slow: done\n'
"""


def free_port(avoid=()):
    try:
        return sglab.free_port(avoid)
    except OSError as e:
        raise Abort(str(e)) from e


def port_from_env(name, avoid):
    v = os.environ.get(name)
    if not v:
        return free_port(avoid)
    if not v.isdigit() or not 0 < int(v) < 65536:
        raise Abort(f"{name} must be a port number, got {v!r}")
    return int(v)


def write_config(server, is_root):
    d = DEMO_DIR
    htdocs, cgi = d / "htdocs", d / "cgi-bin"
    for p in (d, htdocs, cgi):
        p.mkdir(parents=True, exist_ok=True)
        p.chmod(0o755)
    for f in d.glob("release-*"):
        f.unlink()
    # A fresh error log per run (the previous one is kept as error.log.old).
    if server.errlog.exists():
        server.errlog.replace(d / "error.log.old")
    (htdocs / "index.html").write_text("<!DOCTYPE html><html><body>mod_socket_guard rescue demo</body></html>\n")
    (htdocs / "index.html").chmod(0o644)
    (cgi / "slow").write_text(SLOW_CGI.replace("@DIR@", str(d)))
    (cgi / "slow").chmod(0o755)
    user = "User www-data\nGroup www-data" if is_root else f"# not root: runs as {pwd.getpwuid(os.getuid()).pw_name}"
    conf = f"""# Generated by scripts/demo-rescue.py; overwritten on every run.
ServerRoot "{d}"
ServerName {OFF_HOST}
Listen {ADDR}:{server.port}
Listen {ADDR}:{server.on_port}
PidFile "{server.pidfile}"
DefaultRuntimeDir "{d}"
ErrorLog "{server.errlog}"
LogLevel warn socket_guard:info
{user}

LoadModule mpm_prefork_module "{MODULES_DIR}/mod_mpm_prefork.so"
LoadModule authz_core_module "{MODULES_DIR}/mod_authz_core.so"
LoadModule authz_host_module "{MODULES_DIR}/mod_authz_host.so"
LoadModule mime_module "{MODULES_DIR}/mod_mime.so"
LoadModule dir_module "{MODULES_DIR}/mod_dir.so"
LoadModule alias_module "{MODULES_DIR}/mod_alias.so"
LoadModule cgi_module "{MODULES_DIR}/mod_cgi.so"
LoadModule socket_guard_module "{SO}"

# A small fixed pool: {POOL} prefork children, never more, never fewer.
StartServers {POOL}
MinSpareServers {POOL}
MaxSpareServers {POOL}
ServerLimit {POOL}
MaxRequestWorkers {POOL}

Timeout 60
KeepAlive On
KeepAliveTimeout 30
MaxKeepAliveRequests 1000
TypesConfig /etc/mime.types
DirectoryIndex index.html
CustomLog "{d}/access.log" "%h %t \\"%r\\" %>s %b \\"%{{Host}}i\\" %Dus"

<Directory />
    AllowOverride None
    Require all denied
</Directory>
DocumentRoot "{htdocs}"
<Directory "{htdocs}">
    Require all granted
</Directory>
ScriptAlias /cgi-bin/ "{cgi}/"
<Directory "{cgi}">
    Options +ExecCGI
    Require all granted
</Directory>

# mod_socket_guard, server-wide (SPEC: ScanInterval and HungChildTimeout are server config only).
SocketGuardScanInterval 500ms
SocketGuardHungChildTimeout 2s
SocketGuardRescue On
# The main server, {OFF_HOST} on port {server.port}: only tracks and shows (the default).
SocketGuardAutoClose Off
SocketGuardCloseWaitTimeout 2s

<Location "/socket-status">
    SetHandler socket-status
    Require local
</Location>

# The one vhost that closes: {ON_HOST} on port {server.on_port}.
<VirtualHost {ADDR}:{server.on_port}>
    ServerName {ON_HOST}
    SocketGuardAutoClose On
    SocketGuardCloseWaitTimeout 2s
</VirtualHost>
"""
    server.conf.write_text(conf)
    server.conf.chmod(0o644)


def stop_apache(server, quiet=False):
    """Stops the Apache started from our config (by its pid file), then whatever it left in its
    process group (CGIs of SIGKILLed children); never anything else."""
    pid = server.running_pid()
    if not pid:
        return
    pgrp_members = lambda: [p for p in all_pids() if (st := proc_stat(p)) and st[2] == pid and p != pid and st[0] != "Z"]
    try:
        (DEMO_DIR / "release-all").touch()
    except OSError:
        pass
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = now() + 15
    while alive(pid) and now() < deadline:
        time.sleep(0.05)
    if alive(pid):
        if not quiet:
            out(f"   Apache (pid {pid}) did not stop within 15s; SIGKILL to its process group")
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            pass
        return
    # The parent is gone; CGIs of its group notice the missing pid file within 0.2s.
    wait_for(2.0, lambda: not pgrp_members())
    for p in pgrp_members():
        try:
            os.kill(p, signal.SIGKILL)
        except OSError:
            pass
    if not quiet:
        out(f"   Apache (pid {pid}) stopped")


def start_apache(server):
    r = subprocess.run([APACHE2, "-f", str(server.conf), "-t"], capture_output=True, text=True)
    out(f"   {APACHE2} -f {server.conf} -t: {(r.stdout + r.stderr).strip()}")
    if r.returncode != 0:
        raise Abort("the config test failed")
    log_start = server.log_size()
    r = subprocess.run([APACHE2, "-f", str(server.conf), "-k", "start"], capture_output=True, text=True)
    if r.returncode != 0:
        raise Abort(f"apache2 -k start failed: {(r.stdout + r.stderr).strip()}")
    pid, _ = wait_for(10, server.running_pid)
    if not pid:
        raise Abort(f"Apache did not write {server.pidfile} within 10s; see {server.errlog}")
    server.pid = pid
    a, _ = wait_for(10, server.try_auto)
    if not a:
        raise Abort(f"/socket-status?auto did not answer within 10s; see {server.errlog}")
    # All of the pool up, and the guard process scanning.
    ok, _ = wait_for(10, lambda: (a2 := server.try_auto()) and a2.num("GuardProcessPid") > 0
                     and a2.num("Scans") > 0 and len(server.children()) >= POOL + 1)
    a = server.auto()
    out(f"   Apache {a.kv.get('ServerVersion')} ({a.kv.get('ServerMPM')}) started: parent pid {pid}, "
        f"{len(server.children()) - 1} children, guard process pid {a.num('GuardProcessPid')} "
        f"(comm '{proc_comm(a.num('GuardProcessPid'))}', forked by the parent)")
    out(f"   http://{ADDR}:{server.port}/  = {OFF_HOST} (SocketGuardAutoClose Off)   "
        f"http://{ADDR}:{server.on_port}/  = {ON_HOST} (SocketGuardAutoClose On, 2s)")
    out(f"   http://{ADDR}:{server.port}/socket-status  (?auto ?json ?metrics)   logs: {server.errlog}")
    show_log(server, log_start, ["SG0001", "SG0025"], limit=3)
    if not ok:
        out("   (warning: the pool or the guard process were not all up within 10s)")


# --------------------------------------------------------------------------------------------
# The acts
# --------------------------------------------------------------------------------------------

class Act:
    def __init__(self, num, name, server):
        self.num, self.name, self.server = num, name, server
        self.failures = []
        self.notes = []
        self.clients = []
        self.tags = []
        self.started = now()

    def check(self, ok, what):
        if ok:
            out(f"   ok: {what}")
        else:
            out(f"   !! FAILED: {what}")
            self.failures.append(what)
        return ok

    def require(self, ok, what):
        if not self.check(ok, what):
            raise Abort(what)

    def clients_on(self, port, host, n, tag):
        cs = [SlowClient(port, host, tag) for _ in range(n)]
        self.clients += cs
        if tag not in self.tags:
            self.tags.append(tag)
        return cs

    def release(self, wait=True):
        """Lets this act's CGIs finish, closes its clients, waits until their workers are free."""
        for t in self.tags:
            (DEMO_DIR / f"release-{t}").touch()
        for c in self.clients:
            c.close()
        s = self.server

        def idle():
            j = s.try_json()
            if not j:
                return False
            busy = [r for r in j.get("connections", []) if r.get("path") == "/cgi-bin/slow"
                    and r.get("state") not in ("closed",)]
            return not busy and len(s.children()) == POOL + 1
        if wait:
            wait_for(8, idle, every=0.2)
        for t in self.tags:
            try:
                (DEMO_DIR / f"release-{t}").unlink()
            except OSError:
                pass


def note_fins(act, clients):
    """Adds to the act's summary when its clients got their FIN, after they gave up."""
    fins = [c.fin[1] for c in clients if c.fin]
    if fins:
        act.notes.append(f"FIN {span(fins)} after the clients gave up (timeout 2s)")


def act_stuck(act):
    s = act.server
    step(f"3 clients on {ON_HOST} and 1 on {OFF_HOST} request /cgi-bin/slow?SLEEP={CGI_SECS} (a handler "
         "stuck on a slow backend) and get the first bytes")
    on = act.clients_on(s.on_port, ON_HOST, 3, "a")
    off = act.clients_on(s.port, OFF_HOST, 1, "a")
    late = wait_started(on + off, 15)
    act.require(not late, "all 4 handlers are running (first bytes received)")
    before = s.auto()
    log0 = s.log_size()
    show_ss(s)
    show_rows(s.json(), on + off)

    step("the clients give up: shutdown(SHUT_WR), i.e. a FIN; they keep reading to see what the server does")
    for c in on + off:
        c.give_up()
    t0 = now()
    a, took = wait_for(5, lambda: (x := s.try_auto()) and x.num("KernelCloseWaitStuck") >= 4
                       and x.num("CloseWaitNow") >= 4 and x)
    out(f"   {secs(now() - t0)} after: the kernel reports them and the guard's scan has marked them (CloseWaitNow)"
        if a else "   (not 4 stuck sockets within 5s)")
    show_ss(s)
    if a:
        show_auto(a)
    show_rows(s.json(), on + off)
    act.check(a is not None, f"4 sockets in CLOSE_WAIT classed stuck (KernelCloseWaitStuck >= 4) within {secs(took)}")

    step(f"waiting for the guard on {ON_HOST} (AutoClose On, CloseWaitTimeout 2s, scan every 500ms)")
    missing = wait_fins(on, TIMEOUT_S + 2 * SCAN_S + 5)
    for c in on:
        out(f"   client :{c.cport} ({ON_HOST}): " + (f"the server's {c.fin[0].upper()} arrived {secs(c.fin[1])} after it gave up" if c.fin else "nothing from the server"))
    silent = peer_silent(off[0])
    out(f"   client :{off[0].cport} ({OFF_HOST}): {'nothing from the server (left alone)' if silent else 'the server closed it!'}")
    time.sleep(0.2)  # each child writes its SG0015 line right after the shutdown the client saw
    after = s.auto()
    show_ss(s)
    show_auto(after)
    show_rows(s.json(), on + off)
    lines = show_log(s, log0, ["SG0015", "SG0016", "SG0017"])
    act.check(not missing and all(c.fin[0] == "fin" for c in on),
              f"each {ON_HOST} client got a FIN (not a reset)")
    act.check(all(TIMEOUT_S - 0.3 <= c.fin[1] <= TIMEOUT_S + 2 * SCAN_S + 2 for c in on if c.fin),
              "... after the 2s timeout, within timeout + 2 scan intervals + 2s")
    act.check(after.num("ForceClosedGuard") - before.num("ForceClosedGuard") == 3,
              "ForceClosedGuard +3 (the in-child guard closed them)")
    act.check(len([l for l in lines if "SG0015" in l and ON_HOST in l]) == 3, f"3 SG0015 lines for {ON_HOST}")
    act.check(silent and off[0].cport in [r["cport"] for r in ss_close_wait([s.port])],
              f"the {OFF_HOST} socket (AutoClose Off) is still in CLOSE_WAIT, untouched")
    note_fins(act, on)


def act_old_generation(act):
    s = act.server
    step(f"2 clients on {ON_HOST} request /cgi-bin/slow and get the first bytes")
    cs = act.clients_on(s.on_port, ON_HOST, 2, "b")
    act.require(not wait_started(cs, 15), "both handlers are running")
    j = s.json()
    owners = [r.get("pid") if r else None for r in conn_rows(j, cs)]
    before = s.auto()
    gen0 = before.num("RestartGeneration")
    out(f"   served by children {owners}; RestartGeneration {gen0}")
    log0 = s.log_size()

    step(f"graceful restart: {APACHE2} -f {s.conf.name} -k graceful")
    r = subprocess.run([APACHE2, "-f", str(s.conf), "-k", "graceful"], capture_output=True, text=True)
    act.require(r.returncode == 0, f"apache2 -k graceful ran ({(r.stdout + r.stderr).strip() or 'no output'})")
    a, took = wait_for(10, lambda: (x := s.try_auto()) and x.num("RestartGeneration") > gen0 and x)
    act.require(a is not None, "RestartGeneration increased")
    out(f"   {secs(took)} later: RestartGeneration {a.num('RestartGeneration')}; the busy old children stay:")
    show_auto(a, keys=["RestartGeneration", "Open", "Accepted", "GuardProcessPid"], vhosts=False, children="all")

    step("now the clients give up")
    for c in cs:
        c.give_up()
    t0 = now()
    a, took = wait_for(5, lambda: (x := s.try_auto()) and x.num("KernelCloseWaitOldGeneration") >= 2 and x)
    out(f"   {secs(now() - t0)} after:")
    show_ss(s)
    if a:
        show_auto(a)
    j = s.json()
    show_rows(j, cs)
    act.check(a is not None, "both sockets classed old_generation (KernelCloseWaitOldGeneration >= 2)")
    act.check(all(r and r.get("class") == "old_generation" and r.get("pid") == o
                  for r, o in zip(conn_rows(j, cs), owners)),
              "their rows say class old_generation, still owned by the same old children")

    step(f"waiting for the old children's guard ({ON_HOST}: AutoClose On, 2s)")
    missing = wait_fins(cs, TIMEOUT_S + 2 * SCAN_S + 5)
    for c in cs:
        out(f"   client :{c.cport}: " + (f"{c.fin[0].upper()} {secs(c.fin[1])} after it gave up" if c.fin else "nothing from the server"))
    time.sleep(0.2)
    after = s.auto()
    show_ss(s)
    show_auto(after)
    lines = show_log(s, log0, ["SG0002", "SG0015", "SG0024"])
    act.check(not missing and all(c.fin[0] == "fin" for c in cs), "both clients got a FIN")
    act.check(after.num("ForceClosedGuard") - before.num("ForceClosedGuard") == 2, "ForceClosedGuard +2")
    sg15 = [l for l in lines if "SG0015" in l]
    act.check(len(sg15) == 2 and all(any(f"pid {o}," in l for l in sg15) for o in owners),
              "2 SG0015 lines, naming the old children's pids")
    act.check(not [r for r in ss_close_wait([s.on_port]) if r["cport"] in [c.cport for c in cs]],
              "no CLOSE_WAIT left for them")
    note_fins(act, cs)


def act_hung(act):
    s = act.server
    step(f"1 client on {ON_HOST} requests /cgi-bin/slow and gets the first bytes")
    (c,) = act.clients_on(s.on_port, ON_HOST, 1, "c")
    act.require(not wait_started([c], 15), "the handler is running")
    row = conn_rows(s.json(), [c])[0]
    act.require(row is not None and row.get("pid"), "its row names the owning child")
    owner = int(row["pid"])
    out(f"   /socket-status?json: client {row['client']} is served by prefork child pid {owner} "
        f"(state {row['state']}, {row['method']} {row['path']})")
    before = s.auto()
    log0 = s.log_size()

    step(f"SIGSTOP to child {owner}: it stops making progress (as in a deadlock or D-state)")
    os.kill(owner, signal.SIGSTOP)
    act.stopped = owner
    t_stop = now()
    a, took = wait_for(HUNG_S + 3, lambda: (x := s.try_auto()) and (l := x.child(owner)) and "Hung=1" in l and x)
    out(f"   /proc/{owner}/stat state: {proc_stat(owner)[0]} (stopped)")
    if a:
        out(f"   {secs(took)} after SIGSTOP (its last check-in was before the stop) the child is hung: {a.child(owner)}")
    act.check(a is not None, f"child {owner} shown Hung=1 (took {secs(took)})")

    step("the client gives up")
    c.give_up()
    t0 = now()
    a, took = wait_for(4, lambda: (x := s.try_auto()) and x.num("KernelCloseWaitHung") >= 1 and x)
    out(f"   {secs(now() - t0)} after:")
    show_ss(s)
    if a:
        show_auto(a, children=[owner])
    show_rows(s.json(), [c])
    act.check(a is not None, "its socket is classed hung (KernelCloseWaitHung >= 1)")

    step("waiting for the guard process to rescue it (the stopped child cannot act)")
    missing = wait_fins([c], TIMEOUT_S + 2 * SCAN_S + 5)
    out(f"   client :{c.cport}: " + (f"{c.fin[0].upper()} {secs(c.fin[1])} after it gave up, "
                                       f"{secs(now() - t_stop)} after SIGSTOP" if c.fin else "nothing from the server"))
    time.sleep(0.2)
    after = s.auto()
    j = s.json()
    show_ss(s)
    show_auto(after, keys=AUTO_KEYS + ["GuardProcessReach"], children=[owner])
    show_rows(j, [c])
    lines = show_log(s, log0, ["SG0015", "SG0024", "SG0025"])
    r = conn_rows(j, [c])[0]
    act.check(not missing and c.fin[0] == "fin", "the client got a FIN from the guard process")
    act.check(r is not None and r.get("state") == "rescued", "its row is in state rescued")
    act.check(after.num("ForceClosedRescue") - before.num("ForceClosedRescue") == 1, "ForceClosedRescue +1")
    act.check(after.num("ForceClosedGuard") == before.num("ForceClosedGuard"), "ForceClosedGuard unchanged (the child did nothing)")
    act.check(len([l for l in lines if "SG0024" in l and "hung child" in l]) == 1, "one SG0024 line (hung child)")
    act.check(proc_stat(owner) and proc_stat(owner)[0] == "T", f"child {owner} is still stopped: the module does not kill it")
    if c.fin:
        act.notes.append(f"rescued {c.fin[1]:.2f}s after the client gave up ({now() - t_stop:.1f}s after SIGSTOP)")

    step(f"SIGCONT to child {owner}; the server still serves")
    os.kill(owner, signal.SIGCONT)
    act.stopped = None
    st, _ = http_get(s.on_port, "/", host=ON_HOST)
    st2, _ = http_get(s.port, "/", host=OFF_HOST)
    out(f"   GET http://{ADDR}:{s.on_port}/ -> {st}   GET http://{ADDR}:{s.port}/ -> {st2}   child {owner}: state {proc_stat(owner)[0] if proc_stat(owner) else 'gone'}")
    act.check(st == 200 and st2 == 200, "both sites answer 200")


def act_leaked(act):
    s = act.server
    step(f"2 clients request /cgi-bin/slow: one on {ON_HOST} (AutoClose On), one on {OFF_HOST} (Off)")
    on = act.clients_on(s.on_port, ON_HOST, 1, "d")
    off = act.clients_on(s.port, OFF_HOST, 1, "d")
    both = on + off
    act.require(not wait_started(both, 15), "both handlers are running")
    rows = conn_rows(s.json(), both)
    act.require(all(r and r.get("pid") for r in rows), "their rows name the owning children")
    owners = [int(r["pid"]) for r in rows]
    log0 = s.log_size()
    before = s.auto()

    step("a process spawned from Apache inherits the sockets: the demo takes a duplicate of each "
         "(pidfd_open + pidfd_getfd) and starts `sleep 120` as www-data holding them")
    libc = ctypes.CDLL(None, use_errno=True)
    taken = []
    try:
        for c, o in zip(both, owners):
            inode = tcp_inode(c.sport, c.cport)
            fd = fd_of_inode(o, inode)
            if fd < 0:
                act.require(False, f"child {o} holds socket inode {inode}")
            pidfd = os.pidfd_open(o)
            try:
                dup = libc.syscall(ctypes.c_long(SYS_PIDFD_GETFD), ctypes.c_long(pidfd),
                                   ctypes.c_long(fd), ctypes.c_long(0))
                err = ctypes.get_errno()
            finally:
                os.close(pidfd)
            act.require(dup >= 0, f"pidfd_getfd(child {o}, fd {fd}) gave a duplicate"
                        + (f" ({os.strerror(err)})" if dup < 0 else ""))
            taken.append(dup)
            out(f"   client :{c.cport}: its server-side socket (inode {inode}) is fd {fd} in child {o}")
        www = pwd.getpwnam("www-data")
        act.helper = subprocess.Popen(
            ["sleep", "120"], pass_fds=taken, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, user=www.pw_uid, group=www.pw_gid, extra_groups=[],
            start_new_session=True, close_fds=True)
    finally:
        for fd in taken:
            os.close(fd)
    helper = act.helper.pid
    out(f"   helper: pid {helper} ({proc_comm(helper)}, uid {www.pw_uid}) holds fds {taken} (inherited)")

    step(f"SIGKILL to the Apache children {owners} (a crash); then the clients give up")
    for o in owners:
        os.kill(o, signal.SIGKILL)
    gone, took = wait_for(3, lambda: (j := s.try_json()) and not any(
        r.get("pid") in owners for r in j.get("connections", []) + j.get("children", [])))
    if gone:
        out(f"   the killed children's rows are gone from /socket-status after {secs(took)} (reclaimed by the guard process)")
    act.check(bool(gone), "the killed children's rows were reclaimed within 3s")
    for c in both:
        c.give_up()
    t0 = now()
    held_by_helper = lambda: [r for r in ss_close_wait([s.port, s.on_port])
                              if r["cport"] in [c.cport for c in both] and any(p == helper for _, p, _ in r["holders"])]
    rows_ss, _ = wait_for(3, lambda: len(held_by_helper()) == 2 and held_by_helper())
    show_ss(s, note=" (the sockets now belong only to the helper)")
    act.check(bool(rows_ss), "both sockets in CLOSE_WAIT, held only by the helper")

    step("the guard process looks for a holder once a socket has been untracked for its vhost's timeout (2s)")

    def off_listed():
        x = s.try_auto()
        if not x:
            return None
        mine = [l for l in x.prefixed("Leaked") if f":{off[0].cport} " in l]
        return x if mine and f"holder={helper} " in mine[0] else None
    a, took = wait_for(TIMEOUT_S + 2 * SCAN_S + 5, off_listed)
    missing = wait_fins(on, TIMEOUT_S + 2 * SCAN_S + 5 - (now() - t0))
    out(f"   {secs(now() - t0)} after the clients gave up:")
    out(f"   client :{on[0].cport} ({ON_HOST}): " + (f"{on[0].fin[0].upper()} {secs(on[0].fin[1])} after it gave up" if on[0].fin else "nothing from the server"))
    silent = peer_silent(off[0])
    out(f"   client :{off[0].cport} ({OFF_HOST}): {'nothing from the server (left alone)' if silent else 'the server closed it!'}")
    time.sleep(0.2)
    after = s.auto()
    show_ss(s)
    show_auto(after, keys=AUTO_KEYS + ["GuardProcessReach"], leaked=True)
    j = s.json()
    for l in j.get("kernel", {}).get("leaked", []):
        out(f"     ?json kernel.leaked: {json.dumps(l)}")
    out(f"   (the {ON_HOST} socket was shut down in the same scan that found its holder, so it left "
        f"CLOSE_WAIT and the list at once; the {OFF_HOST} one stays listed)")
    lines = show_log(s, log0, ["SG0024", "SG0016"])
    act.check(a is not None, f"the {OFF_HOST} socket is listed as leaked with holder={helper} comm=sleep")
    act.check(after.num("KernelCloseWaitLeaked") >= 1, "KernelCloseWaitLeaked >= 1")
    act.check(not missing and on[0].fin[0] == "fin", f"the {ON_HOST} client got a FIN from the guard process")
    act.check(after.num("ForceClosedRescue") - before.num("ForceClosedRescue") == 1, "ForceClosedRescue +1")
    act.check(len([l for l in lines if "SG0024" in l and f"held by pid {helper} (sleep)" in l and ON_HOST in l]) == 1,
              f"one SG0024 line: {ON_HOST}, held by pid {helper} (sleep)")
    act.check(silent and off[0].cport in [r["cport"] for r in ss_close_wait([s.port])],
              f"the {OFF_HOST} socket (AutoClose Off) is left in CLOSE_WAIT")
    act.check(act.helper.poll() is None and alive(helper), f"the helper (pid {helper}) is still alive: the module never kills it")
    if on[0].fin:
        act.notes.append(f"leaked socket closed {on[0].fin[1]:.2f}s after the client gave up; helper alive")

    step(f"the demo ends the helper (pid {helper}); its last copy of the {OFF_HOST} socket goes with it")
    act.helper.terminate()
    act.helper.wait(5)
    act.helper = None
    left, _ = wait_for(2, lambda: not [r for r in ss_close_wait([s.port]) if r["cport"] == off[0].cport])
    show_ss(s)
    act.check(bool(left), "no CLOSE_WAIT left once the holder exited")


def act_backlog(act):
    s = act.server
    step(f"a status client keeps one connection open (HTTP/1.1 keep-alive): it holds 1 of the {POOL} workers")
    k = socket.create_connection((ADDR, s.port), timeout=5)
    act.keepalive = k
    kport = k.getsockname()[1]
    kbuf = [b""]

    def k_auto():
        k.sendall(f"GET /socket-status?auto HTTP/1.1\r\nHost: {ADDR}\r\nUser-Agent: demo-rescue\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in kbuf[0]:
            d = k.recv(65536)
            if not d:
                raise OSError("the kept-alive status connection was closed by the server")
            kbuf[0] += d
        head, _, rest = kbuf[0].partition(b"\r\n\r\n")
        hl = head.decode("latin-1").lower()
        body = b""
        if "transfer-encoding: chunked" in hl:
            while True:
                while b"\r\n" not in rest:
                    rest += k.recv(65536)
                size_line, _, rest = rest.partition(b"\r\n")
                n = int(size_line.split(b";")[0], 16)
                while len(rest) < n + 2:
                    rest += k.recv(65536)
                body += rest[:n]
                rest = rest[n + 2:]
                if n == 0:
                    break
        else:
            m = re.search(r"content-length: (\d+)", hl)
            n = int(m.group(1)) if m else 0
            while len(rest) < n:
                rest += k.recv(65536)
            body, rest = rest[:n], rest[n:]
        kbuf[0] = rest
        return Auto(body.decode("utf-8", "replace"))

    before = k_auto()
    step(f"{POOL - 1} clients on {ON_HOST} request /cgi-bin/slow: with the status connection, every worker is busy")
    busy = act.clients_on(s.on_port, ON_HOST, POOL - 1, "e")
    act.require(not wait_started(busy, 15), f"all {POOL - 1} handlers are running: the pool is full")
    a = k_auto()
    out(f"   (asked on the kept-alive connection :{kport}) Open: {a.kv.get('Open')}  OpenHandling: {a.kv.get('OpenHandling')}  "
        f"OpenKeepalive: {a.kv.get('OpenKeepalive')}")
    act.check(a.num("Open") >= POOL, f"{POOL} connections open: all {POOL} workers are busy")
    log0 = s.log_size()

    step("3 more clients connect, send GET / and close at once (they give up while queued)")
    queued = []
    for _ in range(3):
        q = socket.create_connection((ADDR, s.on_port), timeout=5)
        q.sendall(f"GET / HTTP/1.1\r\nHost: {ON_HOST}\r\nUser-Agent: demo-rescue\r\n\r\n".encode())
        queued.append(q.getsockname()[1])
        q.close()
    t0 = now()
    qrows = lambda: [r for r in ss_close_wait([s.on_port]) if r["cport"] in queued]
    rows, _ = wait_for(3, lambda: len(qrows()) == 3 and qrows())
    show_ss(s, note=" (Recv-Q: the request bytes + the FIN, never read)")
    act.check(bool(rows) and all(r["recvq"] > 1 and not r["holders"] for r in rows),
              "3 sockets in CLOSE_WAIT, never accepted (no process, request bytes in Recv-Q)")

    a, took = wait_for(TIMEOUT_S + 2 * SCAN_S + 4, lambda: (x := k_auto()) and x.num("KernelCloseWaitBacklog") >= 3 and x)
    out(f"   {secs(now() - t0)} after, /socket-status?auto on the kept-alive connection:")
    if a:
        show_auto(a)
    act.check(a is not None, "KernelCloseWaitBacklog >= 3")
    sg27, _ = wait_for(TIMEOUT_S + 2 * SCAN_S + 4 - (now() - t0), lambda: s.log_lines_since(log0, ["SG0027"]))
    show_log(s, log0, ["SG0027", "SG0024", "SG0015"])
    act.check(bool(sg27) and "never accepted" in sg27[0], "SG0027: reported as a capacity problem")

    step(f"well past the 2s timeout ({TIMEOUT_S + 2 * SCAN_S + 1:.0f}s after they gave up), the module has not closed them")
    time.sleep(max(0.0, TIMEOUT_S + 2 * SCAN_S + 1 - (now() - t0)))
    rows = qrows()
    a2 = k_auto()
    show_ss(s)
    show_auto(a2, keys=["KernelCloseWaitBacklog", "ForceClosedGuard", "ForceClosedRescue"], vhosts=False)
    act.check(len(rows) == 3, f"still 3 in CLOSE_WAIT {secs(now() - t0)} after they gave up")
    act.check(a2.num("ForceClosedGuard") == before.num("ForceClosedGuard")
              and a2.num("ForceClosedRescue") == before.num("ForceClosedRescue"),
              "ForceClosedGuard and ForceClosedRescue unchanged: backlog is shown, never closed")
    act.check(len(s.log_lines_since(log0, ["SG0027"])) == 1, "SG0027 said once for this episode")

    step("the slow CGIs finish: the workers are free again and Apache takes the queued connections itself")
    (DEMO_DIR / "release-e").touch()
    t1 = now()
    for c in busy:           # they read their answers to the end and hang up, as clients do
        c.gave_up_at = t1
    wait_fins(busy, 5)
    for c in busy:
        c.close()
    gone, _ = wait_for(10, lambda: not qrows())
    out(f"   {secs(now() - t1)} after the release: queued sockets left CLOSE_WAIT: {'yes' if gone else 'no'}")
    k.close()
    act.keepalive = None
    show_ss(s)
    a3 = s.auto()
    show_auto(a3, keys=["KernelCloseWaitBacklog", "ForceClosedGuard", "ForceClosedRescue", "CloseWaitNow"], vhosts=False)
    act.check(bool(gone), "Apache accepted and answered the queued connections once workers were free")
    act.notes.append(f"3 never-accepted sockets left in CLOSE_WAIT for {t1 - t0:.1f}s, untouched; SG0027 once")


ACTS = [
    (1, "stuck", "a handler stuck on a slow backend; its client gave up", act_stuck),
    (2, "old_generation", "stuck connections across a graceful restart", act_old_generation),
    (3, "hung", "a child that stopped making progress (SIGSTOP)", act_hung),
    (4, "leaked", "a socket inherited by another process, its Apache owner killed", act_leaked),
    (5, "backlog", "clients that gave up in the listen queue while every worker was busy", act_backlog),
]


def selected_acts():
    want = os.environ.get("ACTS", "").strip()
    if not want:
        return ACTS
    keys = {w.strip() for w in want.split(",") if w.strip()}
    sel = [a for a in ACTS if str(a[0]) in keys or a[1] in keys]
    unknown = keys - {str(a[0]) for a in ACTS} - {a[1] for a in ACTS}
    if unknown or not sel:
        raise Abort(f"ACTS: unknown act(s) {sorted(unknown)}; use 1-5 or {', '.join(a[1] for a in ACTS)}")
    return sel


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------

def on_signal(signum, _frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main():
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    results = []
    server = None
    current = None
    code = 0
    try:
        if os.geteuid() != 0:
            raise Abort("run it as root: Apache runs as www-data, the demo stops, kills and takes "
                        "sockets out of its children, and the guard process needs CAP_SYS_PTRACE")
        for tool in (APACHE2, "/usr/bin/ss" if os.path.exists("/usr/bin/ss") else "/bin/ss"):
            if not os.access(tool, os.X_OK):
                raise Abort(f"{tool} not found (scripts/bootstrap.sh installs apache2 and iproute2)")
        if not SO.exists():
            raise Abort(f"module {SO} not found (set SOCKET_GUARD_SO)")
        acts = selected_acts()
        DEMO_DIR.mkdir(parents=True, exist_ok=True)
        port = port_from_env("PORT", ())
        on_port = port_from_env("ON_PORT", (port,))
        if on_port == port:
            raise Abort("PORT and ON_PORT must differ")
        server = Server(port, on_port)
        header("mod_socket_guard: five kinds of CLOSE_WAIT socket on a real Apache prefork server")
        out(f"   work dir {DEMO_DIR}; module {SO}")
        old = server.running_pid()
        if old:
            out(f"   an Apache from an earlier run of this demo is running (pid {old}): stopping it")
            stop_apache(server)
        write_config(server, is_root=True)
        out(f"   config {server.conf}: prefork, {POOL} children fixed; SocketGuardScanInterval 500ms, "
            f"SocketGuardHungChildTimeout 2s, SocketGuardCloseWaitTimeout 2s; LogLevel warn socket_guard:info")
        start_apache(server)

        for num, name, what, fn in acts:
            header(f"Act {num}/5: {name} — {what}")
            act = Act(num, name, server)
            act.stopped = act.helper = act.keepalive = None
            current = act
            try:
                fn(act)
            except Abort as e:
                out(f"   act stopped: {e}")
                if not act.failures:
                    act.failures.append(str(e))
            except (OSError, ValueError, subprocess.SubprocessError) as e:
                out(f"   !! FAILED: {type(e).__name__}: {e}")
                act.failures.append(f"{type(e).__name__}: {e}")
            except KeyboardInterrupt:
                act.failures.append("interrupted")
                results.append(act)
                raise
            except Exception as e:  # a bug in the demo itself: report it, clean up, go on
                import traceback
                out(f"   !! FAILED: unexpected {type(e).__name__}: {e}")
                for l in traceback.format_exc().rstrip().splitlines()[-6:]:
                    out(f"      {l}")
                act.failures.append(f"unexpected {type(e).__name__}: {e}")
            cleanup_act(act)
            current = None
            results.append(act)
            out(f"   act {num} ({name}): {'PASS' if not act.failures else 'FAIL'} in {secs(now() - act.started)}")
    except Abort as e:
        out(f"demo-rescue: {e}")
        code = 2
    except KeyboardInterrupt as e:
        out(f"demo-rescue: interrupted ({e}); cleaning up")
        code = 130
    finally:
        # The cleanup itself is bounded; a second Ctrl-C must not cut it short.
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        if current is not None:
            out("   undoing what the interrupted act started")
            cleanup_act(current, wait=False)
        if server is not None:
            step("cleaning up: stopping Apache by its pid file")
            try:
                stop_apache(server)
            except Exception as e:  # the cleanup must go on
                out(f"   (stop failed: {e})")
            for f in DEMO_DIR.glob("release-*"):
                try:
                    f.unlink()
                except OSError:
                    pass
        if results:
            header("Summary")
            for act in results:
                detail = "; ".join(act.notes) if not act.failures else "failed: " + "; ".join(act.failures)
                verdict = "PASS" if not act.failures else "INTERRUPTED" if act.failures == ["interrupted"] else "FAIL"
                if verdict == "INTERRUPTED":
                    detail = ""
                out(f"   {act.num}. {act.name:<15} {verdict:<4}  {detail}")
            out(f"   total {secs(now() - T0)}")
        if code == 0 and any(a.failures for a in results):
            code = 1
        if code == 1:
            out("demo-rescue: some acts did not show what they should (see the FAILED lines above)")
        try:
            DEMO_DIR.mkdir(parents=True, exist_ok=True)
            (DEMO_DIR / "transcript.txt").write_text("\n".join(TRANSCRIPT) + "\n")
        except OSError:
            pass
    return code


def cleanup_act(act, wait=True):
    """Undoes what an act started: a stopped child, the helper, the status connection, clients,
    the act's CGIs. Safe to call twice."""
    if getattr(act, "stopped", None):
        try:
            os.kill(act.stopped, signal.SIGCONT)
        except OSError:
            pass
        act.stopped = None
    if getattr(act, "helper", None) is not None:
        try:
            act.helper.terminate()
            act.helper.wait(5)
        except (OSError, subprocess.SubprocessError):
            pass
        act.helper = None
    if getattr(act, "keepalive", None) is not None:
        try:
            act.keepalive.close()
        except OSError:
            pass
        act.keepalive = None
    try:
        act.release(wait=wait)
    except OSError:
        pass


if __name__ == "__main__":
    sys.exit(main())
