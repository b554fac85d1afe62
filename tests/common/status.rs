//! Parsers for the status page's machine formats: `?auto` and `?metrics`.

use std::collections::HashMap;

/// Every key `?auto` must carry exactly once, in the contract's order.
pub const AUTO_KEYS: &[&str] = &[
    "ServerVersion",
    "ServerMPM",
    "ModuleVersion",
    "Uptime",
    "RestartGeneration",
    "SlotsTotal",
    "SlotsUsed",
    "ScanIntervalMs",
    "Accepted",
    "Requests",
    "Closed",
    "Open",
    "OpenReading",
    "OpenHandling",
    "OpenKeepalive",
    "OpenClosing",
    "OpenCloseWait",
    "CloseWaitNow",
    "ForceClosedGuard",
    "ForceClosedRescue",
    "Reported",
    "Reclaimed",
    "Untracked",
    "KernelView",
    "KernelCloseWaitTracked",
    "KernelCloseWaitUntracked",
    "KernelCloseWaitLeaked",
    "CloseWaitSecondsCount",
    "CloseWaitSecondsSum",
];

/// Keys that may repeat (one line per vhost / child).
pub const REPEATED_KEYS: &[&str] = &["Vhost", "Child", "Leaked", "LeakPath", "LeakClient"];

/// A parsed `?auto` page.
#[derive(Clone, Debug, Default)]
pub struct StatusAuto {
    pub raw: String,
    pub kv: HashMap<String, String>,
    /// Values of `Vhost:` lines, in order.
    pub vhost_lines: Vec<String>,
    /// Values of `Child:` lines, in order.
    pub child_lines: Vec<String>,
    pub leaked_lines: Vec<String>,
    /// Values of `LeakPath:` / `LeakClient:` lines (the leak report), in order.
    pub leak_path_lines: Vec<String>,
    pub leak_client_lines: Vec<String>,
    /// Keys that appeared more than once although they should not (format bug).
    pub duplicate_keys: Vec<String>,
    /// Lines that are not `Key: Value`.
    pub malformed_lines: Vec<String>,
}

impl StatusAuto {
    pub fn parse(text: &str) -> StatusAuto {
        let mut s = StatusAuto {
            raw: text.to_string(),
            ..Default::default()
        };
        for line in text.lines() {
            if line.trim().is_empty() {
                continue;
            }
            let Some((k, v)) = line.split_once(": ") else {
                // mod_status allows "Key:" with empty value too.
                if let Some(k) = line.strip_suffix(':') {
                    s.kv.insert(k.to_string(), String::new());
                } else {
                    s.malformed_lines.push(line.to_string());
                }
                continue;
            };
            let (k, v) = (k.trim(), v.trim());
            match k {
                "Vhost" => s.vhost_lines.push(v.to_string()),
                "Child" => s.child_lines.push(v.to_string()),
                "Leaked" => s.leaked_lines.push(v.to_string()),
                "LeakPath" => s.leak_path_lines.push(v.to_string()),
                "LeakClient" => s.leak_client_lines.push(v.to_string()),
                _ => {
                    if s.kv.insert(k.to_string(), v.to_string()).is_some() {
                        s.duplicate_keys.push(k.to_string());
                    }
                }
            }
        }
        s
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.kv.get(key).map(String::as_str)
    }

    /// A numeric key; panics (with the page) if missing or not a number.
    pub fn num(&self, key: &str) -> u64 {
        let v = self
            .get(key)
            .unwrap_or_else(|| panic!("?auto has no {key:?} line:\n{}", self.raw));
        v.parse::<u64>()
            .unwrap_or_else(|_| panic!("?auto {key}: {v:?} is not a whole number:\n{}", self.raw))
    }

    pub fn vhosts(&self) -> Vec<KvLine> {
        self.vhost_lines.iter().map(|l| KvLine::parse(l)).collect()
    }

    pub fn children(&self) -> Vec<KvLine> {
        self.child_lines.iter().map(|l| KvLine::parse(l)).collect()
    }

    /// The `Vhost:` line whose name is exactly `name_port` (e.g. `b.test:8080`).
    pub fn vhost(&self, name_port: &str) -> Option<KvLine> {
        self.vhosts().into_iter().find(|v| v.id == name_port)
    }
}

/// `<id> K=V K=V ...` (the shape of `Vhost:` and `Child:` values).
#[derive(Clone, Debug)]
pub struct KvLine {
    pub id: String,
    pub fields: HashMap<String, String>,
    pub raw: String,
}

impl KvLine {
    pub fn parse(line: &str) -> KvLine {
        let mut it = line.split_whitespace();
        let id = it.next().unwrap_or("").to_string();
        let fields = it
            .filter_map(|t| t.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        KvLine {
            id,
            fields,
            raw: line.to_string(),
        }
    }

    pub fn get(&self, k: &str) -> Option<&str> {
        self.fields.get(k).map(String::as_str)
    }

    pub fn num(&self, k: &str) -> u64 {
        let v = self
            .get(k)
            .unwrap_or_else(|| panic!("no {k}= in line {:?}", self.raw));
        v.parse()
            .unwrap_or_else(|_| panic!("{k}={v:?} is not a whole number in {:?}", self.raw))
    }
}

/// One Prometheus sample line.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, k: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses the Prometheus text exposition format (0.0.4) strictly enough to catch broken
/// escaping: metric and label names, quoted label values with `\\`, `\"`, `\n` escapes only,
/// a float value, optional timestamp. `# HELP` / `# TYPE` lines are checked for shape.
pub fn parse_metrics(text: &str) -> Result<Vec<Sample>, String> {
    fn is_name(s: &str, colon_ok: bool) -> bool {
        let mut chars = s.chars();
        match chars.next() {
            Some(c) if c.is_ascii_alphabetic() || c == '_' || (colon_ok && c == ':') => {}
            _ => return false,
        }
        chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || (colon_ok && c == ':'))
    }
    fn parse_value(v: &str) -> Option<f64> {
        match v {
            "+Inf" | "Inf" => Some(f64::INFINITY),
            "-Inf" => Some(f64::NEG_INFINITY),
            "NaN" => Some(f64::NAN),
            _ => v.parse().ok(),
        }
    }
    let mut out = Vec::new();
    for (no, line) in text.lines().enumerate() {
        let no = no + 1;
        if line.trim().is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix('#') {
            let mut parts = rest.trim_start().splitn(3, ' ');
            match parts.next() {
                Some("TYPE") => {
                    let name = parts.next().unwrap_or("");
                    let ty = parts.next().unwrap_or("").trim();
                    if !is_name(name, true)
                        || !["counter", "gauge", "histogram", "summary", "untyped"].contains(&ty)
                    {
                        return Err(format!("line {no}: bad TYPE line {line:?}"));
                    }
                }
                Some("HELP") if !is_name(parts.next().unwrap_or(""), true) => {
                    return Err(format!("line {no}: bad HELP line {line:?}"));
                }
                _ => {} // plain comment
            }
            continue;
        }
        let b = line.as_bytes();
        let mut i = 0;
        while i < b.len() && b[i] != b'{' && b[i] != b' ' {
            i += 1;
        }
        let name = &line[..i];
        if !is_name(name, true) {
            return Err(format!("line {no}: bad metric name {name:?} in {line:?}"));
        }
        let mut labels = Vec::new();
        if i < b.len() && b[i] == b'{' {
            i += 1;
            loop {
                if i < b.len() && b[i] == b'}' {
                    i += 1;
                    break;
                }
                let ls = i;
                while i < b.len() && b[i] != b'=' {
                    i += 1;
                }
                let lname = &line[ls..i];
                if !is_name(lname, false) {
                    return Err(format!("line {no}: bad label name {lname:?} in {line:?}"));
                }
                i += 1;
                if i >= b.len() || b[i] != b'"' {
                    return Err(format!("line {no}: label value not quoted in {line:?}"));
                }
                i += 1;
                let mut val = Vec::new();
                loop {
                    if i >= b.len() {
                        return Err(format!("line {no}: unterminated label value in {line:?}"));
                    }
                    match b[i] {
                        b'"' => {
                            i += 1;
                            break;
                        }
                        b'\\' => {
                            match b.get(i + 1) {
                                Some(b'\\') => val.push(b'\\'),
                                Some(b'"') => val.push(b'"'),
                                Some(b'n') => val.push(b'\n'),
                                _ => {
                                    return Err(format!(
                                        "line {no}: invalid escape in label value in {line:?}"
                                    ))
                                }
                            }
                            i += 2;
                        }
                        c => {
                            val.push(c);
                            i += 1;
                        }
                    }
                }
                labels.push((
                    lname.to_string(),
                    String::from_utf8_lossy(&val).into_owned(),
                ));
                match b.get(i) {
                    Some(b',') => i += 1,
                    Some(b'}') => {}
                    _ => return Err(format!("line {no}: expected ',' or '}}' in {line:?}")),
                }
            }
        }
        let rest = line[i..].trim();
        let mut parts = rest.split_whitespace();
        let value = parts
            .next()
            .and_then(parse_value)
            .ok_or_else(|| format!("line {no}: bad sample value in {line:?}"))?;
        if let Some(ts) = parts.next() {
            if ts.parse::<i64>().is_err() {
                return Err(format!("line {no}: bad timestamp in {line:?}"));
            }
        }
        if parts.next().is_some() {
            return Err(format!("line {no}: trailing text in {line:?}"));
        }
        out.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    Ok(out)
}
