"""Idle keep-alive connections held by helper processes (for benches/idle_scan.py).

One process may not have more descriptors than RLIMIT_NOFILE's hard limit, which only
CAP_SYS_RESOURCE may raise (20,000 on the reference machine, whose root lacks it), so 100,000
connections are opened and held by several forked helpers of at most CHUNK each; each helper
has its own source address 127.0.0.2, .3, ... (one address has ~28k ephemeral ports to the
server's one). A helper resets its connections (SO_LINGER 0: no TIME_WAIT left) and exits when
told to, or as soon as its pipe to this process breaks: none outlives the bench.
"""

import multiprocessing
import resource
import signal

import guard_process as gp

CHUNK = 18000


def chunk_size():
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY:
        return CHUNK
    return max(1000, min(CHUNK, soft - 2000))


def _hold(conn, port, n, batch, deadline_s, source):
    """In the helper: open n connections, report, then answer "check" until "close" or EOF."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    gp.REG.sockets, gp.REG.servers = set(), []  # the parent's, not ours to close or stop
    held, fails, took = gp.open_idle(port, n, batch, gp.mono() + deadline_s,
                                     sources=[source] if source else None)
    conn.send((len(held), fails, took))
    while True:
        try:
            cmd = conn.recv()
        except EOFError:
            break
        if cmd != "check":
            break
        conn.send(gp.closed_by_server(held))
    gp.REG.reset_all()


class Holders:
    def __init__(self):
        self.helpers = []  # (process, parent end of its pipe)

    def open(self, port, n, batch, deadline_s):
        """Opens n connections, one helper after the other. Returns (held, failures, s)."""
        size = chunk_size()
        chunks = [min(size, n - k) for k in range(0, n, size)]
        ctx = multiprocessing.get_context("fork")
        held, fails, took = 0, {}, 0.0
        for k, m in enumerate(chunks):
            source = f"127.0.0.{2 + k}" if len(chunks) > 1 else None
            mine, theirs = ctx.Pipe()
            p = ctx.Process(target=_hold, args=(theirs, port, m, batch, deadline_s, source),
                            daemon=True)
            p.start()
            theirs.close()
            self.helpers.append((p, mine))
            if not mine.poll(deadline_s + 30):
                raise gp.BenchError(f"helper {p.pid} did not report its {m} connections")
            h, f, t = mine.recv()
            held, took = held + h, took + t
            for why, count in f.items():
                fails[why] = fails.get(why, 0) + count
        return held, fails, took

    def closed_by_server(self):
        """How many held connections the server has closed (or sent anything on)."""
        total = 0
        for _, conn in self.helpers:
            conn.send("check")
            total += conn.recv()
        return total

    def close(self):
        """Every helper resets its connections and exits; one that does not is killed (by the
        Process it is: a child this bench started)."""
        for _, conn in self.helpers:
            try:
                conn.send("close")
            except OSError:
                pass
        for p, conn in self.helpers:
            p.join(30)
            if p.is_alive():
                p.kill()
                p.join(5)
            conn.close()
        self.helpers = []
