//! Query strings for the links a page offers (next page, another filter, everything): a
//! `Query` written back out, so a link keeps every parameter it does not change. Values are
//! percent-encoded here; HTML attributes still need `escape::html` on top (`&` between
//! parameters).

use super::params::encode;
use super::query::{Format, Limit, Query, Start, DEFAULT_LIMIT};

/// The query string (without `?`) that `parse` reads back as `q`.
pub fn args(q: &Query) -> String {
    let mut parts: Vec<String> = Vec::new();
    if q.format != Format::Html {
        parts.push(q.format.name().to_string());
    }
    if let Some(n) = q.refresh {
        parts.push(format!("refresh={n}"));
    }
    if let Some(v) = &q.filter.vhost {
        parts.push(format!("vhost={}", encode(v)));
    }
    if !q.filter.states.is_empty() {
        let names: Vec<&str> = q.filter.states.iter().map(|s| s.name()).collect();
        parts.push(format!("state={}", names.join(",")));
    }
    if let Some(c) = &q.filter.client {
        parts.push(format!("client={}", encode(&c.text)));
    }
    match q.limit {
        Limit::All => parts.push("all".to_string()),
        Limit::Rows(DEFAULT_LIMIT) => {}
        Limit::Rows(n) => parts.push(format!("limit={n}")),
    }
    match q.start {
        Start::First => {}
        Start::Page(p) => parts.push(format!("page={p}")),
        Start::Offset(o) => parts.push(format!("offset={o}")),
    }
    parts.join("&")
}

/// `q` starting at `offset` instead.
pub fn at_offset(q: &Query, offset: usize) -> Query {
    Query {
        start: Start::at(offset, q.limit),
        ..q.clone()
    }
}

/// `q` listing every row from the start.
pub fn everything(q: &Query) -> Query {
    Query {
        limit: Limit::All,
        start: Start::First,
        ..q.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::query::parse;

    fn round_trip(s: &str) {
        let q = parse(Some(s)).unwrap();
        let back = args(&q);
        assert_eq!(parse(Some(&back)).unwrap(), q, "{s} -> {back}");
    }

    #[test]
    fn args_read_back_as_the_same_query() {
        for s in [
            "",
            "json",
            "refresh=5",
            "vhost=a.test%3A80&state=keepalive,reading&client=10.0.&limit=20&page=3",
            "json&all&client=%5B::1%5D",
            "offset=7",
            "vhost=%3Cb%3E%22x%22&state=close_wait",
            "auto&limit=100&page=1",
        ] {
            round_trip(s);
        }
        assert_eq!(args(&parse(None).unwrap()), "");
        assert_eq!(
            args(&parse(Some("limit=100&page=1&json&state=keepalive")).unwrap()),
            "json&state=keepalive"
        );
    }

    #[test]
    fn hostile_values_are_encoded() {
        let q = parse(Some("vhost=%3Cb%3E%22x%22%26y%3Dz")).unwrap();
        assert_eq!(args(&q), "vhost=%3Cb%3E%22x%22%26y%3Dz");
    }

    #[test]
    fn offsets_and_everything() {
        let q = parse(Some("json&limit=50&state=keepalive")).unwrap();
        assert_eq!(
            args(&at_offset(&q, 100)),
            "json&state=keepalive&limit=50&page=3"
        );
        assert_eq!(
            args(&at_offset(&q, 75)),
            "json&state=keepalive&limit=50&offset=75"
        );
        assert_eq!(args(&at_offset(&q, 0)), "json&state=keepalive&limit=50");
        let p = parse(Some("page=4&client=1.2.3.4")).unwrap();
        assert_eq!(args(&everything(&p)), "client=1.2.3.4&all");
    }
}
