"""Shared helpers for scripts/memcheck.py and scripts/soak.py (python3 standard library only):
a generated Apache config, HTTP requests, the status page, /proc and the kernel's TCP table.

Nothing here finds a process by name: Apache's processes are the pid file's pid (checked
against its command line) and that pid's descendants.
"""

import http.client
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
APACHE2 = os.environ.get("APACHE2", "/usr/sbin/apache2")
MODULES_DIR = os.environ.get("APACHE_MODULES_DIR", "/usr/lib/apache2/modules")
SO = Path(os.environ.get("SOCKET_GUARD_SO") or ROOT / "build" / "mod_socket_guard.so").resolve()
ADDR = "127.0.0.1"
MPMS = ("prefork", "worker", "event")

# Answers after SLEEP seconds (at most 120), printing one line first so a client can read the
# first bytes and leave. A CGI left behind is ended with its server's process group.
SLOW_CGI = r"""#!/bin/sh
secs=${QUERY_STRING#*SLEEP=}
secs=${secs%%&*}
case "$secs" in ''|*[!0-9]*|????*) secs=5 ;; esac
[ "$secs" -gt 120 ] && secs=120
printf 'Content-Type: text/plain\r\n\r\nslow: %s s (pid %s)\n' "$secs" "$$"
sleep "$secs"
echo done
"""


def mono():
    return time.monotonic()


def wait_for(timeout, fn, every=0.1):
    """Calls fn until it returns something true or `timeout` seconds pass; returns the last value."""
    deadline = mono() + timeout
    while True:
        v = fn()
        if v or mono() >= deadline:
            return v
        time.sleep(every)


def free_port(avoid=()):
    for _ in range(50):
        with socket.socket() as s:
            s.bind((ADDR, 0))
            p = s.getsockname()[1]
        if p not in avoid:
            return p
    raise OSError("no free port found")


def write_report(path, lines):
    """Prints the report and keeps a copy in `path`."""
    Path(path).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


# --------------------------------------------------------------------------------------------
# HTTP
# --------------------------------------------------------------------------------------------

def request(port, path, host=None, method="GET", timeout=10.0, conn=None, body=None):
    """One HTTP request; returns (status, body bytes). With `conn` (an HTTPConnection) the request
    goes on that connection, so a caller can keep it alive; otherwise a new one is opened and
    closed. Raises OSError / http.client.HTTPException on failure."""
    own = conn is None
    c = conn or http.client.HTTPConnection(ADDR, port, timeout=timeout)
    try:
        headers = {"Host": host} if host else {}
        c.request(method, path, body=body, headers=headers)
        r = c.getresponse()
        data = r.read()
        return r.status, data
    finally:
        if own:
            c.close()


def parse_auto(text):
    """`?auto` lines as a dict; repeated keys (Vhost:, Child:, Leaked:) collect into lists."""
    kv = {}
    for line in text.splitlines():
        k, sep, v = line.partition(": ")
        if not sep:
            continue
        if k in ("Vhost", "Child", "Leaked"):
            kv.setdefault(k, []).append(v)
        else:
            kv[k] = v
    return kv


def num(kv, key):
    try:
        return int(kv.get(key, "0"))
    except ValueError:
        return 0


# --------------------------------------------------------------------------------------------
# /proc
# --------------------------------------------------------------------------------------------

def proc_stat(pid):
    """(state, ppid, pgrp) of a process, or None when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    rest = raw[raw.rfind(")") + 2:].split()
    return rest[0], int(rest[1]), int(rest[2])


def all_pids():
    return [int(n) for n in os.listdir("/proc") if n.isdigit()]


def children_of(pid):
    """Live (not zombie) processes whose parent is `pid`."""
    out = []
    for p in all_pids():
        st = proc_stat(p)
        if st and st[1] == pid and st[0] != "Z":
            out.append(p)
    return out


def descendants(pid):
    """Every live process below `pid` (children, grandchildren, ...)."""
    parent_of = {}
    for p in all_pids():
        st = proc_stat(p)
        if st and st[0] != "Z":
            parent_of[p] = st[1]
    found, frontier = [], [pid]
    while frontier:
        nxt = [p for p, pp in parent_of.items() if pp in frontier]
        found += nxt
        frontier = nxt
    return found


def alive(pid):
    st = proc_stat(pid)
    return st is not None and st[0] not in ("Z", "X")


def fd_targets(pid):
    """{fd number: readlink target} of a process ({} when it is gone)."""
    out = {}
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return out
    for n in names:
        try:
            out[int(n)] = os.readlink(f"/proc/{pid}/fd/{n}")
        except OSError:
            pass
    return out


def socket_holders(pids):
    """{socket inode: pid} for the sockets the given processes hold."""
    out = {}
    for pid in pids:
        for target in fd_targets(pid).values():
            if target.startswith("socket:["):
                out.setdefault(int(target[8:-1]), pid)
    return out


def kernel_connections(ports):
    """Server-side TCP sockets on `ports` that a process still holds (inode != 0), from
    /proc/net/tcp and tcp6: {(client "addr:port", local port): (inode, state hex)}.
    Listening sockets and orphans (closed by their process, inode 0) are left out."""
    out = {}
    for name in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/net/{name}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            local, remote, state, inode = f[1], f[2], f[3], int(f[9])
            lport = int(local.rsplit(":", 1)[1], 16)
            if lport not in ports or state == "0A" or inode == 0:
                continue
            out[(hex_addr(remote), lport)] = (inode, state)
    return out


def hex_addr(field):
    """/proc/net/tcp's "0100007F:C350" (or the IPv6 form) as "127.0.0.1:50000"."""
    addr, port = field.rsplit(":", 1)
    raw = bytes.fromhex(addr)
    if len(raw) == 4:
        ip = socket.inet_ntop(socket.AF_INET, raw[::-1])
    else:
        words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
        ip = socket.inet_ntop(socket.AF_INET6, words)
        if ip.startswith("::ffff:"):
            ip = ip[7:]
    return f"{ip}:{int(port, 16)}"


# --------------------------------------------------------------------------------------------
# A generated Apache server
# --------------------------------------------------------------------------------------------

def mpm_block(mpm, threads):
    """A small pool: 3 children of `threads` threads (worker/event), or up to 16 prefork
    children."""
    if mpm == "prefork":
        return ("StartServers 4\nMinSpareServers 2\nMaxSpareServers 8\nServerLimit 16\n"
                "MaxRequestWorkers 16\n")
    return (f"StartServers 2\nServerLimit 3\nThreadsPerChild {threads}\nThreadLimit {threads}\n"
            f"MaxRequestWorkers {3 * threads}\nMinSpareThreads {threads}\n"
            f"MaxSpareThreads {2 * threads}\n")


class Apache:
    """An Apache from a config generated in `work` (config, logs, pid file, docroot, CGI)."""

    def __init__(self, work, mpm, port, on_port):
        self.work = Path(work)
        self.mpm = mpm
        self.port = port          # the main server: www.lab.test, SocketGuardAutoClose Off
        self.on_port = on_port    # a vhost: shop.lab.test, SocketGuardAutoClose On
        self.conf = self.work / "apache2.conf"
        self.pidfile = self.work / "apache2.pid"
        self.errlog = self.work / "error.log"
        self.htdocs = self.work / "htdocs"
        self.pid = 0

    def write(self, guard_lines, shop_lines="", threads=10):
        """Writes docroot (index.html, a 4 MiB file), the slow CGI and the config. `guard_lines`
        are the server-wide SocketGuard* directives; the shop vhost gets AutoClose On and
        `shop_lines`."""
        cgi = self.work / "cgi-bin"
        for d in (self.work, self.htdocs, cgi):
            d.mkdir(parents=True, exist_ok=True)
            d.chmod(0o755)
        (self.htdocs / "index.html").write_text("<html><body>mod_socket_guard lab</body></html>\n")
        (self.htdocs / "big.bin").write_bytes(os.urandom(1 << 20) * 4)
        (cgi / "slow").write_text(SLOW_CGI)
        (cgi / "slow").chmod(0o755)
        for f in self.htdocs.iterdir():
            f.chmod(0o644)
        cgi_mod = "cgi" if self.mpm == "prefork" else "cgid"
        mods = [f"mpm_{self.mpm}", "authz_core", "authz_host", "mime", "dir", "alias", "status",
                cgi_mod]
        loads = "\n".join(f'LoadModule {m}_module "{MODULES_DIR}/mod_{m}.so"' for m in mods)
        user = "User www-data\nGroup www-data" if os.getuid() == 0 else ""
        self.conf.write_text(f"""# Generated by scripts/sglab.py; overwritten on every run.
ServerRoot "{self.work}"
ServerName www.lab.test
Listen {ADDR}:{self.port}
Listen {ADDR}:{self.on_port}
PidFile "{self.pidfile}"
DefaultRuntimeDir "{self.work}"
ErrorLog "{self.errlog}"
LogLevel warn socket_guard:info
{loads}
LoadModule socket_guard_module "{SO}"
{user}
{mpm_block(self.mpm, threads)}
<IfModule cgid_module>
    ScriptSock "{self.work}/cgisock"
</IfModule>
Timeout 20
KeepAlive On
KeepAliveTimeout 3
MaxKeepAliveRequests 100
TypesConfig /etc/mime.types
DirectoryIndex index.html
ExtendedStatus On
<Directory />
    AllowOverride None
    Require all denied
</Directory>
DocumentRoot "{self.htdocs}"
<Directory "{self.htdocs}">
    Require all granted
</Directory>
ScriptAlias /cgi-bin/ "{cgi}/"
<Directory "{cgi}">
    Options +ExecCGI
    Require all granted
</Directory>
<Location "/socket-status">
    SetHandler socket-status
    Require local
</Location>
<Location "/server-status">
    SetHandler server-status
    Require local
</Location>
{guard_lines}
<VirtualHost {ADDR}:{self.on_port}>
    ServerName shop.lab.test
    SocketGuardAutoClose On
    {shop_lines}
</VirtualHost>
""")
        self.conf.chmod(0o644)

    def config_test(self):
        r = subprocess.run([APACHE2, "-f", str(self.conf), "-t"], capture_output=True, text=True)
        if r.returncode != 0:
            raise OSError(f"config test failed: {(r.stdout + r.stderr).strip()}")

    def running_pid(self):
        """The pid in the pid file if it is a live Apache started with our config, else 0."""
        try:
            pid = int(self.pidfile.read_text().strip())
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError):
            return 0
        return pid if str(self.conf).encode() in cmd and alive(pid) else 0

    def start(self):
        self.config_test()
        r = subprocess.run([APACHE2, "-f", str(self.conf), "-k", "start"], capture_output=True,
                           text=True)
        if r.returncode != 0:
            raise OSError(f"apache2 -k start failed: {(r.stdout + r.stderr).strip()}")
        self.pid = wait_for(10, self.running_pid)
        if not self.pid:
            raise OSError(f"Apache did not write {self.pidfile} within 10 s; see {self.errlog}")

    def auto(self, timeout=5.0):
        st, body = request(self.port, "/socket-status?auto", timeout=timeout)
        if st != 200:
            raise OSError(f"/socket-status?auto answered {st}")
        return parse_auto(body.decode("utf-8", "replace"))

    def try_auto(self, timeout=5.0):
        try:
            return self.auto(timeout)
        except (OSError, http.client.HTTPException):
            return None

    def signal(self, sig):
        if self.pid and alive(self.pid):
            os.kill(self.pid, sig)

    def stop(self, timeout=30.0):
        """SIGTERM to the parent; waits for it and its descendants. Whatever of its tree is
        still there after `timeout` (or after the parent left) gets SIGKILL. Returns the
        seconds the parent took to exit, or None if it had to be killed."""
        pid = self.pid or self.running_pid()
        if not pid:
            return 0.0
        tree = descendants(pid)
        t0 = mono()
        for p in tree:   # a SIGSTOPped child could not act on its parent's stop
            try:
                os.kill(p, signal.SIGCONT)
            except OSError:
                pass
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return 0.0
        wait_for(timeout, lambda: not alive(pid), 0.05)
        took = None if alive(pid) else mono() - t0
        # CGIs of killed children were reparented away from the tree; they stay in the
        # process group the daemonized parent leads.
        leftovers = set(tree) | {p for p in all_pids() if (st := proc_stat(p)) and st[2] == pid}
        leftovers.discard(pid)
        wait_for(3.0, lambda: not [p for p in leftovers if alive(p)])
        for p in [pid, *leftovers]:
            if alive(p):
                try:
                    os.kill(p, signal.SIGKILL)
                except OSError:
                    pass
        self.pid = 0
        return took
