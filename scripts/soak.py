#!/usr/bin/env python3
"""Soak: mod_socket_guard under mixed traffic and a hostile process life, on every MPM in turn
(`make soak`; python3 standard library; root).

For each MPM in SOAK_MPMS a generated server (two vhosts: www.lab.test AutoClose Off,
shop.lab.test AutoClose On 3s with AbandonedTimeout 2s; ScanInterval 500ms,
HungChildTimeout 5s, GracefulDeadline 10s) gets, for SOAK_MINUTES / len(SOAK_MPMS) minutes:
- traffic (scripts/soak_traffic.py): two keep-alive clients (20 requests a connection), two
  clients opening a new connection per request, 4 MiB downloads (read fast, slowly, or given
  up half-way), and a slow CGI every 2 s whose client reads the first line and leaves;
- chaos: a graceful restart every 30 s, a random MPM child SIGKILLed every 20 s, one
  SIGSTOPped every 45 s and SIGCONTed 10 s later (children: the pid file's parent's children
  that the status page lists as child rows; never anything by name);
- a check every minute and at the end (scripts/soak_checks.py): no "exit signal", "still did
  not exit" or SG0004 in the error log; slots used equal the connections the kernel shows on
  the server's ports (a connection in one view only in three samples 1 s apart fails);
  the parent's descriptors and /dev/shm unchanged; counters never go down (sampled every 5 s);
  Accepted = Closed + Reclaimed + Untracked + SlotsUsed at some instant of ten 100 ms apart
  (docs/QUALITY.md explains each tolerance and why the issue's form of the identity cannot
  hold). The end check runs with the load stopped and allows nothing in flight.
Then Apache is stopped (SIGTERM) and nothing of its process tree may be left.

/dev/shm: run as root, the soak re-runs itself in a private mount namespace with its own
empty /dev/shm (unshare), so other servers on the machine cannot change what it compares;
SOAK_PRIVATE_SHM=0 compares the machine's /dev/shm instead.

Exit status 0 when every check held, 1 when one failed (listed), 2 when it could not run.
Everything it started is stopped on exit, also on failure or Ctrl-C. Files: SOAK_DIR
(default build/soak/): <mpm>/ (config, error.log), report.txt.

Environment: SOAK_MINUTES (30, the whole run), SOAK_MPMS ("prefork worker event"), SOAK_DIR,
SOAK_PRIVATE_SHM (1), SOCKET_GUARD_SO, APACHE2.
"""

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import sglab  # noqa: E402
import soak_checks as checks  # noqa: E402
from sglab import mono, wait_for  # noqa: E402
from soak_traffic import STOP_FOR, Chaos, Load  # noqa: E402

MINUTES = float(os.environ.get("SOAK_MINUTES", "30"))
MPMS = os.environ.get("SOAK_MPMS", "prefork worker event").split()
WORK = Path(os.environ.get("SOAK_DIR") or sglab.ROOT / "build" / "soak").resolve()
CHECK_EVERY = 60.0
SAMPLE_EVERY = 5.0
GUARD_LINES = """SocketGuardScanInterval 500ms
SocketGuardHungChildTimeout 5s
SocketGuardGracefulDeadline 10s
SocketGuardRescue On
SocketGuardSlots 2048
SocketGuardAutoClose Off
SocketGuardCloseWaitTimeout 2s"""
# 3 s: a child serving an abandoned CGI here is often SIGSTOPped before its own guard acts.
SHOP_LINES = "SocketGuardCloseWaitTimeout 3s\n    SocketGuardAbandonedTimeout 2s"
LOG_IDS = ("SG0006", "SG0015", "SG0021", "SG0022", "SG0024", "SG0026", "SG0027")


class MpmSoak:
    def __init__(self, mpm, seconds):
        self.mpm = mpm
        self.seconds = seconds
        port = sglab.free_port()
        self.server = sglab.Apache(WORK / mpm, mpm, port, sglab.free_port((port,)))
        self.load = Load(self.server)
        self.chaos = Chaos(self.server)
        self.mono = checks.Monotonic()
        self.sampling = threading.Event()
        self.failures = []
        self.checks = []
        self.log_offset = 0
        self.log_ids = Counter()
        self.base_fds = {}
        self.base_shm = set()
        self.end = {}

    # ---- the run

    def run(self):
        self.server.write(GUARD_LINES, shop_lines=SHOP_LINES)
        self.server.errlog.unlink(missing_ok=True)
        self.base_shm = checks.shm_entries()
        self.server.start()
        if not wait_for(20, lambda: sglab.num(self.server.try_auto() or {}, "GuardProcessPid")):
            raise OSError(f"{self.mpm}: the guard process did not show within 20 s")
        self.base_fds = checks.stable_fds(self.server.pid) or {}
        sampler = threading.Thread(target=self.sample, daemon=True)
        try:
            self.load.start()
            self.chaos.start()
            sampler.start()
            t0 = mono()
            while mono() - t0 < self.seconds:
                time.sleep(min(CHECK_EVERY, self.seconds - (mono() - t0)))
                if mono() - t0 < self.seconds - 5:
                    self.check(f"t={mono() - t0:.0f}s")
        finally:
            self.load.finish()
            self.chaos.finish()
            self.sampling.set()
            sampler.join(15)
        self.finish()

    def sample(self):
        while not self.sampling.wait(SAMPLE_EVERY):
            auto = self.server.try_auto(timeout=10)
            if auto:
                self.mono.feed(auto)

    def finish(self):
        """Load stopped: wait until nothing is in flight, check strictly, stop Apache."""
        quiet = wait_for(60, self.quiet, 1.0)
        self.check("end", strict=True)
        if not quiet:
            self.failures.append("end: connections still open 60 s after the load stopped")
        self.end["auto"] = self.server.try_auto() or {}
        tree = sglab.descendants(self.server.pid)
        took = self.server.stop(timeout=30)
        self.end["stop"] = took
        if took is None:
            self.failures.append("stop: the parent did not exit within 30 s of SIGTERM")
        self.scan_log("after stop")
        left = [p for p in tree if sglab.alive(p)]
        if left:
            self.failures.append(f"stop: processes of the server still there: {left}")
        if checks.shm_entries() != self.base_shm:
            self.failures.append(f"after stop: /dev/shm {sorted(checks.shm_entries() ^ self.base_shm)}")

    def quiet(self):
        try:
            used, rows, _, kernel = checks.slot_sample(self.server)
        except (OSError, sglab.http.client.HTTPException, ValueError):
            return False
        return used == 0 and not rows and not kernel

    # ---- the checks

    def check(self, label, strict=False):
        with self.chaos.hold:
            wait_for(STOP_FOR + 5, lambda: not self.chaos.stopped, 0.2)
            result = {"label": label, "failures": []}
            fail = result["failures"].append
            self.scan_log(label, fail)
            self.check_slots(result, fail, strict)
            self.check_identity(result, fail, strict)
            self.check_fds(result, fail)
            if checks.shm_entries() != self.base_shm:
                fail(f"/dev/shm changed: {sorted(checks.shm_entries() ^ self.base_shm)}")
            for v in self.mono.violations:
                fail(f"counter: {v}")
            self.mono.violations.clear()
        self.checks.append(result)
        self.failures += [f"{label}: {f}" for f in result["failures"]]

    def scan_log(self, label, fail=None):
        self.log_offset, bad, ids = checks.scan_log(self.server.errlog, self.log_offset)
        self.log_ids += ids
        for line in bad:
            (fail or (lambda m: self.failures.append(f"{label}: {m}")))(f"error log: {line}")

    def check_slots(self, result, fail, strict):
        try:
            s = checks.compare_slots(self.server)
        except (OSError, sglab.http.client.HTTPException, ValueError) as e:
            fail(f"slots vs kernel: status page unreadable ({e})")
            return
        result["slots"] = s
        if s["stale_slots"]:
            fail(f"slots with no kernel socket in all 3 samples: {s['stale_slots'][:5]}")
        if s["untracked"]:
            fail(f"kernel connections with no slot in all 3 samples: {s['untracked'][:5]}")
        if strict and any(x["in_flight"] or x["used"] != x["kernel"] for x in s["instant"]):
            fail(f"at rest, slots used != kernel connections: {s['instant']}")

    def check_identity(self, result, fail, strict):
        held, seen, brief = checks.identity(self.server)
        result["identity"] = {"held": held, "r": seen, "r_brief": brief}
        if not held or (strict and seen[0] != 0):
            fail(f"Accepted != Closed + Reclaimed + Untracked + SlotsUsed in {len(seen)} samples: r = {seen}")

    def check_fds(self, result, fail):
        pid = self.server.running_pid()
        now = checks.stable_fds(pid) if pid else None
        result["fds"] = len(now) if now is not None else None
        if now is None:
            fail("parent descriptors: no two equal reads (or no parent)")
        elif checks.fd_kinds(now) != checks.fd_kinds(self.base_fds):
            added = {k: v for k, v in now.items() if self.base_fds.get(k) != v}
            gone = {k: v for k, v in self.base_fds.items() if now.get(k) != v}
            fail(f"parent descriptors {len(self.base_fds)} -> {len(now)}: new {added}, gone {gone}")


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------

def describe(s):
    """The figures of one MPM's soak as report lines."""
    auto = s.end.get("auto", {})
    lines = [f"== {s.mpm}: {s.seconds / 60:.1f} min of load, {len(s.checks)} checks; "
             f"{'PASS' if not s.failures else 'FAIL'}"]
    lines.append("   traffic: " + ", ".join(f"{k} {v}" for k, v in sorted(s.load.tally.items())))
    lines.append("   chaos: " + ", ".join(f"{k} {v}" for k, v in sorted(s.chaos.events.items())))
    for c in s.checks:
        sl = c.get("slots", {})
        inst = " ".join(f"{x['used']}/{x['kernel']}/{x['shut_gone']}/{x['in_flight']}" for x in sl.get("instant", []))
        idt = c.get("identity", {})
        lines.append(f"   check {c['label']:>7}: slots/kernel/shut-gone/in-flight {inst or '-'}; "
                     f"r {idt.get('r')}; parent fds {c.get('fds')}; {len(c['failures'])} failures")
    r, brief = checks.residuals(auto) if auto else (None, None)
    lines.append("   end counters: " + " ".join(f"{k}={auto.get(k, '?')}" for k in (
        "Accepted", "Closed", "Reclaimed", "Untracked", "SlotsUsed", "Open", "ForceClosedGuard",
        "ForceClosedRescue", "StoppedCgi", "StoppedChild", "RestartGeneration")))
    lines.append(f"   identity at rest: r={r}; the issue's form Accepted-(Closed+ForceClosed+Rescued+"
                 f"Reclaimed+Open)={brief}")
    lines.append(f"   counters sampled {s.mono.samples} times; parent fds {len(s.base_fds)} at start; "
                 f"/dev/shm entries {len(s.base_shm)} at start")
    lines.append("   error log: " + " ".join(f"{i} x{s.log_ids.get(i, 0)}" for i in LOG_IDS))
    took = s.end.get("stop")
    lines.append(f"   stop: {'parent exited in %.1f s' % took if took is not None else 'parent had to be killed'}")
    lines += [f"   ! {f}" for f in s.failures]
    return lines


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------

def private_shm():
    """Re-runs this script in a mount namespace with an empty /dev/shm of its own. Returns
    only when that is not wanted or not possible (then the machine's /dev/shm is compared)."""
    if os.environ.get("SOAK_PRIVATE_SHM", "1") != "1" or os.environ.get("SOAK_IN_NS"):
        if os.environ.get("SOAK_IN_NS"):
            subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=1777,size=64m", "soak-shm", "/dev/shm"], check=True)
        return
    if shutil.which("unshare") and subprocess.run(["unshare", "--mount", "true"]).returncode == 0:
        env = dict(os.environ, SOAK_IN_NS="1")
        os.execvpe("unshare", ["unshare", "--mount", "--propagation", "private", "--",
                               sys.executable, __file__], env)


def main():
    if os.getuid() != 0:
        print("soak: needs root (it signals Apache's children, which run as www-data)", file=sys.stderr)
        return 2
    private_shm()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(130))
    WORK.mkdir(parents=True, exist_ok=True)
    WORK.chmod(0o755)
    per_mpm = MINUTES * 60 / max(len(MPMS), 1)
    done, broken = [], []
    for mpm in MPMS:
        print(f"soak: {mpm} for {per_mpm / 60:.1f} min ...", flush=True)
        s = MpmSoak(mpm, per_mpm)
        try:
            s.run()
            done.append(s)
        except (OSError, ValueError) as e:
            broken.append(f"{mpm}: {e}")
        finally:
            s.server.stop(timeout=30)
        print(f"soak: {mpm}: {len(s.failures)} failed checks", flush=True)
    lines = [f"soak: {MINUTES:g} min over {' '.join(MPMS)}; /dev/shm "
             f"{'private to the soak' if os.environ.get('SOAK_IN_NS') else 'of the machine'}"]
    for s in done:
        lines += describe(s)
    lines += [f"! could not run: {b}" for b in broken]
    failed = sum(len(s.failures) for s in done)
    lines.append(f"soak: {'FAIL' if failed else 'could not run' if broken else 'PASS'} "
                 f"({failed} failed checks)")
    sglab.write_report(WORK / "report.txt", lines)
    return 1 if failed else 2 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
