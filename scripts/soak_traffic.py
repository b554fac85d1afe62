"""The soak's load and chaos (scripts/soak.py): client threads and the thread that restarts,
kills and stops Apache's children. Everything is bounded: a fixed number of threads, each with
at most one connection (or one abandoned CGI request) at a time, paced, with timeouts."""

import json
import os
import random
import signal
import socket
import threading
import time
from collections import Counter

import sglab
from sglab import ADDR, mono

CLIENT_TIMEOUT = 10.0
GRACEFUL_EVERY = 30.0
KILL_EVERY = 20.0
STOP_EVERY = 45.0
STOP_FOR = 10.0          # longer than SocketGuardHungChildTimeout (5 s): the child is hung
CGI_EVERY = 2.0
CGI_SLEEP_WWW = 6        # the AutoClose Off vhost's CGIs run to the end
CGI_SLEEP_SHOP = 30      # the On vhost's are shut down and stopped (AbandonedTimeout 2s)


class Load:
    """Client threads against one server; `tally` counts outcomes by kind."""

    def __init__(self, server):
        self.server = server
        self.stop = threading.Event()
        self.tally = Counter()
        self.lock = threading.Lock()
        self.threads = []

    def count(self, key):
        with self.lock:
            self.tally[key] += 1

    def start(self):
        plan = [self.keepalive, self.keepalive, self.new_connections, self.new_connections,
                self.downloads, self.abandoned_cgis]
        for fn in plan:
            t = threading.Thread(target=self.loop, args=(fn,), daemon=True)
            t.start()
            self.threads.append(t)

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(CLIENT_TIMEOUT * 3)

    def loop(self, fn):
        while not self.stop.is_set():
            try:
                fn()
            except (OSError, sglab.http.client.HTTPException) as e:
                self.count(f"{fn.__name__} error {e.__class__.__name__}")
                self.stop.wait(0.2)

    def target(self):
        """Either vhost: www.lab.test (AutoClose Off) or shop.lab.test (On)."""
        if random.random() < 0.5:
            return self.server.port, "www.lab.test"
        return self.server.on_port, "shop.lab.test"

    def keepalive(self):
        port, host = self.target()
        c = sglab.http.client.HTTPConnection(ADDR, port, timeout=CLIENT_TIMEOUT)
        try:
            for i in range(20):
                path = ("/", "/index.html", "/missing", "/socket-status?auto")[i % 4]
                st, _ = sglab.request(port, path, host=host, conn=c, timeout=CLIENT_TIMEOUT)
                self.count(f"keepalive {st}")
                if self.stop.wait(0.05):
                    break
        finally:
            c.close()

    def new_connections(self):
        port, host = self.target()
        path = random.choice(("/", "/index.html", "/missing", "/socket-status?metrics"))
        st, _ = sglab.request(port, path, host=host, timeout=CLIENT_TIMEOUT)
        self.count(f"new-connection {st}")
        self.stop.wait(0.05)

    def downloads(self):
        """4 MiB, read at full speed, slowly, or given up half-way."""
        port, host = self.target()
        mode = random.choice(("full", "slow", "abandon"))
        with socket.create_connection((ADDR, port), timeout=CLIENT_TIMEOUT) as s:
            s.sendall(f"GET /big.bin HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            got = 0
            while chunk := s.recv(65536):
                got += len(chunk)
                if mode == "abandon" and got > 512 * 1024:
                    break
                if mode == "slow":
                    time.sleep(0.01)
        self.count(f"download {mode} {'complete' if got > 4 << 20 else 'partial'}")
        self.stop.wait(0.5)

    def abandoned_cgis(self):
        """A slow CGI whose client reads the first line and leaves (FIN): on the On vhost the
        guard shuts the socket down and stops the CGI; on the Off vhost the CGI runs out."""
        port, host = self.target()
        secs = CGI_SLEEP_SHOP if port == self.server.on_port else CGI_SLEEP_WWW
        with socket.create_connection((ADDR, port), timeout=CLIENT_TIMEOUT) as s:
            s.sendall(f"GET /cgi-bin/slow?SLEEP={secs} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
            first = s.recv(4096)
        self.count(f"abandoned-cgi {host} {'started' if first else 'no answer'}")
        self.stop.wait(CGI_EVERY)


class Chaos:
    """Graceful restart every 30 s, a random MPM child SIGKILLed every 20 s, one SIGSTOPped
    every 45 s and SIGCONTed 10 s later. Children are the parent's children (from the pid
    file) that the status page lists as child rows — the guard process and mod_cgid's daemon
    are not picked."""

    def __init__(self, server):
        self.server = server
        self.stop = threading.Event()
        self.events = Counter()
        self.stopped = 0                    # pid now SIGSTOPped, 0 if none
        self.hold = threading.Lock()        # held by a check: no SIGSTOP meanwhile
        self.thread = threading.Thread(target=self.run, daemon=True)

    def start(self):
        self.thread.start()

    def finish(self):
        self.stop.set()
        self.thread.join(30)
        self.resume()

    def run(self):
        every = {self.graceful: GRACEFUL_EVERY, self.kill: KILL_EVERY, self.sigstop: STOP_EVERY}
        due = {fn: mono() + secs for fn, secs in every.items()}
        resume_at = None
        while not self.stop.wait(0.2):
            now = mono()
            if resume_at and now >= resume_at:
                self.resume()
                resume_at = None
            for fn, at in due.items():
                if now < at:
                    continue
                due[fn] = at + every[fn]
                if fn() and fn == self.sigstop:
                    resume_at = now + STOP_FOR

    def parent(self):
        return self.server.running_pid()

    def mpm_children(self):
        parent = self.parent()
        a = self.server.try_auto(timeout=5) or {}
        rows = {int(line.split()[0]) for line in a.get("Child", [])}
        return [p for p in sglab.children_of(parent) if p in rows and p != self.stopped] if parent else []

    def serving_shop_cgi(self):
        try:
            st, body = sglab.request(self.server.port, "/socket-status?json&all", timeout=5)
            rows = json.loads(body)["connections"] if st == 200 else []
        except (OSError, sglab.http.client.HTTPException, ValueError):
            rows = []
        return {r["pid"] for r in rows if r["vhost"].startswith("shop.") and r["path"] == "/cgi-bin/slow"}

    def graceful(self):
        pid = self.parent()
        if pid:
            self.server.pid = pid
            self.server.signal(signal.SIGUSR1)
            self.events["graceful restarts"] += 1

    def kill(self):
        kids = self.mpm_children()
        if kids:
            send(random.choice(kids), signal.SIGKILL)
            self.events["children SIGKILLed"] += 1

    def sigstop(self):
        if not self.hold.acquire(blocking=False):
            self.events["SIGSTOPs put off by a check"] += 1
            return False
        try:
            kids = self.mpm_children()
            if not kids:
                return False
            # Preferably one that serves an abandoned CGI on the On vhost: once it is hung,
            # the guard process has a socket to rescue.
            busy = [p for p in kids if p in self.serving_shop_cgi()]
            self.stopped = random.choice(busy or kids)
            send(self.stopped, signal.SIGSTOP)
            self.events["children SIGSTOPped"] += 1
            return True
        finally:
            self.hold.release()

    def resume(self):
        if self.stopped:
            send(self.stopped, signal.SIGCONT)
            self.stopped = 0


def send(pid, sig):
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
