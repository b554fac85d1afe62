"""The soak's checks (scripts/soak.py), each against one running server. What each one allows
for, and why, is in docs/QUALITY.md ("The soak")."""

import json
import os
import re
import time
from collections import Counter

import sglab
from sglab import ADDR

# Counters that only ever grow (src/table/layout.rs `Counters`, plus the generation and the
# scan count). Per-vhost `Accepted` is not one: a connection moves from the vhost it arrived on
# to its first request's vhost (src/ffi/hooks/request.rs).
MONOTONIC = ("Accepted", "Requests", "Closed", "ForceClosedGuard", "ForceClosedRescue", "Reported",
             "Reclaimed", "Untracked", "StoppedCgi", "StoppedChild", "RestartGeneration", "Scans",
             "CloseWaitSecondsCount")
BAD_LOG = ("exit signal", "still did not exit", "SG0004:")
# Rows the guard shut down: the kernel may have forgotten the socket (LAST_ACK, then gone)
# while the handler still runs and holds the slot.
SHUT_DOWN = ("force_closed", "rescued")


class Monotonic:
    """Fed one `?auto` sample at a time; notes any counter that went down."""

    def __init__(self):
        self.last = {}
        self.violations = []
        self.samples = 0

    def feed(self, auto):
        self.samples += 1
        for k in MONOTONIC:
            v = sglab.num(auto, k)
            if v < self.last.get(k, 0):
                self.violations.append(f"{k} went down from {self.last[k]} to {v}")
            self.last[k] = max(v, self.last.get(k, 0))


def fd_kinds(targets):
    """What a process's descriptors are, without pipe and socket inode numbers: Apache makes a
    new pipe of death at every restart (same descriptors, new pipe)."""
    return Counter(re.sub(r":\[\d+\]$", "", t) for t in targets.values())


def stable_fds(pid, tries=5):
    """The parent's descriptors, once two reads 0.5 s apart agree (a restart in progress opens
    and closes files); None if they never did."""
    for _ in range(tries):
        a = sglab.fd_targets(pid)
        time.sleep(0.5)
        if a == sglab.fd_targets(pid):
            return a
    return None


def shm_entries():
    return set(os.listdir("/dev/shm"))


def scan_log(path, offset):
    """New error-log lines since `offset`: (new offset, bad lines, message-id counts)."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            text = f.read().decode("utf-8", "replace")
            offset = f.tell()
    except OSError:
        return offset, [], Counter()
    bad = [line for line in text.splitlines() if any(b in line for b in BAD_LOG)]
    ids = Counter(re.findall(r"\b(SG\d{4}|AH\d{5}):", text))
    return offset, bad, ids


# --------------------------------------------------------------------------------------------
# Slots against the kernel
# --------------------------------------------------------------------------------------------

def slot_sample(server):
    """The status page's connections and the kernel's, read while the status connection is
    still open (it is left out of both). Returns (slots used, rows, shut-down rows, kernel):
    sets of (client, local port)."""
    ports = {server.port, server.on_port}
    c = sglab.http.client.HTTPConnection(ADDR, server.port, timeout=10)
    try:
        st, body = sglab.request(server.port, "/socket-status?json&all", conn=c)
        own = (f"{ADDR}:{c.sock.getsockname()[1]}", server.port)
        kernel = set(sglab.kernel_connections(ports)) - {own}
    finally:
        c.close()
    if st != 200:
        raise OSError(f"/socket-status?json answered {st}")
    data = json.loads(body)
    rows = {(r["client"], r["local_port"]): r["state"] for r in data["connections"]}
    used = data["server"]["slots_used"] - (rows.pop(own, None) is not None)
    shut = {k for k, state in rows.items() if state in SHUT_DOWN}
    return used, set(rows), shut, kernel


def compare_slots(server, samples=3, gap=1.0):
    """Slots used vs. the connections the kernel shows, `samples` times `gap` seconds apart.
    A connection in one view only, in every sample, is a mismatch; one that is so in some
    samples only was in flight (opened or closed between the two reads, or a killed child's
    slot not reclaimed yet). Rows the guard shut down may be gone from the kernel."""
    seen, only_slots, only_kernel = [], [], []
    for i in range(samples):
        if i:
            time.sleep(gap)
        used, rows, shut, kernel = slot_sample(server)
        only_slots.append(rows - kernel - shut)
        only_kernel.append(kernel - rows)
        seen.append({"used": used, "kernel": len(kernel), "shut_gone": len(shut - kernel),
                     "in_flight": len(only_slots[-1]) + len(only_kernel[-1])})
    return {
        "instant": seen,
        "stale_slots": sorted(set.intersection(*only_slots)),
        "untracked": sorted(set.intersection(*only_kernel)),
    }


# --------------------------------------------------------------------------------------------
# Counter identity
# --------------------------------------------------------------------------------------------

def residuals(auto):
    """(r, r_brief). By construction (src/table/shared.rs) every accepted connection is closed
    (release, incl. a child's exit), reclaimed, untracked (table full) or still holds a slot:
    r = Accepted - Closed - Reclaimed - Untracked - SlotsUsed is 0 whenever no connection is
    between two of those steps. The issue's form r_brief = Accepted - (Closed + ForceClosed +
    Rescued + Reclaimed + Open) counts a force-closed connection twice (it is closed or
    reclaimed later too) and leaves out the table-full ones."""
    n = lambda k: sglab.num(auto, k)  # noqa: E731
    r = n("Accepted") - n("Closed") - n("Reclaimed") - n("Untracked") - n("SlotsUsed")
    brief = n("Accepted") - (n("Closed") + n("ForceClosedGuard") + n("ForceClosedRescue")
                             + n("Reclaimed") + n("Open"))
    return r, brief


def identity(server, tries=10, gap=0.1):
    """Up to `tries` samples until one has r == 0: (held, every r seen, r_brief of the last)."""
    seen, brief = [], None
    for _ in range(tries):
        auto = server.try_auto(timeout=10)
        if auto is None:
            continue
        r, brief = residuals(auto)
        seen.append(r)
        if r == 0:
            return True, seen, brief
        time.sleep(gap)
    return False, seen, brief
