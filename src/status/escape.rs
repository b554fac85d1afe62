//! Escapers for every status format, plus number formatting they share.
//!
//! Strings in the snapshot are raw (client addresses, Host names, request paths, error text),
//! so each renderer must pass them through the escaper for the format they land in. Keeping
//! them in one place lets the tests below pin down exactly what each format can contain.

use std::fmt::Write;

/// HTML text and attribute values: the five characters that can open markup or end a quoted
/// attribute become entities.
pub fn html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// A complete JSON string literal, quotes included.
///
/// Control characters (C0, DEL, C1) become `\u00XX`; U+2028/U+2029 are escaped because
/// JavaScript treats them as line ends; `<`, `>` and `&` are escaped too so the document stays
/// inert even if something sniffs it as HTML.
pub fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => push_u_escape(&mut out, c),
            c if c.is_control() => push_u_escape(&mut out, c),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn push_u_escape(out: &mut String, c: char) {
    // Every character routed here is in the Basic Multilingual Plane, so 4 hex digits suffice.
    let _ = write!(out, "\\u{:04x}", c as u32);
}

/// A Prometheus label value (the text between the double quotes).
///
/// The exposition format defines escapes for backslash, double quote and newline. Other
/// control characters are legal there but can fool line-oriented tools and terminals
/// (a bare CR), so they become '?'.
pub fn prom_label(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c if is_line_breaking(c) => out.push('?'),
            c => out.push(c),
        }
    }
    out
}

/// A `?auto` value: it runs to the end of the line, so anything that could end the line (or
/// hide part of it) becomes '?'. A client can never forge a `Key: Value` line.
pub fn auto_value(s: &str) -> String {
    s.chars()
        .map(|c| if is_line_breaking(c) { '?' } else { c })
        .collect()
}

/// A single `?auto` token inside a line of `key=value` pairs (the vhost name): whitespace and
/// control characters become '_', so the token can neither split the line nor end it.
pub fn auto_token(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_whitespace() || is_line_breaking(c) {
                '_'
            } else {
                c
            }
        })
        .collect()
}

/// Control characters (C0 incl. CR/LF, DEL, C1 incl. NEL) and the Unicode line/paragraph
/// separators.
fn is_line_breaking(c: char) -> bool {
    c.is_control() || c == '\u{2028}' || c == '\u{2029}'
}

/// A float as a plain decimal both JSON and Prometheus parse (`0.1`, `1`, `30`).
/// Rust's `Display` for f64 never uses exponents; NaN and infinities become `0` because
/// neither JSON nor our consumers expect them.
pub fn float(v: f64) -> String {
    if v.is_finite() {
        format!("{}", v)
    } else {
        "0".to_string()
    }
}

/// A float with exactly `decimals` places (for `?auto`), non-finite values as zero.
pub fn float_fixed(v: f64, decimals: usize) -> String {
    let v = if v.is_finite() { v } else { 0.0 };
    format!("{:.*}", decimals, v)
}

/// Milliseconds as seconds with three decimals, exact (no float rounding): 1500 -> "1.5".
pub fn ms_as_secs(ms: u64) -> String {
    let (whole, frac) = (ms / 1000, ms % 1000);
    if frac == 0 {
        whole.to_string()
    } else {
        let f = format!("{:03}", frac);
        format!("{}.{}", whole, f.trim_end_matches('0'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_escapes_all_five() {
        assert_eq!(
            html(r#"<a href="x" title='y'>&</a>"#),
            "&lt;a href=&quot;x&quot; title=&#39;y&#39;&gt;&amp;&lt;/a&gt;"
        );
        assert_eq!(html("plain/path é"), "plain/path é");
    }

    #[test]
    fn json_escapes_quotes_controls_and_separators() {
        assert_eq!(json_string("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(json_string("\n\r\t"), r#""\n\r\t""#);
        assert_eq!(json_string("\u{1}\u{1f}\u{7f}"), r#""\u0001\u001f\u007f""#);
        assert_eq!(json_string("\u{85}"), r#""\u0085""#);
        assert_eq!(json_string("\u{2028}\u{2029}"), r#""\u2028\u2029""#);
        assert_eq!(json_string("<s>&"), r#""\u003cs\u003e\u0026""#);
        assert_eq!(json_string("é✓"), "\"é✓\"");
    }

    #[test]
    fn json_output_has_no_raw_control_chars() {
        let all: String = (0u32..0x300).filter_map(char::from_u32).collect();
        let out = json_string(&all);
        assert!(!out.chars().any(|c| c.is_control()));
    }

    #[test]
    fn prom_label_escapes_and_stays_one_line() {
        assert_eq!(prom_label("a\\b\"c\nd"), r#"a\\b\"c\nd"#);
        assert_eq!(prom_label("x\ry\u{0}z"), "x?y?z");
        assert!(!prom_label("\n\r\u{2028}").contains(['\n', '\r', '\u{2028}']));
    }

    #[test]
    fn auto_value_cannot_forge_a_line() {
        assert_eq!(auto_value("evil\nAccepted: 999\r"), "evil?Accepted: 999?");
        assert_eq!(auto_value("a\u{85}b\u{2028}c"), "a?b?c");
        assert_eq!(auto_value("Apache/2.4 (Debian)"), "Apache/2.4 (Debian)");
    }

    #[test]
    fn auto_token_has_no_spaces_or_controls() {
        assert_eq!(auto_token("a b\tc\nd"), "a_b_c_d");
        assert_eq!(auto_token("www.example.com"), "www.example.com");
    }

    #[test]
    fn floats_are_plain_and_finite() {
        assert_eq!(float(0.1), "0.1");
        assert_eq!(float(1.0), "1");
        assert_eq!(float(30.0), "30");
        assert_eq!(float(1e21), "1000000000000000000000");
        assert_eq!(float(f64::NAN), "0");
        assert_eq!(float(f64::INFINITY), "0");
        assert_eq!(float_fixed(2.5, 3), "2.500");
        assert_eq!(float_fixed(f64::NEG_INFINITY, 3), "0.000");
    }

    #[test]
    fn ms_as_secs_is_exact() {
        assert_eq!(ms_as_secs(0), "0");
        assert_eq!(ms_as_secs(1500), "1.5");
        assert_eq!(ms_as_secs(1), "0.001");
        assert_eq!(ms_as_secs(30_000), "30");
    }
}
