#!/usr/bin/env python3
"""`make bench`: every measure issue 10 names, in one run, into one table.

Runs the parts one after the other (each is its own script and can run alone):

  idle          benches/idle_scan.py: one detection pass at IDLE idle keep-alive connections,
                the status page at STATUS_CONNS, the shared memory per slot (SG0001)
  series        benches/metrics_series.py: Prometheus series per server (docs/SCALING.md)
  cpu           benches/cpu_per_request.py: CPU per request with ÷ without, every MPM
  instructions  benches/instructions.sh, new connections then keep-alive (callgrind)

The idle part goes first: the others leave tens of thousands of TIME_WAIT sockets for a
minute, and the kernel's dump walks those too. Then it writes build/bench/results.md (the
table: measure, value, target, met?), build/bench/results.svg, build/bench/results.json
(everything measured), and replaces docs/PERFORMANCE.md's summary section with this run's.

Environment: PARTS (all four, in the order above), UPDATE_DOCS (1; 0 leaves docs/ alone),
INSTR_RUNS (3 runs of instructions.sh per path), and each part's own variables (ROUNDS,
REQUESTS, CONC, BENCH_MPMS, IDLE, STATUS_CONNS, SCAN_SAMPLES, REPS, OPEN_BATCH, VHOSTS, N1,
N2), passed through. Run as root.
"""

import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import bench_report

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
OUT = os.path.join(ROOT, "build", "bench")
DOC = os.path.join(ROOT, "docs", "PERFORMANCE.md")
SCRIPTS = {"idle": ("idle_scan.py", "idle.json"), "series": ("metrics_series.py", "series.json"),
           "cpu": ("cpu_per_request.py", "cpu.json")}
ALL_PARTS = ("idle", "series", "cpu", "instructions")


def note(msg):
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def run_script(part):
    script, out = SCRIPTS[part]
    path = os.path.join(OUT, out)
    if os.path.exists(path):
        os.remove(path)  # never report an older run's numbers
    r = subprocess.run([os.path.join(HERE, script)], stdout=subprocess.DEVNULL)
    if r.returncode != 0:
        raise RuntimeError(f"{script} exited with {r.returncode}")
    with open(path) as f:
        return json.load(f)


def run_instructions():
    """INSTR_RUNS (3) runs of instructions.sh per path: the counts are exact, but event's timers
    add work that depends on how long valgrind takes, so a run differs by a few hundred."""
    runs = int(os.environ.get("INSTR_RUNS", "3"))
    out = {}
    for kind, keepalive in (("newconn", "0"), ("keepalive", "1")):
        out[kind] = {"runs": [instructions_once(keepalive) for _ in range(runs)]}
    return out


def instructions_once(keepalive):
    with tempfile.NamedTemporaryFile("r", dir=OUT, suffix=".txt") as f:
        r = subprocess.run([os.path.join(HERE, "instructions.sh")],
                           env=dict(os.environ, KEEPALIVE=keepalive, INSTR_RESULT=f.name))
        if r.returncode != 0:
            raise RuntimeError(f"instructions.sh (KEEPALIVE={keepalive}) exited with "
                               f"{r.returncode}")
        return {k: int(v) for k, v in (kv.split("=") for kv in f.read().split())}


def git(*args):
    r = subprocess.run(["git", "-C", ROOT, *args], capture_output=True, text=True)
    return r.stdout.strip()


def loadavg():
    with open("/proc/loadavg") as f:
        return ", ".join(f.read().split()[:3])


def machine():
    model = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30
    return f"{os.cpu_count()} CPUs ({model}), {mem:.0f} GiB RAM"


def apache_version():
    r = subprocess.run([os.environ.get("APACHE2", "/usr/sbin/apache2"), "-v"],
                       capture_output=True, text=True)
    for line in r.stdout.splitlines():
        if line.startswith("Server version:"):
            return line.split(":", 1)[1].strip()
    return "Apache"


def settings(results):
    """What this run measured with, as the parts report it."""
    out = []
    if results.get("cpu"):
        c = results["cpu"]
        out.append(f"{c['rounds']} rounds of {c['requests']:,} requests, ab -c {c['conc']}")
    if results.get("idle"):
        i = results["idle"]
        conns = ", ".join(f"{l['conns']:,}" for l in i["levels"])
        out.append(f"idle levels {conns}, {i['scan_samples']} scans each, {i['reps']} "
                   "fetches per format")
    if results.get("series"):
        out.append(f"vhosts {', '.join(str(r['vhosts']) for r in results['series']['runs'])}")
    return "; ".join(out) or "no part ran"


def run_parts(parts):
    results, errors = {}, {}
    for part in parts:
        note(f"part {part}")
        try:
            results[part] = run_instructions() if part == "instructions" else run_script(part)
        except (RuntimeError, OSError, ValueError) as e:
            errors[part] = str(e)
            note(f"part {part} failed: {e}")
    results["errors"] = errors
    for part in ALL_PARTS:
        if part not in parts:
            errors.setdefault(part, "not in PARTS")
    return results


def write(path, text):
    with open(path, "w") as f:
        f.write(text)


def main():
    parts = os.environ.get("PARTS", " ".join(ALL_PARTS)).replace(",", " ").split()
    if not parts or any(p not in ALL_PARTS for p in parts):
        note(f"PARTS must name some of {', '.join(ALL_PARTS)}")
        return 2
    os.makedirs(OUT, exist_ok=True)
    t0, load0 = time.monotonic(), loadavg()
    date = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    results = run_parts(parts)
    results["meta"] = {
        "date": date, "commit": git("rev-parse", "--short", "HEAD"),
        "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        "machine": machine(), "kernel": platform.release(), "apache": apache_version(),
        "load_before": load0, "load_after": loadavg(), "run_s": time.monotonic() - t0}
    results["meta"]["settings"] = settings(results)
    rows = bench_report.all_rows(results)
    write(os.path.join(OUT, "results.json"), json.dumps(results, indent=1))
    write(os.path.join(OUT, "results.md"), bench_report.markdown(results, rows))
    write(os.path.join(OUT, "results.svg"), bench_report.svg(rows))
    if os.environ.get("UPDATE_DOCS", "1") == "1":
        with open(DOC) as f:
            doc = f.read()
        write(DOC, bench_report.replace_summary(doc, bench_report.summary(results, rows)))
        note("docs/PERFORMANCE.md's summary rewritten")
    print(bench_report.table(rows))
    note(f"build/bench/results.md, results.svg; {results['meta']['run_s'] / 60:.1f} min")
    return 1 if any(p in results["errors"] for p in parts) else 0


if __name__ == "__main__":
    sys.exit(main())
