#!/usr/bin/env python3
"""Apache with mod_socket_guard under valgrind memcheck (`make memcheck`; python3 stdlib, root).

For each MPM in MEMCHECK_MPMS, Apache runs in single-process mode (`apache2 -X`) under
memcheck and serves a few hundred mixed requests: keep-alive connections, a new connection per
request, HEAD and 404s, a 4 MiB download, the status page in every format (HTML, ?auto, ?json,
?metrics, ?refresh=N, two refused queries, a POST), mod_status's /server-status with the
module's section, a request path full of characters that need escaping, connections that close
before sending a request, slow CGIs whose clients give up (the guard shuts them down on the
AutoClose On vhost: scan, act, SG0015), and on worker/event a burst of idle connections past
SocketGuardSlots 16 (the table-full path). Then SIGTERM, and memcheck's final leak check.

A graceful restart cannot be had in -X: the event and worker MPMs' signal thread consumes
SIGUSR1 and SIGHUP without restarting, and prefork does not catch SIGUSR1 at all (the process
dies of it, skipping every cleanup). So one more run (MEMCHECK_GRACEFUL_MPM, event by default)
starts Apache in the foreground (`-DFOREGROUND`, one child) under memcheck, where every forked
process — the parent, its children, the guard process, mod_cgid's daemon — is checked too:
traffic, an abandoned CGI stopped by SocketGuardAbandonedTimeout, `SIGUSR1` (graceful), more
traffic on the new generation, stop.

The report sorts every memcheck finding by whose code it is: an error or leak is the module's
when any frame of its stack is in mod_socket_guard.so (the module's Rust code and the Rust std
linked into it), else Apache's/APR's/glibc's. scripts/memcheck.supp hides only findings that
are glibc's, APR's or Apache's by design (each entry says why).

Exit status: 0 when the module has no invalid read/write/free, no use of uninitialised memory
and no definitely or indirectly lost block; 1 when it has; 2 when the run itself failed (Apache
did not start under valgrind, requests did not get their expected answers, a memcheck report is
missing). The findings are listed either way. Files: MEMCHECK_DIR (default build/memcheck/):
vg.<pid>.xml per process, error.log, valgrind.out, report.txt.

Environment: MEMCHECK_MPMS ("event worker prefork"), MEMCHECK_GRACEFUL_MPM (event; "" skips
that run), MEMCHECK_DIR, SOCKET_GUARD_SO, APACHE2, VALGRIND (valgrind).
"""

import os
import pwd
import re
import signal
import socket
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import sglab  # noqa: E402
from sglab import ADDR, mono, request, wait_for  # noqa: E402

WORK = Path(os.environ.get("MEMCHECK_DIR") or sglab.ROOT / "build" / "memcheck").resolve()
MPMS = os.environ.get("MEMCHECK_MPMS", "event worker prefork").split()
GRACEFUL_MPM = os.environ.get("MEMCHECK_GRACEFUL_MPM", "event")
SUPP = Path(__file__).resolve().parent / "memcheck.supp"
MODULE_OBJ = "mod_socket_guard.so"
# Kinds that fail the run when the module's code is on the stack.
FATAL_KINDS = ("InvalidRead", "InvalidWrite", "InvalidFree", "MismatchedFree", "InvalidJump",
               "InvalidMemPool", "Overlap", "SyscallParam", "UninitCondition", "UninitValue",
               "ClientCheck", "Leak_DefinitelyLost", "Leak_IndirectlyLost")
STATUS_QUERIES = ("", "?auto", "?json", "?metrics", "?refresh=2", "?auto&refresh=3",
                  "?page=2&limit=1", "?json&all", "?json&state=keepalive,handling&client=127.0.&vhost=x")
GUARD_LINES = """SocketGuardScanInterval 200ms
SocketGuardHungChildTimeout 5s
SocketGuardSlots {slots}
SocketGuardAutoClose Off
SocketGuardCloseWaitTimeout 500ms"""
SHOP_LINES = "SocketGuardCloseWaitTimeout 500ms\n    SocketGuardAbandonedTimeout 1s"


CGI_FORK = "mod_cgid's fork for a CGI"
STARTED = []   # every Run started, so that an error or Ctrl-C still stops its server


class RunFailed(Exception):
    """The run could not do what it should (not a memcheck finding)."""


def valgrind_cmd(xml_dir):
    return [os.environ.get("VALGRIND", "valgrind"), "--tool=memcheck", "--xml=yes",
            f"--xml-file={xml_dir}/vg.%p.xml", "--leak-check=full",
            "--show-leak-kinds=definite,indirect,possible",
            "--errors-for-leak-kinds=definite,indirect,possible", "--track-origins=yes",
            "--num-callers=50", "--vgdb=no",
            # Apache unloads modules at a restart: without this, frames in the old copy of
            # mod_socket_guard.so show as "?" and could not be attributed.
            "--keep-debuginfo=yes", f"--suppressions={SUPP}"]


# --------------------------------------------------------------------------------------------
# One Apache under memcheck
# --------------------------------------------------------------------------------------------

class Run:
    def __init__(self, name, mpm, mode_args, slots):
        self.name = name
        self.dir = WORK / name
        # One report per process; processes forked after the switch to www-data (mod_cgid's
        # per-request fork) create theirs as www-data.
        self.vg_dir = self.dir / "vg"
        self.vg_dir.mkdir(parents=True, exist_ok=True)
        for old in self.vg_dir.glob("vg.*.xml"):
            old.unlink()
        self.dir.chmod(0o755)
        os.chown(self.vg_dir, pwd.getpwnam("www-data").pw_uid, -1)
        port = sglab.free_port()
        self.apache = sglab.Apache(self.dir, mpm, port, sglab.free_port((port,)))
        self.mode_args = mode_args
        self.slots = slots
        self.proc = None
        self.roles = {}       # pid -> role, noted while the server runs
        self.problems = []    # requests that did not get the expected answer
        self.requests = 0
        self.observed = "(not read)"

    def start(self, shop_lines):
        # 32 threads: worker holds an idle keep-alive connection on a thread, and the
        # table-full burst needs more of them than SocketGuardSlots.
        self.apache.write(GUARD_LINES.format(slots=self.slots), shop_lines=shop_lines, threads=32)
        self.apache.errlog.unlink(missing_ok=True)
        self.apache.config_test()
        with open(self.dir / "valgrind.out", "w") as out:
            self.proc = subprocess.Popen(
                valgrind_cmd(self.vg_dir) + [sglab.APACHE2, *self.mode_args, "-f", str(self.apache.conf)],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        STARTED.append(self)
        if not wait_for(180, lambda: self.apache.try_auto(timeout=30) or self.proc.poll() is not None, 0.5):
            raise RunFailed(f"{self.name}: the status page did not answer within 180 s")
        if self.proc.poll() is not None:
            raise RunFailed(f"{self.name}: valgrind exited ({self.proc.returncode}); see {out.name}")
        self.apache.pid = self.proc.pid
        self.roles[self.proc.pid] = "apache2 -X" if "-X" in self.mode_args else "parent"
        self.note_roles()

    def note_roles(self):
        """Names the processes below the main one by their place in the tree (and the guard
        process by the pid the status page gives): the report says whose findings are whose."""
        a = self.apache.try_auto(timeout=30) or {}
        guard = sglab.num(a, "GuardProcessPid")
        for pid in sglab.descendants(self.proc.pid):
            st = sglab.proc_stat(pid)
            if pid == guard:
                self.roles[pid] = "guard process"
            elif st and st[1] == self.proc.pid and threads(pid) > 1:
                self.roles[pid] = "MPM child"   # a child just forked has one thread yet
            elif st and st[1] == self.proc.pid:
                self.roles.setdefault(pid, "single-threaded child: mod_cgid's daemon (or a prefork child)")
            else:
                self.roles.setdefault(pid, CGI_FORK)

    def expect(self, what, want, path, on=False, **kw):
        """One request (to the AutoClose On vhost's port when `on`); a status other than `want`
        is noted as a problem."""
        self.requests += 1
        port = self.apache.on_port if on else self.apache.port
        try:
            st, body = request(port, path, timeout=60, **kw)
        except (OSError, sglab.http.client.HTTPException) as e:
            st, body = f"error {e.__class__.__name__}", b""
        if st != want:
            self.problems.append(f"{what}: {kw.get('method', 'GET')} {path} answered {st}, expected {want}")
        return body

    def finish(self):
        """Notes the last roles and counters, then stops the server."""
        self.note_roles()
        observe(self)
        self.stop()

    def stop(self, timeout=240):
        """SIGTERM; waits for valgrind (the final leak check) and every process it traced.
        Does nothing once the server is gone."""
        if self.proc is None or self.proc.poll() is not None:
            return
        tree = sglab.descendants(self.proc.pid)
        self.apache.signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            self.problems.append(f"{self.name}: Apache under valgrind did not exit within {timeout} s")
        if not wait_for(60, lambda: not [p for p in tree if sglab.alive(p)], 0.5):
            for p in tree:
                if sglab.alive(p):
                    os.kill(p, signal.SIGKILL)
            self.problems.append(f"{self.name}: processes {tree} still there 60 s after the parent")


# --------------------------------------------------------------------------------------------
# Traffic
# --------------------------------------------------------------------------------------------

def keepalive_traffic(run, conns, per_conn):
    paths = [("/", None, "GET", 200), ("/", "shop.lab.test", "GET", 200), ("/", None, "HEAD", 200),
             ("/missing", None, "GET", 404), ("/socket-status?auto", None, "GET", 200)]
    for _ in range(conns):
        c = sglab.http.client.HTTPConnection(ADDR, run.apache.port, timeout=60)
        for i in range(per_conn):
            path, host, method, want = paths[i % len(paths)]
            run.expect("keep-alive", want, path, host=host, method=method, conn=c)
        c.close()


def new_connection_traffic(run, n):
    for i in range(n):
        if i % 4 == 0:
            run.expect("new connection", 200, "/", on=True, host="shop.lab.test")
        elif i % 4 == 1:
            run.expect("new connection", 404, f"/nothing-{i}")
        elif i % 4 == 2:
            run.expect("new connection", 200, "/index.html", method="HEAD")
        else:
            run.expect("new connection", 200, "/")
    run.expect("download", 200, "/big.bin")


def status_pages(run, rounds):
    for _ in range(rounds):
        for q in STATUS_QUERIES:
            run.expect("status page", 200, f"/socket-status{q}")
        run.expect("status page", 200, "/socket-status?json", method="HEAD")
        run.expect("status page, refused query", 400, "/socket-status?auto&json")
        run.expect("status page, refused query", 400, "/socket-status?refresh=x")
        run.expect("status page, refused query", 400, "/socket-status?limit=0")
        run.expect("status page, POST", 405, "/socket-status", method="POST", body=b"x=1")
        run.expect("mod_status", 200, "/server-status")
        run.expect("mod_status", 200, "/server-status?auto")


def escaping_paths(run):
    """A keep-alive connection whose last request path needs escaping, open while every status
    format renders it."""
    c = sglab.http.client.HTTPConnection(ADDR, run.apache.port, timeout=60)
    run.expect("escaping", 404, "/%3Cscript%3E%22'&amp;\\x%C3%A9%00?q=<b>", conn=c)
    status_pages(run, 1)
    c.close()


def silent_connections(run, n):
    """Connections that close before a request, or in the middle of one."""
    for i in range(n):
        with socket.create_connection((ADDR, run.apache.port), timeout=30) as s:
            if i % 2:
                s.sendall(b"GET / HTTP/1.1\r\nHost: www")
        run.requests += 1


def abandon_cgis(run, n, on):
    """`n` clients ask the slow CGI (6 s), read its first line and close. On the AutoClose On
    vhost the guard shuts each socket down after 500 ms."""
    port = run.apache.on_port if on else run.apache.port
    socks = []
    for _ in range(n):
        s = socket.create_connection((ADDR, port), timeout=60)
        s.sendall(b"GET /cgi-bin/slow?SLEEP=6 HTTP/1.1\r\nHost: x\r\n\r\n")
        socks.append(s)
    for s in socks:
        s.recv(4096)
        s.close()
        run.requests += 1


def wait_counter(run, key, at_least, timeout=90):
    got = wait_for(timeout, lambda: sglab.num(run.apache.try_auto(timeout=30) or {}, key) >= at_least, 0.5)
    if not got:
        run.problems.append(f"{run.name}: {key} did not reach {at_least} within {timeout} s")


def table_full(run, n):
    """`n` > SocketGuardSlots idle keep-alive connections at once: the rest are served untracked."""
    conns = []
    for _ in range(n):
        c = sglab.http.client.HTTPConnection(ADDR, run.apache.port, timeout=60)
        run.expect("table full", 200, "/", conn=c)
        conns.append(c)
    if sglab.num(run.apache.try_auto(timeout=30) or {}, "Untracked") == 0:
        run.problems.append(f"{run.name}: {n} connections on {run.slots} slots left Untracked at 0")
    for c in conns:
        c.close()


def single_process_run(mpm):
    # -X alone defines DEBUG, not ONE_PROCESS, and the module then forks its guard process
    # anyway (see docs/QUALITY.md); -DONE_PROCESS gives the single process the module expects.
    run = Run(f"X-{mpm}", mpm, ["-X", "-DONE_PROCESS"], slots=16)
    threaded = mpm != "prefork"
    # Under valgrind the CGI cannot be signalled (pidfd_open is ENOSYS there), and prefork
    # then ends the child — here the whole server — so prefork runs without AbandonedTimeout.
    run.start(shop_lines=SHOP_LINES if threaded else "SocketGuardCloseWaitTimeout 500ms")
    keepalive_traffic(run, 10, 10)
    new_connection_traffic(run, 100)
    status_pages(run, 4)
    escaping_paths(run)
    silent_connections(run, 10)
    abandon_cgis(run, 3 if threaded else 1, on=True)
    if threaded:
        abandon_cgis(run, 1, on=False)
        status_pages(run, 1)    # a connection in CLOSE_WAIT on the Off vhost, a force-closed one
    wait_counter(run, "ForceClosedGuard", 3 if threaded else 1)
    # The AbandonedTimeout step runs up to the signal here, but no signal can be delivered
    # (no pidfd_open under valgrind), so StoppedCgi rightly stays 0: nothing was stopped.
    if threaded:
        table_full(run, 20)
    wait_for(20, lambda: sglab.num(run.apache.try_auto(timeout=30) or {}, "SlotsUsed") <= 1, 0.5)
    run.finish()
    return run


OBSERVED = ("Accepted", "Closed", "Untracked", "ForceClosedGuard", "StoppedCgi", "StoppedChild",
            "Reclaimed", "RestartGeneration")


def observe(run):
    """The counters at the end of a run, and the module's action lines in the error log."""
    a = run.apache.try_auto(timeout=30) or {}
    run.observed = " ".join(f"{k}={a.get(k, '?')}" for k in OBSERVED) + f" Child rows={len(a.get('Child', []))}"


def threads(pid):
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    return int(re.search(r"^Threads:\s+(\d+)", status, re.M).group(1))


def new_mpm_child(run, before):
    """MPM children forked since `before` (the pids seen before the restart), from the process
    tree: under valgrind the status page has no child rows (see graceful_run)."""
    run.note_roles()
    return [p for p, r in run.roles.items() if r == "MPM child" and p not in before and sglab.alive(p)]


def graceful_run(mpm):
    run = Run(f"graceful-{mpm}", mpm, ["-DFOREGROUND"], slots=256)
    run.start(shop_lines=SHOP_LINES)
    keepalive_traffic(run, 4, 10)
    new_connection_traffic(run, 40)
    status_pages(run, 1)
    # valgrind 3.19 answers pidfd_open with ENOSYS, and the guard process then takes every
    # child for dead and frees its row (docs/QUALITY.md): nothing the guard does is waited for.
    abandon_cgis(run, 1, on=True)
    gen = sglab.num(run.apache.try_auto(timeout=30) or {}, "RestartGeneration")
    run.note_roles()
    before = set(run.roles)
    run.apache.signal(signal.SIGUSR1)
    wait_counter(run, "RestartGeneration", gen + 1, timeout=120)
    if not wait_for(120, lambda: new_mpm_child(run, before), 1.0):
        run.problems.append(f"{run.name}: no new MPM child within 120 s of the graceful restart")
    run.note_roles()
    keepalive_traffic(run, 4, 10)
    new_connection_traffic(run, 40)
    status_pages(run, 1)
    run.finish()
    return run


# --------------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------------

def parse_report(path):
    """One vg.<pid>.xml: (pid, complete, [error dicts]). A process killed before memcheck's
    final leak check leaves a truncated file: its errors are read one block at a time."""
    text = path.read_text(errors="replace")
    pid = int(re.search(r"<pid>(\d+)</pid>", text).group(1)) if "<pid>" in text else 0
    errors = []
    for block in re.findall(r"<error>.*?</error>", text, re.S):
        e = ET.fromstring(block)
        frames = [(f.findtext("obj") or "", f.findtext("fn") or "?") for f in e.iter("frame")]
        leaked = e.findtext("xwhat/leakedbytes")
        errors.append({
            "kind": e.findtext("kind"),
            "what": e.findtext("what") or e.findtext("xwhat/text") or "",
            "bytes": int(leaked) if leaked else 0,
            "module": any(obj.endswith(MODULE_OBJ) for obj, _ in frames),
            "frames": frames,
        })
    return pid, "</valgrindoutput>" in text, errors


def summarize(run, lines, totals):
    """Appends the run's findings to `lines` (each distinct stack of the module's once, with
    the pids it came from) and adds them to `totals`; returns how many fatal module findings
    the run has."""
    lines.append(f"== {run.name}: {run.requests} requests; {len(run.problems)} unexpected answers")
    logged = log_ids(run.apache.errlog, ("SG0015", "SG0021", "SG0022", "SG0005", "SG0026"))
    lines.append(f"   at the end: {run.observed}; error log: {logged}")
    lines += [f"   ! {p}" for p in run.problems]
    execs, stacks = 0, {}
    for path in sorted(run.vg_dir.glob("vg.*.xml")):
        pid, complete, errors = parse_report(path)
        if not complete and not errors and run.roles.get(pid, CGI_FORK) == CGI_FORK:
            execs += 1   # a fork that exec'd a CGI: memcheck follows no exec
            continue
        role = run.roles.get(pid, "a process not seen while the server ran")
        mod = [e for e in errors if e["module"]]
        rest = [e for e in errors if not e["module"]]
        lines.append(f"   pid {pid} ({role}){'' if complete else ' - report incomplete (killed before the final leak check)'}: "
                     f"module {counts(mod)}; Apache/APR/glibc {counts(rest)}")
        for e in errors:
            totals[(e["module"], e["kind"])] += e["bytes"] or 1
        for e in mod:
            stacks.setdefault((e["kind"], tuple(e["frames"][:14])), []).append(pid)
    if execs:
        lines.append(f"   {execs} forks that exec'd a CGI (not followed): no findings")
    fatal = 0
    for (kind, frames), pids in stacks.items():
        fatal += len(pids) * (kind in FATAL_KINDS)
        lines.append(f"   {'FAIL' if kind in FATAL_KINDS else 'note'} {kind} x{len(pids)} in pid "
                     f"{', '.join(map(str, sorted(set(pids))))}:")
        lines += [f"          {fn}  [{Path(obj).name}]" for obj, fn in frames]
    return fatal


def log_ids(path, ids):
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "unreadable"
    return " ".join(f"{i} x{text.count(i + ':')}" for i in ids)


def counts(errors):
    if not errors:
        return "none"
    by = {}
    for e in errors:
        n, b = by.get(e["kind"], (0, 0))
        by[e["kind"]] = (n + 1, b + e["bytes"])
    return ", ".join(f"{k} x{n}" + (f" ({b} bytes)" if b else "") for k, (n, b) in sorted(by.items()))


def main():
    if os.getuid() != 0:
        print("memcheck: needs root (Apache runs as www-data; the -X process drops to it)", file=sys.stderr)
        return 2
    WORK.mkdir(parents=True, exist_ok=True)
    runs, failed = [], []
    t0 = mono()
    plan = [(single_process_run, m) for m in MPMS] + ([(graceful_run, GRACEFUL_MPM)] if GRACEFUL_MPM else [])
    for fn, mpm in plan:
        print(f"memcheck: {fn.__name__} {mpm} ...", flush=True)
        try:
            runs.append(fn(mpm))
        except (RunFailed, OSError) as e:
            failed.append(str(e))
        finally:
            for run in STARTED:
                run.stop()
    lines = [f"memcheck: valgrind {subprocess.run(['valgrind', '--version'], capture_output=True, text=True).stdout.strip()}, "
             f"{len(runs)} runs in {mono() - t0:.0f} s"]
    totals = Counter()
    fatal = sum(summarize(r, lines, totals) for r in runs)
    for module, who in ((True, "module"), (False, "Apache/APR/glibc")):
        found = {k: v for (m, k), v in totals.items() if m == module}
        lines.append(f"total, {who}: " + (", ".join(f"{k} {v}{' bytes' if k.startswith('Leak') else ''}"
                                                    for k, v in sorted(found.items())) or "nothing"))
    lines += [f"! run failed: {f}" for f in failed]
    problems = failed + [p for r in runs for p in r.problems]
    verdict = ("FAIL: the module has memory errors or leaks (listed above)" if fatal else
               "the run did not complete as intended" if problems else
               "PASS: no invalid access, uninitialised use or lost block in the module's code")
    lines.append(f"memcheck: {verdict}")
    sglab.write_report(WORK / "report.txt", lines)
    return 1 if fatal else 2 if problems else 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(130))
    sys.exit(main())
