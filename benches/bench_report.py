"""The `make bench` report: from the parts' results to the table (measure, value, target,
met?), build/bench/results.md, the SVG chart and docs/PERFORMANCE.md's summary section.

Pure: no I/O, no clock; benches/bench.py gathers the results and writes the files, and
benches/test_bench_report.py tests this module (`make test-bench`).

`results` is a dict: "meta" (date, commit, machine, load, run time), and per part either its
JSON (see cpu_per_request.py, idle_scan.py, metrics_series.py; "instructions" is
{"newconn": {"runs": [{"without": N, "with": N}, ...]}, "keepalive": {...}}) or None, with "errors"
{part: why} for the parts that did not run.
"""

import math
import statistics
from xml.sax.saxutils import escape

# The targets (issue 10).
RATIO_TARGET = {"keepalive": 1.005, "newconn": 1.010}
INSTR_TARGET_PCT = {"keepalive": 0.5, "newconn": 1.0}
SCAN_TARGET_US = 100
STATUS_TARGET_MS = 50
SLOT_TARGET_BYTES = 256
# A CPU verdict needs at least this confidence (5 rounds give 94%).
MIN_COVERAGE = 0.9
TRAFFIC = {"keepalive": "keep-alive request", "newconn": "new connection per request"}
SHORT = {"keepalive": "keep-alive", "newconn": "new connection"}
INSTR_WHAT = {"newconn": "per new connection", "keepalive": "per keep-alive request"}
SUMMARY_START = "<!-- make bench summary: start (benches/bench.py writes it; do not edit) -->"
SUMMARY_END = "<!-- make bench summary: end -->"
YES, NO, NONE = "yes", "**no**", "—"


def row(measure, value, target=NONE, met=NONE, chart=None):
    """A table row; `chart` (from `bar_of`) puts it on the SVG too."""
    return {"measure": measure, "value": value, "target": target, "met": met, "chart": chart}


def bar_of(panel, label, value, target, text, lo=None, hi=None):
    """A bar of the SVG: `value` in % on `panel`, a tick at `target`, a whisker from lo to hi
    (None: no whisker), `text` written beside it, `label` (short) on its left."""
    return {"panel": panel, "label": label, "value": value, "target": target, "text": text,
            "lo": lo, "hi": hi}


def met(ok):
    return YES if ok else NO


def spread_verdict(lo, hi, target):
    """Met only if the whole interval is within the target, missed only if none of it is: CPU
    time on a shared 2-core machine swings more than the module costs."""
    if hi <= target:
        return YES
    if lo > target:
        return NO
    return "not settled (its interval straddles the target)"


def median_ci(values):
    """(lo, hi, coverage) of a distribution-free confidence interval for the median: the
    k-th smallest and k-th largest value, k the largest with P(Binomial(n, 1/2) < k) <= 2.5%
    (the sign test); with too few values for that (n < 6), the whole range."""
    xs, n = sorted(values), len(values)
    k, tail = 0, 0.0
    while k < n // 2:
        nxt = tail + math.comb(n, k) / 2 ** n
        if nxt > 0.025:
            break
        k, tail = k + 1, nxt
    k = max(k, 1)
    coverage = 1 - 2 * sum(math.comb(n, i) for i in range(k)) / 2 ** n
    return xs[k - 1], xs[n - k], coverage


def missing(results, part, measure):
    why = results.get("errors", {}).get(part, "not run")
    return [row(measure, f"not measured: {why}")]


# --- CPU per request ---------------------------------------------------------------------------

def cpu_row(r):
    w, wo = statistics.median(r["with"]), statistics.median(r["without"])
    pairs = [a / b for a, b in zip(r["with"], r["without"])]
    ratio = statistics.median(pairs)
    lo, hi, cov = median_ci(pairs)
    target = RATIO_TARGET[r["traffic"]]
    value = (f"{ratio:.3f} ({cov:.0%} interval {lo:.3f}–{hi:.3f}, {len(pairs)} rounds; with "
             f"{w:.1f} µs, without {wo:.1f} µs)")
    chart = bar_of("cost", f"CPU, {r['mpm']}, {SHORT[r['traffic']]}", (ratio - 1) * 100,
                   (target - 1) * 100, f"{(ratio - 1) * 100:+.1f}%", (lo - 1) * 100,
                   (hi - 1) * 100)
    verdict = spread_verdict(lo, hi, target) if cov >= MIN_COVERAGE else \
        f"not settled ({len(pairs)} rounds: too few for a {MIN_COVERAGE:.0%} interval)"
    return row(f"CPU per {TRAFFIC[r['traffic']]}, {r['mpm']}: with ÷ without module", value,
               f"≤ {target:.3f}", verdict, chart)


def cpu_rows(results):
    cpu = results.get("cpu")
    if not cpu:
        return missing(results, "cpu", "CPU per request with ÷ without the module")
    return [cpu_row(r) for r in cpu["rows"]]


# --- instructions ------------------------------------------------------------------------------

def instr_row(kind, runs):
    pcts = sorted((r["with"] - r["without"]) * 100 / r["without"] for r in runs)
    pct, target = statistics.median(pcts), INSTR_TARGET_PCT[kind]
    mid = runs[len(runs) // 2]
    each = ", ".join(f"{p:.2f}%" for p in pcts)
    return row(f"instructions added {INSTR_WHAT[kind]} (callgrind)",
               f"{pct:.2f}% (runs: {each}; e.g. {mid['with'] - mid['without']:,} on Apache's "
               f"{mid['without']:,})", f"≤ {target}%", spread_verdict(pcts[0], pcts[-1], target),
               bar_of("cost", f"instructions, {SHORT[kind]}", pct, target, f"{pct:.2f}%",
                      pcts[0], pcts[-1]))


def instr_rows(results):
    ins = results.get("instructions")
    if not ins:
        return missing(results, "instructions", "user-space instructions added (callgrind)")
    return [instr_row(kind, ins[kind]["runs"]) for kind in ("newconn", "keepalive")]


# --- detection pass, status page, shared memory --------------------------------------------------

def levels(results):
    idle = results.get("idle")
    return idle["levels"] if idle else []


def in_flight(level):
    a = level.get("auto", {})
    return int(a.get("OpenReading") or 0) + int(a.get("OpenHandling") or 0)


def split_passes(level):
    """LastScanUs of the lookup passes and of the full dumps (LastScanFull 1). A page without
    LastScanFull (before issue 10) made every pass a dump: all of them count as passes."""
    us, full = level["scan"]["LastScanUs"], level["scan"].get("LastScanFull")
    if not full or len(full) != len(us):
        return us, []
    return [u for u, f in zip(us, full) if not f], [u for u, f in zip(us, full) if f]


def scan_row(level, us, what="one detection pass"):
    med = statistics.median(us)
    tcp = level.get("host_tcp", {})
    value = (f"{med:,.0f} µs median ({min(us):,}–{max(us):,}, {len(us)} scans; "
             f"{level['held']:,} held, {tcp.get('inuse', 0):,} TCP sockets on the host)")
    return row(f"{what}, {level['conns']:,} idle keep-alive connections "
               f"(LastScanUs)", value, f"≤ {SCAN_TARGET_US} µs", met(med <= SCAN_TARGET_US),
               bar_of("target", f"one pass, {level['conns']:,} idle", med * 100 / SCAN_TARGET_US,
                      100, f"{med:,.0f} µs"))


def dump_row(level, us):
    """The full dump every SocketGuardFullScanInterval: no target (the issue keeps it for what
    the table cannot name, at a slower period), but its cost is part of the picture."""
    med = statistics.median(us)
    every = level.get("auto", {}).get("FullScanIntervalMs")
    period = f", every {int(every):,} ms" if every else ""
    return row(f"full dump{period}, {level['conns']:,} idle keep-alive connections "
               f"(LastScanUs with LastScanFull 1)",
               f"{med:,.0f} µs median ({min(us):,}–{max(us):,}, {len(us)} dumps)")


def pass_rows(level):
    passes, dumps = split_passes(level)
    out = [scan_row(level, passes, "one detection pass" if not dumps else
                    "one detection pass (lookups)")] if passes else [
        row(f"one detection pass, {level['conns']:,} idle keep-alive connections",
            "not measured: every sampled scan was a full dump", f"≤ {SCAN_TARGET_US} µs")]
    return out + ([dump_row(level, dumps)] if dumps else [])


def extra_scan_rows(level):
    """Other LastScan* keys (e.g. a lookup count, once the page has one)."""
    out = []
    for key, vals in sorted(level["scan"].items()):
        if key in ("LastScanUs", "LastScanFull") or not vals:
            continue
        med = statistics.median(vals)
        if "Lookup" in key:
            n = in_flight(level)
            out.append(row(f"{key}, {level['conns']:,} idle connections",
                           f"{med:,.0f} median (max {max(vals):,})",
                           f"≤ in-flight requests ({n})", met(max(vals) <= n)))
        else:
            out.append(row(f"{key}, {level['conns']:,} idle connections", f"{med:,.0f} median"))
    return out


def scan_rows(results):
    done = [l for l in levels(results) if l.get("scan")]
    if not done:
        return missing(results, "idle", "one detection pass at idle keep-alive connections")
    return [r for l in done for r in pass_rows(l) + extra_scan_rows(l)]


def status_rows(results):
    with_page = [l for l in levels(results) if l.get("status")]
    if not with_page:
        return missing(results, "idle", "status page render time and size")
    level = with_page[0]
    out = []
    for f in level["status"]:
        med = statistics.median(f["ms"])
        out.append(row(f"status page {f['label']} at {level['held']:,} connections",
                       f"{med:.1f} ms median ({min(f['ms']):.1f}–{max(f['ms']):.1f}), "
                       f"{f['bytes']:,} bytes", f"≤ {STATUS_TARGET_MS} ms",
                       met(med <= STATUS_TARGET_MS),
                       bar_of("target", f"status page {f['label']}",
                              med * 100 / STATUS_TARGET_MS, 100, f"{med:.1f} ms")))
    return out


def scrape_rows(results):
    """?metrics at the levels without the full status page: a Prometheus scrape's cost."""
    out = []
    for level in levels(results):
        for f in level.get("scrape", []):
            med = statistics.median(f["ms"])
            out.append(row(f"status page {f['label']} at {level['held']:,} connections",
                           f"{med:.1f} ms median ({min(f['ms']):.1f}–{max(f['ms']):.1f}), "
                           f"{f['bytes']:,} bytes"))
    return out


def per_slot(segments):
    """Bytes per slot: the slope between the two segments (same child rows) furthest apart in
    slots, so the fixed parts cancel. None with fewer than two."""
    best = None
    for a in segments:
        for b in segments:
            if a["child_rows"] == b["child_rows"] and b["slots"] > a["slots"]:
                if best is None or b["slots"] - a["slots"] > best[1]["slots"] - best[0]["slots"]:
                    best = (a, b)
    if best is None:
        return None
    a, b = best
    return round((b["bytes"] - a["bytes"]) / (b["slots"] - a["slots"]))


def shm_rows(results):
    segs = [l["segment"] for l in levels(results) if l.get("segment")]
    if not segs:
        return missing(results, "idle", "shared memory per slot")
    slot = per_slot(segs)
    sizes = "; ".join(f"{s['slots']:,} slots, {s['child_rows']} child rows: {s['bytes']:,} bytes "
                      f"({s['bytes'] / 2 ** 20:.1f} MiB)" for s in segs)
    first = row("shared memory per slot (slope of the SG0001 sizes)",
                f"{slot} bytes" if slot else "not measured: needs two levels",
                f"≤ {SLOT_TARGET_BYTES} bytes", met(slot <= SLOT_TARGET_BYTES) if slot else NONE,
                bar_of("target", "shm per slot", slot * 100 / SLOT_TARGET_BYTES, 100,
                       f"{slot} bytes") if slot else None)
    return [first, row("shared memory segment (SG0001)", sizes)]


# --- Prometheus series -------------------------------------------------------------------------

def series_fit(runs):
    """(fixed, per vhost with a full report) from the two runs furthest apart, or None."""
    if len(runs) < 2:
        return None
    a, b = runs[0], runs[-1]
    per = (b["series"] - a["series"]) / (b["vhosts"] - a["vhosts"])
    return a["series"] - per * a["vhosts"], per


def series_rows(results):
    s = results.get("series")
    if not s:
        return missing(results, "series", "Prometheus series per server")
    runs = sorted(s["runs"], key=lambda r: r["vhosts"])
    value = "; ".join(f"{r['series']} with {r['vhosts']} vhost(s) ({r['vhost_rows']} vhost rows, "
                      f"{r['children']} children, {r['bytes']:,} bytes)" for r in runs)
    out = [row(f"Prometheus series per server, every vhost's leak report full "
               f"({s['report_k']} paths + {s['report_k']} clients)", value)]
    fit = series_fit(runs)
    if fit:
        out.append(row("Prometheus series: each added vhost with a full leak report",
                       f"+{fit[1]:.0f} series"))
    return out


def all_rows(results):
    return (cpu_rows(results) + instr_rows(results) + scan_rows(results) + status_rows(results)
            + scrape_rows(results) + shm_rows(results) + series_rows(results))


# --- markdown ----------------------------------------------------------------------------------

def cell(text):
    return str(text).replace("|", "\\|").replace("\n", " ")


def table(rows):
    out = ["| measure | value | target | met? |", "|---|---|---|---|"]
    out += [f"| {cell(r['measure'])} | {cell(r['value'])} | {cell(r['target'])} | "
            f"{cell(r['met'])} |" for r in rows]
    return "\n".join(out)


def run_line(meta):
    dirty = " (with uncommitted changes)" if meta.get("dirty") else ""
    return (f"Run of {meta['date']} on {meta['machine']}; kernel {meta['kernel']}; "
            f"{meta['apache']}; commit {meta['commit']}{dirty}; load average "
            f"{meta['load_before']} at the start, {meta['load_after']} at the end; "
            f"`make bench` took {meta['run_s'] / 60:.1f} min ({meta['settings']}).")


READING = """CPU per request: the server tree's utime+stime (every process of the server, at ns
precision from /proc/<pid>/task/*/schedstat) over a fixed number of requests, with and without
the module on two servers side by side, alternating (with, without, with, without, ...); the
value is the median of the rounds' with ÷ without ratios with a distribution-free confidence
interval for it (sign test), and a target counts as met or missed only when that interval lies
on one side of it. Instructions: callgrind, Apache -X, the slope between two request counts
(benches/instructions.sh), a few runs (event's timers add time-dependent work); met or missed
only when every run agrees. Detection pass: `LastScanUs` of
`/socket-status?auto` after distinct scans, event MPM, loopback (each connection is two
sockets on the host, and the kernel's dump walks every one). Status page: connect to last byte
over a new connection, one fetch after the other. Shared memory: the SG0001 log line."""


def markdown(results, rows):
    meta = results["meta"]
    return "\n".join(["# mod_socket_guard: `make bench`", "", run_line(meta), "",
                      table(rows), "", READING, "",
                      "Chart: results.svg (the added cost, and each measure as a share of "
                      "its target).", ""])


def summary(results, rows):
    """docs/PERFORMANCE.md's summary section, markers included."""
    meta = results["meta"]
    return "\n".join([SUMMARY_START, "## Summary: the last `make bench` run", "",
                      run_line(meta), "", table(rows), "", READING, "", SUMMARY_END])


def replace_summary(doc, section):
    """doc with its summary section replaced by `section`; ValueError without the markers."""
    a, b = doc.find(SUMMARY_START), doc.find(SUMMARY_END)
    if a < 0 or b < a:
        raise ValueError("docs/PERFORMANCE.md has no summary markers")
    return doc[:a] + section + doc[b + len(SUMMARY_END):]


# --- SVG ---------------------------------------------------------------------------------------

PANELS = (("cost", "Added by the module, % (bar: median; whisker: confidence interval or "
                   "the runs' range; red tick: target)", 40),
          ("target", "Measure as % of its target (red line: the target; a bar cut at the "
                     "right edge says how far over)", 400))
WIDTH, LABEL_W, ROW_H, PAD = 900, 230, 22, 16


def chart_items(rows, panel):
    return [r["chart"] for r in rows if r["chart"] and r["chart"]["panel"] == panel]


def scale(items, clip):
    """(x of a value in %) for a panel: from min(0, values) to the largest, within ±clip."""
    vals = [b[k] for b in items for k in ("value", "target", "lo", "hi") if b[k] is not None]
    lo, hi = max(min(vals + [0]), -clip), min(max(vals) * 1.1 or 1, clip)
    span = (hi - lo) or 1
    x0, w = LABEL_W + PAD, WIDTH - LABEL_W - 3 * PAD - 150
    return lambda v: x0 + (max(lo, min(hi, v)) - lo) * w / span, hi


def cut_note(b):
    """What a bar cut at the right edge adds to its text."""
    if b["panel"] == "target":
        return f" ({b['value'] / 100:,.0f}× the target)"
    return " (bar cut)"


def bar(y, x, hi, b):
    zero, vx, mid = x(0), x(b["value"]), y + ROW_H / 2
    text = b["text"] + (cut_note(b) if b["value"] > hi else "")
    parts = [f'<text x="{LABEL_W}" y="{y + 15}" text-anchor="end">{escape(b["label"])}</text>',
             f'<rect class="bar" x="{min(zero, vx):.1f}" y="{y + 4}" '
             f'width="{abs(vx - zero):.1f}" height="{ROW_H - 8}" fill="#4a7fb5"/>']
    if b["lo"] is not None and b["hi"] is not None:
        parts.append(f'<line x1="{x(b["lo"]):.1f}" y1="{mid}" x2="{x(b["hi"]):.1f}" y2="{mid}" '
                     'stroke="#222" stroke-width="1.5"/>')
    tx = x(b["target"])
    parts.append(f'<line x1="{tx:.1f}" y1="{y + 1}" x2="{tx:.1f}" y2="{y + ROW_H - 1}" '
                 'stroke="#c0392b" stroke-width="2"/>')
    right = max(vx, zero, tx, x(b["hi"]) if b["hi"] is not None else zero)
    parts.append(f'<text x="{right + 6:.1f}" y="{y + 15}">{escape(text)}</text>')
    return parts


def panel_svg(y, title, items, clip):
    x, hi = scale(items, clip)
    out = [f'<text x="{PAD}" y="{y + 14}" font-weight="bold">{escape(title)}</text>']
    y += ROW_H + 4
    out.append(f'<line x1="{x(0):.1f}" y1="{y}" x2="{x(0):.1f}" '
               f'y2="{y + ROW_H * len(items)}" stroke="#888"/>')
    for b in items:
        out += bar(y, x, hi, b)
        y += ROW_H
    return out, y + PAD


def svg(rows, title="mod_socket_guard: make bench"):
    body = [f'<text x="{PAD}" y="24" font-size="16" font-weight="bold">{escape(title)}</text>']
    y = 40
    for key, ptitle, clip in PANELS:
        items = chart_items(rows, key)
        if items:
            part, y = panel_svg(y, ptitle, items, clip)
            body += part
    head = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{y}" '
            f'viewBox="0 0 {WIDTH} {y}" font-family="sans-serif" font-size="12">')
    return "\n".join(['<?xml version="1.0" encoding="UTF-8"?>', head,
                      f'<rect width="{WIDTH}" height="{y}" fill="white"/>', *body, "</svg>", ""])
