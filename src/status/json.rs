//! `?json`: the whole snapshot as one JSON document.
//!
//! Hand-written (the crate has no serde): every string goes through `escape::json_string`,
//! numbers are integers or `escape::float` (finite decimals), so the output is valid JSON for
//! any snapshot.

use super::escape::{float, json_string as js, ms_as_secs};
use super::links::{args, at_offset, everything};
use super::model::{
    ChildRow, CloseWaitClass, ConnRow, Count, HistoryPoint, LeakedSocket, ShownState, Snapshot,
    VhostLeaks, VhostRow,
};
use super::open_in;
use super::query::Query;
use super::select::Selection;

/// The snapshot with the connection rows `sel` chose for `q` (totals, vhosts and children
/// are always over every connection).
pub fn render(s: &Snapshot, sel: &Selection, q: &Query) -> String {
    let mut parts = vec![
        format!("\"server\":{}", server(s)),
        format!("\"totals\":{}", totals(s)),
        format!("\"vhosts\":{}", list(s.vhosts.iter().map(vhost))),
        format!("\"children\":{}", list(s.children.iter().map(child))),
        format!("\"connections\":{}", list(sel.rows().map(conn))),
    ];
    parts.extend(listing(sel, q));
    parts.extend([
        format!("\"kernel\":{}", kernel(s)),
        format!("\"close_wait_histogram\":{}", histogram(s)),
        format!("\"scanner\":{}", scanner(s)),
        format!(
            "\"leaks\":{}",
            list(s.leaks.iter().map(|v| vhost_leaks(s, v)))
        ),
        format!("\"history\":{}", history(s)),
    ]);
    format!("{{{}}}\n", parts.join(","))
}

/// What the `connections` array holds and how to get the rest: counts, the filter, and the
/// query strings (for `?`) of the next page and of every matching row.
fn listing(sel: &Selection, q: &Query) -> Vec<String> {
    let next = sel
        .next_offset()
        .map_or_else(|| "null".to_string(), |o| js(&args(&at_offset(q, o))));
    let f = &q.filter;
    let states: Vec<String> = f
        .states
        .iter()
        .map(|s| format!("\"{}\"", s.name()))
        .collect();
    let filter = format!(
        "{{\"vhost\":{},\"state\":[{}],\"client\":{}}}",
        f.vhost.as_deref().map_or_else(|| "null".to_string(), js),
        states.join(","),
        f.client
            .as_ref()
            .map_or_else(|| "null".to_string(), |c| js(&c.text))
    );
    vec![
        format!("\"connections_total\":{}", sel.total),
        format!("\"connections_matching\":{}", sel.matching()),
        format!("\"connections_shown\":{}", sel.shown()),
        format!("\"connections_attention\":{}", sel.attention.len()),
        format!("\"connections_truncated\":{}", sel.truncated()),
        format!("\"connections_offset\":{}", sel.offset),
        format!("\"connections_limit\":{}", opt(sel.limit)),
        format!("\"connections_next\":{next}"),
        format!("\"connections_all\":{}", js(&args(&everything(q)))),
        format!("\"connections_filter\":{filter}"),
    ]
}

fn list(items: impl Iterator<Item = String>) -> String {
    format!("[{}]", items.collect::<Vec<_>>().join(","))
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "null".to_string(), |n| n.to_string())
}

fn server(s: &Snapshot) -> String {
    format!(
        "{{\"version\":{},\"mpm\":{},\"module_version\":{},\"uptime_seconds\":{},\
         \"generation\":{},\"slots_total\":{},\"slots_used\":{},\"scan_interval_ms\":{},\
         \"full_scan_interval_ms\":{},\"graceful_deadline_ms\":{}}}",
        js(&s.server_version),
        js(&s.mpm),
        js(&s.module_version),
        s.uptime_secs,
        s.generation,
        s.slots_total,
        s.slots_used,
        s.scan_interval_ms,
        s.full_scan_interval_ms,
        s.graceful_deadline_ms
    )
}

fn totals(s: &Snapshot) -> String {
    let t = &s.totals;
    // Keys are ShownState names, which are fixed ASCII identifiers.
    let by_state = ShownState::OPEN
        .iter()
        .map(|&st| format!("\"{}\":{}", st.name(), open_in(t, st)))
        .collect::<Vec<_>>()
        .join(",");
    format!(
        "{{\"accepted\":{},\"requests\":{},\"closed\":{},\"open\":{},\"open_by_state\":{{{}}},\
         \"close_wait_now\":{},\"force_closed_guard\":{},\"force_closed_rescue\":{},\
         \"reported\":{},\"reclaimed\":{},\"untracked\":{},\"stopped_cgi\":{},\
         \"stopped_child\":{},\"abandoned_now\":{}}}",
        t.accepted,
        t.requests,
        t.closed,
        t.open(),
        by_state,
        t.close_wait_now,
        t.force_closed_guard,
        t.force_closed_rescue,
        t.reported,
        t.reclaimed,
        t.untracked,
        t.stopped_cgi,
        t.stopped_child,
        t.abandoned_now
    )
}

fn vhost(v: &VhostRow) -> String {
    format!(
        "{{\"name\":{},\"port\":{},\"auto_close\":\"{}\",\"close_wait_timeout_ms\":{},\
         \"accepted\":{},\"open\":{},\"close_wait_now\":{},\"force_closed_guard\":{},\
         \"force_closed_rescue\":{},\"reported\":{},\"abandoned_timeout_ms\":{},\
         \"stopped_cgi\":{},\"stopped_child\":{}}}",
        js(&v.name),
        v.port,
        v.auto_close.name(),
        v.close_wait_timeout_ms,
        v.accepted,
        v.open,
        v.close_wait_now,
        v.force_closed_guard,
        v.force_closed_rescue,
        v.reported,
        v.abandoned_timeout_ms,
        v.stopped_cgi,
        v.stopped_child
    )
}

fn child(c: &ChildRow) -> String {
    format!(
        "{{\"pid\":{},\"generation\":{},\"open\":{},\"checkin_age_ms\":{},\"hung\":{}}}",
        c.pid, c.generation, c.open, c.checkin_age_ms, c.hung
    )
}

fn conn(c: &ConnRow) -> String {
    // Class names are fixed ASCII identifiers.
    let class = c
        .class
        .map_or_else(|| "null".to_string(), |k| format!("\"{}\"", k.name()));
    // Stop names are fixed ASCII identifiers; seconds are exact decimals (valid JSON numbers).
    let stopped = c.stopped.map_or("", |k| k.name());
    format!(
        "{{\"pid\":{},\"client\":{},\"local_port\":{},\"vhost\":{},\"state\":\"{}\",\
         \"age_ms\":{},\"close_wait_ms\":{},\"class\":{},\"requests\":{},\"method\":{},\
         \"path\":{},\"abandoned\":{},\"abandoned_seconds\":{},\"stopped\":\"{}\"}}",
        c.pid,
        js(&c.client),
        c.local_port,
        js(&c.vhost),
        c.state.name(),
        c.age_ms,
        opt(c.close_wait_ms),
        class,
        c.requests,
        js(&c.method),
        js(&c.path),
        c.abandoned_ms.is_some(),
        ms_as_secs(c.abandoned_ms.unwrap_or(0)),
        stopped
    )
}

fn leaked(l: &LeakedSocket) -> String {
    format!(
        "{{\"client\":{},\"local_port\":{},\"inode\":{},\"holder_pid\":{},\
         \"holder_comm\":{},\"closed\":{}}}",
        js(&l.client),
        l.local_port,
        l.inode,
        opt(l.holder_pid),
        js(&l.holder_comm),
        l.closed
    )
}

fn kernel(s: &Snapshot) -> String {
    let k = &s.kernel;
    let classes = CloseWaitClass::ALL
        .iter()
        .map(|&c| format!("\"{}\":{}", c.name(), k.count(c)))
        .collect::<Vec<_>>()
        .join(",");
    format!(
        "{{\"available\":{},\"error\":{},\"tracked\":{},\"untracked\":{},\"backlog\":{},\
         \"leaked\":{},\"classes\":{{{}}},\"verdict\":\"{}\",\"oldest_close_wait_ms\":{}}}",
        k.available,
        k.error.as_deref().map_or_else(|| "null".to_string(), js),
        k.tracked,
        k.untracked,
        k.backlog,
        list(k.leaked.iter().map(leaked)),
        classes,
        k.verdict.name(),
        k.oldest_close_wait_ms
    )
}

fn scanner(s: &Snapshot) -> String {
    let sc = &s.scanner;
    format!(
        "{{\"pid\":{},\"scans\":{},\"scan_errors\":{},\"last_scan_us\":{},\
         \"last_scan_lookups\":{},\"last_scan_full\":{},\"full_scans\":{},\
         \"last_scan_age_ms\":{},\"guard_process_pid\":{},\"guard_process_reach\":\"{}\",\
         \"rescue\":{}}}",
        sc.pid,
        sc.scans,
        sc.scan_errors,
        sc.last_scan_us,
        sc.last_scan_lookups,
        sc.last_scan_full,
        sc.full_scans,
        sc.last_scan_age_ms,
        sc.guard_pid,
        sc.guard_reach,
        sc.rescue
    )
}

/// A leak report count: Space-Saving's count and error bound, when it was last seen.
fn count(s: &Snapshot, c: &Count) -> String {
    format!(
        "\"count\":{},\"error\":{},\"last_seen_unix_ms\":{},\"last_seen_age_ms\":{}",
        c.count,
        c.error,
        c.last_seen_unix_ms,
        s.now_unix_ms.saturating_sub(c.last_seen_unix_ms)
    )
}

fn vhost_leaks(s: &Snapshot, v: &VhostLeaks) -> String {
    let paths = v.paths.iter().map(|p| {
        format!(
            "{{\"method\":{},\"path\":{},{}}}",
            js(&p.method),
            js(&p.path),
            count(s, &p.count)
        )
    });
    let clients = v
        .clients
        .iter()
        .map(|c| format!("{{\"client\":{},{}}}", js(&c.client), count(s, &c.count)));
    format!(
        "{{\"vhost\":{},\"paths\":{},\"clients\":{}}}",
        js(&v.vhost),
        list(paths),
        list(clients)
    )
}

/// The last hour as series: one array of timestamps and one per value, index by index.
fn history(s: &Snapshot) -> String {
    let h = &s.history;
    let series = |f: fn(&HistoryPoint) -> u64| list(h.points.iter().map(|p| f(p).to_string()));
    format!(
        "{{\"period_seconds\":{},\"capacity\":{},\"timestamps_unix_ms\":{},\
         \"close_wait\":{},\"open\":{},\"untracked\":{},\"guard_closes\":{},\
         \"rescue_closes\":{}}}",
        ms_as_secs(h.period_ms),
        h.capacity,
        series(|p| p.unix_ms),
        series(|p| p.close_wait),
        series(|p| p.open),
        series(|p| p.untracked),
        series(|p| p.guard_closes),
        series(|p| p.rescue_closes)
    )
}

/// `counts` mirrors the model: per-bucket (not cumulative), one more entry than
/// `bounds_seconds`, the last being the +Inf bucket.
fn histogram(s: &Snapshot) -> String {
    let h = &s.close_wait_histogram;
    format!(
        "{{\"bounds_seconds\":{},\"counts\":{},\"count\":{},\"sum_seconds\":{}}}",
        list(h.bounds_secs.iter().map(|b| float(*b))),
        list(h.counts.iter().map(|c| c.to_string())),
        h.count(),
        float(h.sum_secs)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::fixture;
    use crate::status::query::parse as parse_query;
    use crate::status::select::select;

    /// The document for `?json` (the default bound) or another query.
    fn doc(s: &Snapshot) -> String {
        doc_for(s, "json")
    }

    fn doc_for(s: &Snapshot, args: &str) -> String {
        let q = parse_query(Some(args)).unwrap();
        render(s, &select(s, &q), &q)
    }

    /// A minimal strict JSON parser, enough to prove the output is valid and to read it back.
    #[derive(Debug, PartialEq)]
    enum V {
        Null,
        Bool(bool),
        Num(f64),
        Str(String),
        Arr(Vec<V>),
        Obj(Vec<(String, V)>),
    }

    impl V {
        fn get(&self, key: &str) -> &V {
            match self {
                V::Obj(kv) => &kv.iter().find(|(k, _)| k == key).expect(key).1,
                _ => panic!("not an object looking up {key}"),
            }
        }
        fn arr(&self) -> &Vec<V> {
            match self {
                V::Arr(a) => a,
                _ => panic!("not an array"),
            }
        }
        fn str(&self) -> &str {
            match self {
                V::Str(s) => s,
                _ => panic!("not a string: {self:?}"),
            }
        }
        fn num(&self) -> f64 {
            match self {
                V::Num(n) => *n,
                _ => panic!("not a number: {self:?}"),
            }
        }
    }

    struct P<'a> {
        b: &'a [u8],
        i: usize,
    }

    impl P<'_> {
        fn ws(&mut self) {
            while self.i < self.b.len() && b" \t\r\n".contains(&self.b[self.i]) {
                self.i += 1;
            }
        }
        fn eat(&mut self, c: u8) -> Result<(), String> {
            self.ws();
            if self.b.get(self.i) == Some(&c) {
                self.i += 1;
                Ok(())
            } else {
                Err(format!("expected {:?} at {}", c as char, self.i))
            }
        }
        fn lit(&mut self, word: &str, v: V) -> Result<V, String> {
            if self.b[self.i..].starts_with(word.as_bytes()) {
                self.i += word.len();
                Ok(v)
            } else {
                Err(format!("bad literal at {}", self.i))
            }
        }
        fn value(&mut self) -> Result<V, String> {
            self.ws();
            match self.b.get(self.i).copied() {
                Some(b'{') => {
                    self.i += 1;
                    let mut kv = Vec::new();
                    self.ws();
                    if self.b.get(self.i) == Some(&b'}') {
                        self.i += 1;
                        return Ok(V::Obj(kv));
                    }
                    loop {
                        self.ws();
                        let k = self.string()?;
                        self.eat(b':')?;
                        kv.push((k, self.value()?));
                        self.ws();
                        match self.b.get(self.i) {
                            Some(b',') => self.i += 1,
                            Some(b'}') => {
                                self.i += 1;
                                return Ok(V::Obj(kv));
                            }
                            _ => return Err(format!("bad object at {}", self.i)),
                        }
                    }
                }
                Some(b'[') => {
                    self.i += 1;
                    let mut a = Vec::new();
                    self.ws();
                    if self.b.get(self.i) == Some(&b']') {
                        self.i += 1;
                        return Ok(V::Arr(a));
                    }
                    loop {
                        a.push(self.value()?);
                        self.ws();
                        match self.b.get(self.i) {
                            Some(b',') => self.i += 1,
                            Some(b']') => {
                                self.i += 1;
                                return Ok(V::Arr(a));
                            }
                            _ => return Err(format!("bad array at {}", self.i)),
                        }
                    }
                }
                Some(b'"') => Ok(V::Str(self.string()?)),
                Some(b't') => self.lit("true", V::Bool(true)),
                Some(b'f') => self.lit("false", V::Bool(false)),
                Some(b'n') => self.lit("null", V::Null),
                Some(c) if c == b'-' || c.is_ascii_digit() => {
                    let start = self.i;
                    while self.i < self.b.len() && b"+-.eE0123456789".contains(&self.b[self.i]) {
                        self.i += 1;
                    }
                    let t = std::str::from_utf8(&self.b[start..self.i]).unwrap();
                    // JSON forbids leading zeros ("01") and a bare trailing dot ("1.").
                    let digits = t.trim_start_matches('-');
                    if (digits.len() > 1 && digits.starts_with('0') && !digits.starts_with("0."))
                        || t.ends_with('.')
                    {
                        return Err(format!("bad number {t}"));
                    }
                    t.parse().map(V::Num).map_err(|_| format!("bad number {t}"))
                }
                _ => Err(format!("unexpected input at {}", self.i)),
            }
        }
        fn string(&mut self) -> Result<String, String> {
            self.eat(b'"')?;
            let mut out = String::new();
            loop {
                let rest = std::str::from_utf8(&self.b[self.i..]).map_err(|e| e.to_string())?;
                let c = rest.chars().next().ok_or("unterminated string")?;
                self.i += c.len_utf8();
                match c {
                    '"' => return Ok(out),
                    '\\' => {
                        let e = self.b.get(self.i).copied().ok_or("bad escape")?;
                        self.i += 1;
                        match e {
                            b'"' => out.push('"'),
                            b'\\' => out.push('\\'),
                            b'/' => out.push('/'),
                            b'n' => out.push('\n'),
                            b'r' => out.push('\r'),
                            b't' => out.push('\t'),
                            b'b' => out.push('\u{8}'),
                            b'f' => out.push('\u{c}'),
                            b'u' => {
                                let h = std::str::from_utf8(&self.b[self.i..self.i + 4]).unwrap();
                                let n = u32::from_str_radix(h, 16).map_err(|e| e.to_string())?;
                                self.i += 4;
                                out.push(char::from_u32(n).ok_or("surrogate")?);
                            }
                            _ => return Err("bad escape".into()),
                        }
                    }
                    c if (c as u32) < 0x20 => return Err("raw control char in string".into()),
                    c => out.push(c),
                }
            }
        }
    }

    fn parse(text: &str) -> Result<V, String> {
        let mut p = P {
            b: text.as_bytes(),
            i: 0,
        };
        let v = p.value()?;
        p.ws();
        if p.i != p.b.len() {
            return Err(format!("trailing data at {}", p.i));
        }
        Ok(v)
    }

    #[test]
    fn the_validator_rejects_bad_json() {
        assert!(parse(r#"{"a":"x"}"#).is_ok());
        assert!(parse("{\"a\":\"x\ny\"}").is_err());
        assert!(parse(r#"{"a":"x"}"}"#).is_err());
        assert!(parse(r#"{"a":NaN}"#).is_err());
        assert!(parse(r#"{"a":01}"#).is_err());
        assert!(parse(r#"{"a":1,}"#).is_err());
    }

    #[test]
    fn hostile_strings_round_trip() {
        let out = doc(&fixture::snapshot());
        assert!(!out.contains("<script>"));
        let v = parse(&out).unwrap();
        let conns = v.get("connections").arr();
        assert_eq!(conns[0].get("path").str(), fixture::HOSTILE_PATH);
        assert_eq!(conns[0].get("client").str(), fixture::HOSTILE_CLIENT);
        assert_eq!(conns[0].get("method").str(), "G\"ET<");
        assert_eq!(
            v.get("vhosts").arr()[0].get("name").str(),
            fixture::HOSTILE_VHOST
        );
        assert_eq!(
            v.get("server").get("version").str(),
            "Apache/2.4.99 (Test)\nEvil: 1"
        );
    }

    #[test]
    fn close_wait_rows_come_first() {
        let v = parse(&doc(&fixture::snapshot())).unwrap();
        let states: Vec<&str> = v
            .get("connections")
            .arr()
            .iter()
            .map(|c| c.get("state").str())
            .collect();
        assert_eq!(
            states,
            [
                "close_wait",
                "close_wait",
                "force_closed",
                "keepalive",
                "handling",
                "reading"
            ]
        );
        let cw = &v.get("connections").arr()[0];
        assert_eq!(cw.get("close_wait_ms").num(), 45_500.0);
        assert_eq!(v.get("connections").arr()[2].get("close_wait_ms"), &V::Null);
    }

    #[test]
    fn default_is_bounded_and_says_how_to_get_the_rest() {
        let s = fixture::crowded();
        let v = parse(&doc(&s)).unwrap();
        assert_eq!(v.get("connections").arr().len(), 103);
        assert_eq!(v.get("connections_total").num(), 256.0);
        assert_eq!(v.get("connections_matching").num(), 256.0);
        assert_eq!(v.get("connections_shown").num(), 103.0);
        assert_eq!(v.get("connections_attention").num(), 3.0);
        assert_eq!(v.get("connections_truncated"), &V::Bool(true));
        assert_eq!(v.get("connections_offset").num(), 0.0);
        assert_eq!(v.get("connections_limit").num(), 100.0);
        assert_eq!(v.get("connections_next").str(), "json&page=2");
        assert_eq!(v.get("connections_all").str(), "json&all");
        // Totals stay exact: over every connection, not the page.
        assert_eq!(v.get("totals").get("open").num(), s.totals.open() as f64);

        let next = parse(&doc_for(&s, "json&page=3")).unwrap();
        assert_eq!(next.get("connections").arr().len(), 3 + 53);
        assert_eq!(next.get("connections_next"), &V::Null);
        assert_eq!(next.get("connections_truncated"), &V::Bool(true));

        let all = parse(&doc_for(&s, "json&all")).unwrap();
        assert_eq!(all.get("connections").arr().len(), 256);
        assert_eq!(all.get("connections_truncated"), &V::Bool(false));
        assert_eq!(all.get("connections_limit"), &V::Null);
        assert_eq!(all.get("connections_next"), &V::Null);
    }

    #[test]
    fn filters_apply_and_are_echoed_escaped() {
        let s = fixture::crowded();
        let v = parse(&doc_for(&s, "json&state=keepalive&client=10.1.1.&limit=10")).unwrap();
        let rows = v.get("connections").arr();
        assert_eq!(rows.len(), 10);
        assert!(rows
            .iter()
            .all(|r| r.get("state").str() == "keepalive"
                && r.get("client").str().starts_with("10.1.1.")));
        assert_eq!(v.get("connections_matching").num(), 50.0);
        assert_eq!(v.get("connections_total").num(), 256.0);
        let f = v.get("connections_filter");
        assert_eq!(f.get("state").arr()[0].str(), "keepalive");
        assert_eq!(f.get("client").str(), "10.1.1.");
        assert_eq!(f.get("vhost"), &V::Null);
        assert_eq!(
            v.get("connections_next").str(),
            "json&state=keepalive&client=10.1.1.&limit=10&page=2"
        );
        let out = doc_for(&s, "json&vhost=%3Cb%3E");
        assert!(!out.contains("<b>"));
        let v = parse(&out).unwrap();
        assert_eq!(v.get("connections_filter").get("vhost").str(), "<b>");
        assert_eq!(v.get("connections_all").str(), "json&vhost=%3Cb%3E&all");
        assert_eq!(v.get("connections").arr().len(), 0);
    }

    #[test]
    fn numbers_match_the_snapshot() {
        let s = fixture::snapshot();
        let v = parse(&doc(&s)).unwrap();
        let t = v.get("totals");
        assert_eq!(t.get("open").num(), s.totals.open() as f64);
        assert_eq!(t.get("open_by_state").get("close_wait").num(), 2.0);
        assert_eq!(t.get("open_by_state").get("closing").num(), 0.0);
        assert_eq!(t.get("untracked").num(), 13.0);
        assert_eq!(v.get("server").get("slots_total").num(), 1024.0);
        assert_eq!(v.get("vhosts").arr()[1].get("auto_close").str(), "Report");
        assert_eq!(v.get("children").arr()[1].get("hung"), &V::Bool(true));
        let k = v.get("kernel");
        assert_eq!(k.get("error"), &V::Null);
        assert_eq!(k.get("leaked").arr()[0].get("holder_pid").num(), 4242.0);
        assert_eq!(k.get("leaked").arr()[1].get("holder_pid"), &V::Null);
        let h = v.get("close_wait_histogram");
        assert_eq!(h.get("count").num(), 10.0);
        assert_eq!(h.get("sum_seconds").num(), 321.5);
        assert_eq!(h.get("bounds_seconds").arr()[0].num(), 0.1);
    }

    #[test]
    fn classes_verdict_and_scanner() {
        let s = fixture::snapshot();
        let v = parse(&doc(&s)).unwrap();
        let k = v.get("kernel");
        let c = k.get("classes");
        assert_eq!(c.get("stuck").num(), 1.0);
        assert_eq!(c.get("hung").num(), 1.0);
        assert_eq!(c.get("old_generation").num(), 0.0);
        assert_eq!(c.get("untracked").num(), 1.0);
        assert_eq!(c.get("leaked").num(), 2.0);
        assert_eq!(c.get("backlog").num(), 3.0);
        // Every kernel CLOSE_WAIT socket is in exactly one class.
        let sum: f64 = match c {
            V::Obj(kv) => kv.iter().map(|(_, n)| n.num()).sum(),
            _ => unreachable!(),
        };
        assert_eq!(
            sum,
            k.get("tracked").num()
                + k.get("untracked").num()
                + k.get("leaked").arr().len() as f64
                + k.get("backlog").num()
        );
        assert_eq!(k.get("verdict").str(), "leak");
        assert_eq!(k.get("oldest_close_wait_ms").num(), 45_500.0);
        let sc = v.get("scanner");
        assert_eq!(sc.get("pid").num(), 101.0);
        assert_eq!(sc.get("scans").num(), 77.0);
        assert_eq!(sc.get("scan_errors").num(), 2.0);
        assert_eq!(sc.get("last_scan_us").num(), 140.0);
        assert_eq!(sc.get("last_scan_lookups").num(), 3.0);
        assert_eq!(sc.get("last_scan_full"), &V::Bool(false));
        assert_eq!(sc.get("full_scans").num(), 15.0);
        assert_eq!(v.get("server").get("full_scan_interval_ms").num(), 5_000.0);
        assert_eq!(sc.get("last_scan_age_ms").num(), 300.0);

        // Distinct numbers, so a swapped key would show.
        let s = fixture::with_distinct_classes();
        let v = parse(&doc(&s)).unwrap();
        let c = v.get("kernel").get("classes");
        let got: Vec<f64> = [
            "stuck",
            "hung",
            "old_generation",
            "leaked",
            "backlog",
            "untracked",
        ]
        .iter()
        .map(|n| c.get(n).num())
        .collect();
        assert_eq!(got, [5.0, 6.0, 7.0, 9.0, 10.0, 8.0]);
        assert_eq!(v.get("kernel").get("backlog").num(), 10.0);
        assert_eq!(v.get("kernel").get("verdict").str(), "churn");
    }

    #[test]
    fn connection_class_and_force_closed_row() {
        let v = parse(&doc(&fixture::snapshot())).unwrap();
        let conns = v.get("connections").arr();
        assert_eq!(conns[0].get("class").str(), "stuck");
        assert_eq!(conns[1].get("class").str(), "hung");
        assert_eq!(conns[3].get("class"), &V::Null);
        let fc: Vec<&V> = conns
            .iter()
            .filter(|c| c.get("state").str() == "force_closed")
            .collect();
        assert_eq!(fc.len(), 1);
        assert_eq!(fc[0].get("path").str(), fixture::FORCE_CLOSED_PATH);
        assert_eq!(fc[0].get("class"), &V::Null);
        let out = doc(&fixture::snapshot());
        assert!(!out.contains("<all>"));
    }

    #[test]
    fn stopped_abandoned_and_graceful_deadline() {
        let v = parse(&doc(&fixture::with_abandoned())).unwrap();
        let t = v.get("totals");
        assert_eq!(t.get("stopped_cgi").num(), 17.0);
        assert_eq!(t.get("stopped_child").num(), 19.0);
        assert_eq!(t.get("abandoned_now").num(), 2.0);
        assert_eq!(v.get("server").get("graceful_deadline_ms").num(), 30_000.0);
        let vh = v.get("vhosts").arr();
        assert_eq!(vh[0].get("abandoned_timeout_ms").num(), 0.0);
        assert_eq!(vh[1].get("abandoned_timeout_ms").num(), 2_500.0);
        assert_eq!(vh[1].get("stopped_cgi").num(), 14.0);
        assert_eq!(vh[1].get("stopped_child").num(), 3.0);
        // CLOSE_WAIT rows first, then the abandoned ones (longest first), then the rest.
        let conns = v.get("connections").arr();
        let order: Vec<(&str, bool)> = conns
            .iter()
            .map(|c| (c.get("state").str(), c.get("abandoned") == &V::Bool(true)))
            .collect();
        assert_eq!(
            order,
            [
                ("close_wait", true),
                ("close_wait", false),
                ("force_closed", true),
                ("keepalive", true),
                ("handling", false),
                ("reading", false)
            ]
        );
        assert_eq!(conns[0].get("abandoned_seconds").num(), 15.0);
        assert_eq!(conns[0].get("stopped").str(), "cgi_kill");
        assert_eq!(conns[2].get("abandoned_seconds").num(), 12.3);
        assert_eq!(conns[2].get("stopped").str(), "cgi_term");
        assert_eq!(conns[2].get("path").str(), fixture::ABANDONED_PATH);
        assert_eq!(conns[3].get("abandoned_seconds").num(), 2.0);
        assert_eq!(conns[3].get("stopped").str(), "");
        assert_eq!(conns[4].get("abandoned"), &V::Bool(false));
        assert_eq!(conns[4].get("abandoned_seconds").num(), 0.0);
        assert_eq!(conns[4].get("stopped").str(), "");
        let plain = parse(&doc(&Default::default())).unwrap();
        assert_eq!(plain.get("totals").get("abandoned_now").num(), 0.0);
        assert_eq!(plain.get("server").get("graceful_deadline_ms").num(), 0.0);
    }

    #[test]
    fn leaked_holders_and_backlog() {
        let mut s = fixture::snapshot();
        s.kernel.leaked[1].closed = true;
        let out = doc(&s);
        assert!(!out.contains("<x>"));
        let v = parse(&out).unwrap();
        let k = v.get("kernel");
        assert_eq!(k.get("backlog").num(), 3.0);
        let l = k.get("leaked").arr();
        assert_eq!(l.len(), 2);
        assert_eq!(l[0].get("holder_pid").num(), 4242.0);
        assert_eq!(l[0].get("holder_comm").str(), fixture::HOSTILE_COMM);
        assert_eq!(l[0].get("closed"), &V::Bool(false));
        assert_eq!(l[1].get("holder_pid"), &V::Null);
        assert_eq!(l[1].get("holder_comm").str(), "");
        assert_eq!(l[1].get("closed"), &V::Bool(true));
        let plain = parse(&doc(&Default::default())).unwrap();
        assert_eq!(plain.get("kernel").get("backlog").num(), 0.0);
        assert_eq!(plain.get("kernel").get("classes").get("leaked").num(), 0.0);
    }

    #[test]
    fn non_finite_floats_and_kernel_error_stay_valid() {
        let mut s = fixture::snapshot();
        s.close_wait_histogram.sum_secs = f64::NAN;
        s.close_wait_histogram.bounds_secs.push(f64::INFINITY);
        s.kernel = crate::status::model::KernelView {
            available: false,
            error: Some("permission denied\u{0}\"".into()),
            ..Default::default()
        };
        let v = parse(&doc(&s)).unwrap();
        assert_eq!(
            v.get("kernel").get("error").str(),
            "permission denied\u{0}\""
        );
        assert_eq!(v.get("close_wait_histogram").get("sum_seconds").num(), 0.0);
        assert!(parse(&doc(&Default::default())).is_ok());
    }

    #[test]
    fn leak_report_and_history_series() {
        let out = doc(&fixture::snapshot());
        assert!(!out.contains("<script>") && !out.contains("G\"ET<"));
        let v = parse(&out).unwrap();
        let leaks = v.get("leaks").arr();
        assert_eq!(leaks.len(), 2);
        assert_eq!(
            leaks[0].get("vhost").str(),
            format!("{}:80", fixture::HOSTILE_VHOST)
        );
        let paths = leaks[0].get("paths").arr();
        let p = &paths[1];
        assert_eq!(p.get("method").str(), fixture::HOSTILE_METHOD);
        assert_eq!(p.get("path").str(), fixture::HOSTILE_PATH);
        assert_eq!(p.get("count").num(), 7.0);
        assert_eq!(p.get("error").num(), 0.0);
        assert_eq!(p.get("last_seen_age_ms").num(), 12_000.0);
        assert_eq!(paths[0].get("error").num(), 4.0);
        let c = &leaks[1].get("clients").arr()[0];
        assert_eq!(c.get("client").str(), "2001:db8::1");
        assert_eq!(
            c.get("last_seen_unix_ms").num(),
            (fixture::NOW_UNIX_MS - 3_000) as f64
        );
        let h = v.get("history");
        assert_eq!(h.get("period_seconds").num(), 5.0);
        assert_eq!(h.get("capacity").num(), 720.0);
        let series = |k: &str| -> Vec<f64> { h.get(k).arr().iter().map(V::num).collect() };
        let t0 = fixture::NOW_UNIX_MS as f64;
        assert_eq!(
            series("timestamps_unix_ms"),
            [t0 - 600_000.0, t0 - 595_000.0, t0 - 590_000.0, t0 - 5_000.0]
        );
        assert_eq!(series("close_wait"), [2.0, 3.0, 1.0, 0.0]);
        assert_eq!(series("open"), [5.0, 6.0, 4.0, 4.0]);
        assert_eq!(series("untracked"), [1.0; 4]);
        assert_eq!(series("guard_closes"), [0.0, 2.0, 0.0, 1.0]);
        assert_eq!(series("rescue_closes"), [0.0, 1.0, 0.0, 0.0]);
        let empty = parse(&doc(&Default::default())).unwrap();
        assert!(empty.get("leaks").arr().is_empty());
        assert!(empty
            .get("history")
            .get("timestamps_unix_ms")
            .arr()
            .is_empty());
    }
}
