"""Tests of benches/bench_report.py (`make test-bench`, part of `make test`): the table has a
row for every measure, the verdicts follow the targets, the SVG is well-formed XML without
scripts, and the summary replaces only its own section of docs/PERFORMANCE.md.

    python3 -m unittest discover -s benches -p 'test_*.py'
"""

import copy
import os
import re
import unittest
import xml.etree.ElementTree as ET

import bench_report as br

DOC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs",
                   "PERFORMANCE.md")
SVG_NS = "{http://www.w3.org/2000/svg}"


def cpu_row(mpm, traffic, with_, without):
    return {"mpm": mpm, "traffic": traffic, "with": with_, "without": without}


def level(conns, scan_us, bytes_, status=None, extra=None, scrape=None):
    out = {"conns": conns, "held": conns, "scan": {"LastScanUs": scan_us, **(extra or {})},
           "host_tcp": {"inuse": 2 * conns}, "auto": {"OpenReading": "0", "OpenHandling": "1"},
           "segment": {"slots": conns + 2048, "child_rows": 24, "bytes": bytes_}}
    if status:
        out["status"] = status
    if scrape:
        out["scrape"] = scrape
    return out


def fixture():
    status = [{"label": label, "path": "/x", "ms": ms, "bytes": 1000}
              for label, ms in (("HTML", [20.0, 30.0, 40.0]), ("?json", [60.0, 70.0, 80.0]),
                                ("?metrics", [10.0, 11.0, 12.0]), ("?auto", [9.0, 9.5, 10.0]))]
    return {
        "meta": {"date": "2027-01-01 00:00 UTC", "commit": "abc1234", "dirty": False,
                 "machine": "2 CPUs", "kernel": "6.1", "apache": "Apache/2.4.71",
                 "load_before": "1.0, 1.0, 1.0", "load_after": "2.0, 2.0, 2.0", "run_s": 600,
                 "settings": "7 rounds"},
        "cpu": {"rounds": 3, "requests": 20000, "conc": 16, "rows": [
            cpu_row("prefork", "keepalive", [30, 31, 32, 30, 31], [30, 31, 32, 30, 31]),  # 1.000
            cpu_row("prefork", "newconn", [90, 92, 94, 90, 92], [60, 61, 62, 60, 61]),   # > 1.4
            cpu_row("worker", "keepalive", [30, 40, 31, 30, 31], [32, 30, 33, 30, 31]),  # both
            cpu_row("worker", "newconn", [60, 61, 62], [60, 61, 62]),  # 3 rounds: too few
            cpu_row("event", "keepalive", [30, 31, 32, 30, 31], [30, 31, 32, 30, 31]),
            cpu_row("event", "newconn", [60, 61, 62, 60, 61], [60, 61, 62, 60, 61])]},
        "instructions": {  # new connections: 0.5% (met); keep-alive 1.0% (missed)
            "newconn": {"runs": [{"without": 10000, "with": 10050}] * 3},
            "keepalive": {"runs": [{"without": 10000, "with": 10100},
                                   {"without": 10000, "with": 10090}]}},
        "idle": {"levels": [level(1000, [50, 60, 70], 1_000_000),
                            level(10000, [80, 90, 100], 3_664_000, status,
                                  {"LastScanLookups": [1, 2, 2]}),
                            level(100000, [900, 1000, 1100], 30_304_000,
                                  scrape=[{"label": "?metrics", "ms": [150.0, 160.0],
                                           "bytes": 9000}])],
                 "scan_samples": 3, "reps": 3},
        "series": {"report_k": 16, "runs": [
            {"vhosts": 1, "vhost_rows": 3, "children": 4, "series": 134, "bytes": 13000},
            {"vhosts": 4, "vhost_rows": 6, "children": 4, "series": 269, "bytes": 24000}]},
        "errors": {},
    }


def by_measure(rows, text):
    found = [r for r in rows if text in r["measure"]]
    assert found, f"no row with {text!r}"
    return found


class TableTest(unittest.TestCase):
    def test_every_measure_has_a_row_with_four_cells(self):
        rows = br.all_rows(fixture())
        # 6 CPU + 2 instruction + 3 scan + 1 lookup + 4 status + 1 scrape + 2 shm + 2 series
        self.assertEqual(len(rows), 21)
        lines = br.table(rows).splitlines()
        self.assertEqual(len(lines), 23)
        for line in lines:
            self.assertEqual(len(re.findall(r"(?<!\\)\|", line)), 5, line)

    def test_cpu_verdicts_need_every_round_on_one_side(self):
        rows = by_measure(br.all_rows(fixture()), "CPU per")
        self.assertEqual(rows[0]["met"], br.YES)       # every round 1.000 <= 1.005
        self.assertEqual(rows[1]["met"], br.NO)        # every round > 1.010
        self.assertIn("its interval straddles", rows[2]["met"])   # 0.94 .. 1.33
        self.assertIn("3 rounds: too few", rows[3]["met"])  # every round 1.000, but 75% only
        self.assertEqual(rows[0]["value"], "1.000 (94% interval 1.000–1.000, 5 rounds; "
                                           "with 31.0 µs, without 31.0 µs)")

    def test_the_median_interval_is_the_sign_test_s(self):
        xs = list(range(1, 16))
        self.assertEqual(br.median_ci(xs[:5]), (1, 5, 1 - 2 / 32))
        lo, hi, cov = br.median_ci(xs[:9])
        self.assertEqual((lo, hi, round(cov, 4)), (2, 8, 0.9609))
        lo, hi, cov = br.median_ci(list(reversed(xs)))
        self.assertEqual((lo, hi, round(cov, 4)), (4, 12, 0.9648))
        lo, hi, cov = br.median_ci(xs[:8])  # P(B <= 1) = 3.5% > 2.5%: the whole range
        self.assertEqual((lo, hi, round(cov, 4)), (1, 8, 0.9922))
        self.assertEqual(br.median_ci([7]), (7, 7, 0.0))

    def test_the_value_is_the_median_of_the_rounds_ratios(self):
        # ratios 1, 2, 0.5, 1, 0.5: median 1.0 (the ratio of the medians would be 30/40)
        r = br.cpu_row(cpu_row("event", "keepalive", [10, 20, 30, 40, 50], [10, 10, 60, 40, 100]))
        self.assertTrue(r["value"].startswith("1.000 (94% interval 0.500–2.000"), r["value"])

    def test_one_noisy_instruction_run_leaves_it_unsettled(self):
        r = fixture()
        r["instructions"]["newconn"]["runs"][1] = {"without": 10000, "with": 10200}
        row = by_measure(br.all_rows(r), "instructions added per new")[0]
        self.assertIn("not settled", row["met"])

    def test_instructions_scan_status_and_slot_targets(self):
        rows = br.all_rows(fixture())
        ins = by_measure(rows, "instructions added")
        self.assertEqual([r["met"] for r in ins], [br.YES, br.NO])
        self.assertIn("0.50% (runs: 0.50%, 0.50%, 0.50%; e.g. 50 on Apache's 10,000)",
                      ins[0]["value"])
        scans = by_measure(rows, "detection pass")
        self.assertEqual([r["met"] for r in scans], [br.YES, br.YES, br.NO])
        self.assertEqual(by_measure(rows, "LastScanLookups")[0]["met"], br.NO)  # 1 in flight
        status = by_measure(rows, "status page")
        self.assertEqual([r["met"] for r in status], [br.YES, br.NO, br.YES, br.YES, br.NONE])
        self.assertIn("155.0 ms median (150.0–160.0), 9,000 bytes", status[-1]["value"])
        slot = by_measure(rows, "per slot")[0]
        self.assertEqual(slot["value"], "296 bytes")
        self.assertEqual(slot["met"], br.NO)
        self.assertIn("+45 series", by_measure(rows, "each added vhost")[0]["value"])

    def test_lookup_passes_and_full_dumps_are_apart(self):
        r = fixture()
        lvl = r["idle"]["levels"][2]
        lvl["scan"] = {"LastScanUs": [40, 30000, 50, 60, 31000], "LastScanFull": [0, 1, 0, 0, 1],
                       "LastScanLookups": [1, 0, 1, 1, 0]}
        lvl["auto"]["FullScanIntervalMs"] = "5000"
        rows = br.all_rows(r)
        passes = by_measure(rows, "one detection pass (lookups), 100,000")
        self.assertEqual(len(passes), 1)
        self.assertIn("50 µs median (40–60, 3 scans", passes[0]["value"])
        self.assertEqual(passes[0]["met"], br.YES)
        dumps = by_measure(rows, "full dump, every 5,000 ms, 100,000")
        self.assertIn("30,500 µs median (30,000–31,000, 2 dumps)", dumps[0]["value"])
        self.assertEqual(by_measure(rows, "LastScanLookups, 100,000")[0]["met"], br.YES)
        self.assertEqual([x for x in rows if x["measure"].startswith("LastScanFull")], [])

    def test_only_full_dumps_sampled_is_not_a_pass(self):
        r = fixture()
        r["idle"]["levels"][0]["scan"]["LastScanFull"] = [1, 1, 1]
        row = by_measure(br.all_rows(r), "one detection pass, 1,000")[0]
        self.assertIn("not measured", row["value"])
        self.assertEqual(row["met"], br.NONE)

    def test_a_part_that_did_not_run_says_so(self):
        r = fixture()
        r["cpu"], r["idle"] = None, None
        r["errors"] = {"cpu": "cpu_per_request.py exited with 1"}
        rows = br.all_rows(r)
        self.assertIn("not measured: cpu_per_request.py exited with 1",
                      by_measure(rows, "CPU per request")[0]["value"])
        for text in ("detection pass", "status page", "shared memory per slot"):
            self.assertIn("not measured", by_measure(rows, text)[0]["value"])

    def test_one_segment_size_gives_no_slope(self):
        r = fixture()
        r["idle"]["levels"] = r["idle"]["levels"][:1]
        self.assertIn("needs two levels", by_measure(br.all_rows(r), "per slot")[0]["value"])

    def test_pipes_in_values_do_not_break_the_table(self):
        line = br.table([br.row("a|b", "c|d")]).splitlines()[2]
        self.assertEqual(line, "| a\\|b | c\\|d | — | — |")


class SvgTest(unittest.TestCase):
    def parse(self, rows):
        return ET.fromstring(br.svg(rows).encode())

    def test_well_formed_one_bar_per_charted_row_no_script(self):
        rows = br.all_rows(fixture())
        root = self.parse(rows)
        self.assertEqual(root.tag, SVG_NS + "svg")
        bars = [e for e in root.iter(SVG_NS + "rect") if e.get("class") == "bar"]
        self.assertEqual(len(bars), sum(1 for r in rows if r["chart"]))
        self.assertEqual(len(bars), 6 + 2 + 3 + 4 + 1)
        tags = {e.tag.replace(SVG_NS, "") for e in root.iter()}
        self.assertFalse(tags & {"script", "foreignObject"}, tags)
        self.assertFalse(any(k.startswith("on") for e in root.iter() for k in e.attrib))

    def test_bars_stay_inside_the_picture(self):
        root = self.parse(br.all_rows(fixture()))
        width = float(root.get("width"))
        for e in root.iter(SVG_NS + "rect"):
            x, w = float(e.get("x", 0)), float(e.get("width"))
            self.assertGreaterEqual(x, 0)
            self.assertLessEqual(x + w, width)

    def test_a_bar_cut_at_the_edge_says_how_far_over(self):
        texts = [e.text for e in self.parse(br.all_rows(fixture())).iter(SVG_NS + "text")]
        self.assertIn("1,000 µs (10× the target)", texts)  # 100,000 connections
        self.assertIn("+50.8% (bar cut)", texts)  # prefork, new connection: 92 / 61 µs

    def test_a_negative_value_is_drawn_left_of_zero(self):
        parts = br.bar(0, lambda v: 100 + v, 50, br.bar_of("cost", "l", -10.0, 1.0, "-10%"))
        rect = ET.fromstring(next(p for p in parts if "<rect" in p))
        self.assertEqual((float(rect.get("x")), float(rect.get("width"))), (90.0, 10.0))

    def test_the_value_is_written_right_of_bar_whisker_and_tick(self):
        b = br.bar_of("cost", "l", 5.0, 1.0, "+5%", -20.0, 30.0)
        parts = br.bar(0, lambda v: 100 + v, 50, b)
        text = ET.fromstring(next(p for p in parts if p.startswith("<text") and "+5%" in p))
        self.assertEqual(float(text.get("x")), 136.0)  # the whisker ends at 130

    def test_labels_are_escaped(self):
        rows = [br.row("m", "v", chart=br.bar_of("cost", "<script>&'\"", 1.0, 0.5, "<b>"))]
        texts = [e.text for e in self.parse(rows).iter(SVG_NS + "text")]
        self.assertIn("<script>&'\"", texts)
        self.assertIn("<b>", texts)


class SummaryTest(unittest.TestCase):
    def test_replaces_only_its_section(self):
        doc = f"# T\n\n{br.SUMMARY_START}\nold\n{br.SUMMARY_END}\n\n## history\nkept\n"
        r = fixture()
        new = br.replace_summary(doc, br.summary(r, br.all_rows(r)))
        self.assertTrue(new.startswith("# T\n\n" + br.SUMMARY_START))
        self.assertTrue(new.endswith(br.SUMMARY_END + "\n\n## history\nkept\n"))
        self.assertNotIn("\nold\n", new)
        self.assertIn("commit abc1234", new)
        self.assertIn("load average 1.0, 1.0, 1.0 at the start", new)
        self.assertEqual(br.replace_summary(new, br.summary(r, br.all_rows(r))), new)

    def test_no_markers_is_an_error(self):
        with self.assertRaises(ValueError):
            br.replace_summary("# T\n", "x")

    def test_the_real_doc_has_the_markers(self):
        with open(DOC) as f:
            doc = f.read()
        self.assertEqual(doc.count(br.SUMMARY_START), 1)
        self.assertEqual(doc.count(br.SUMMARY_END), 1)

    def test_fixture_is_not_mutated(self):
        r = fixture()
        before = copy.deepcopy(r)
        br.markdown(r, br.all_rows(r))
        self.assertEqual(r, before)


if __name__ == "__main__":
    unittest.main()
