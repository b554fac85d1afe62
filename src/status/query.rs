//! Query-string parsing for the status handler, mod_status style.
//!
//! Tokens are separated by `&` (or `;`): `auto`, `json`, `metrics`, `refresh=N`, `refresh`,
//! and for the connection list `vhost=`, `state=`, `client=`, `limit=`, `all`, `page=`,
//! `offset=` (see `Filter`, `Limit`, `Start`). Unknown tokens are ignored, as mod_status
//! does, so links with extra parameters (cache busters, `notable`) keep working; a format
//! token may carry a value (`auto=1`), which is ignored. An empty value (`vhost=`, as an
//! empty form field sends it) is the same as leaving the parameter out. The raw query is
//! never echoed in an error: the handler puts the message in a response body.

use std::fmt;

use super::params::{self, ClientFilter};
use crate::status::model::ShownState;

/// Used for a bare `refresh`. mod_status has no default of its own (it needs a value), so we
/// pick one that is gentle on the server yet still feels live: 10 seconds.
pub const DEFAULT_REFRESH_SECS: u32 = 10;
/// An hour; anything longer is almost certainly a typo.
pub const MAX_REFRESH_SECS: u32 = 3600;
/// Connections listed besides those that need attention when no `limit=` is given: a page a
/// person can read, and a body that stays small at 10,000 connections.
pub const DEFAULT_LIMIT: usize = 100;
/// The largest `limit=N`; more rows than this is what `all` is for.
pub const MAX_LIMIT: usize = 10_000;
/// The largest `page=` and `offset=`: the table holds at most 1,000,000 slots
/// (`SocketGuardSlots`), so nothing lies beyond.
pub const MAX_PAGE: usize = 1_000_000;
pub const MAX_OFFSET: usize = 1_000_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Html,
    Auto,
    Json,
    Metrics,
}

impl Format {
    /// The query token that selects this format (`html` has none; it is the default).
    pub fn name(self) -> &'static str {
        match self {
            Format::Html => "html",
            Format::Auto => "auto",
            Format::Json => "json",
            Format::Metrics => "metrics",
        }
    }
}

/// Which connections are listed (HTML and JSON). Every part that is set must match.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// `vhost=NAME` (any port) or `vhost=NAME:PORT`, compared without regard to case.
    pub vhost: Option<String>,
    /// `state=NAME[,NAME...]`: any of these display states; empty means every state.
    pub states: Vec<ShownState>,
    /// `client=`: an address, `ip:port`, or the start of an address.
    pub client: Option<ClientFilter>,
}

impl Filter {
    pub fn is_empty(&self) -> bool {
        self.vhost.is_none() && self.states.is_empty() && self.client.is_none()
    }
}

/// How many of the connections that do not need attention are listed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    Rows(usize),
    /// `all` or `limit=all`: every row (for tools; the page can be megabytes).
    All,
}

impl Limit {
    pub fn rows(self) -> Option<usize> {
        match self {
            Limit::Rows(n) => Some(n),
            Limit::All => None,
        }
    }
}

/// Where the bounded list starts, as the query said it (links repeat it the same way).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Start {
    #[default]
    First,
    /// `page=N`, 1-based, pages of `limit` rows.
    Page(usize),
    /// `offset=N`: rows skipped.
    Offset(usize),
}

impl Start {
    /// The start for `offset` rows in, as a page number when it falls on a page boundary.
    pub fn at(offset: usize, limit: Limit) -> Start {
        match limit {
            _ if offset == 0 => Start::First,
            Limit::Rows(n) if offset.is_multiple_of(n) => Start::Page(offset / n + 1),
            _ => Start::Offset(offset),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Query {
    pub format: Format,
    /// Seconds between reloads; only the HTML page uses it, other formats ignore it.
    pub refresh: Option<u32>,
    pub filter: Filter,
    pub limit: Limit,
    pub start: Start,
}

impl Default for Query {
    fn default() -> Self {
        Query {
            format: Format::Html,
            refresh: None,
            filter: Filter::default(),
            limit: Limit::Rows(DEFAULT_LIMIT),
            start: Start::First,
        }
    }
}

impl Query {
    /// Rows of the bounded list to skip.
    pub fn offset(&self) -> usize {
        match (self.start, self.limit) {
            (Start::First, _) => 0,
            (Start::Page(p), Limit::Rows(n)) => (p - 1).saturating_mul(n),
            // `parse` refuses page > 1 with `all`.
            (Start::Page(_), Limit::All) => 0,
            (Start::Offset(o), _) => o,
        }
    }
}

/// Why a query string was refused (the handler answers 400 with this text). Messages name
/// parameters and limits, never what the client sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueryError {
    /// `refresh=` with something other than a whole number of seconds in range.
    BadRefresh,
    /// Two different output formats asked for at once.
    ConflictingFormats(Format, Format),
    BadLimit,
    BadPage,
    BadOffset,
    UnknownState,
    BadVhost,
    BadClient,
    /// A value longer than `params::MAX_VALUE_BYTES` (the parameter's name).
    TooLong(&'static str),
    /// A value that is not valid percent-encoded UTF-8.
    BadEncoding(&'static str),
    /// The same parameter twice with different values.
    Repeated(&'static str),
    PageAndOffset,
    PageWithAll,
}

impl fmt::Display for QueryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            QueryError::BadRefresh => write!(
                f,
                "refresh must be a whole number of seconds from 1 to {MAX_REFRESH_SECS}"
            ),
            QueryError::ConflictingFormats(a, b) => write!(
                f,
                "choose one output format: {} and {} were both requested",
                a.name(),
                b.name()
            ),
            QueryError::BadLimit => write!(
                f,
                "limit must be a whole number from 1 to {MAX_LIMIT}, or all"
            ),
            QueryError::BadPage => {
                write!(f, "page must be a whole number from 1 to {MAX_PAGE}")
            }
            QueryError::BadOffset => {
                write!(f, "offset must be a whole number from 0 to {MAX_OFFSET}")
            }
            QueryError::UnknownState => write!(
                f,
                "state must be one or more of {}, separated by commas",
                params::STATE_NAMES
            ),
            QueryError::BadVhost => write!(
                f,
                "vhost must be a server name or name:port of at most {} characters, without \
                 spaces or control characters",
                params::MAX_VHOST_CHARS
            ),
            QueryError::BadClient => f.write_str(
                "client must be an IP address, ip:port, or the start of an address \
                 (digits, a-f, '.', ':', '[', ']')",
            ),
            QueryError::TooLong(name) => write!(
                f,
                "the value of {name} is longer than {} bytes",
                params::MAX_VALUE_BYTES
            ),
            QueryError::BadEncoding(name) => {
                write!(f, "the value of {name} is not valid percent-encoded UTF-8")
            }
            QueryError::Repeated(name) => {
                write!(f, "{name} was given more than once with different values")
            }
            QueryError::PageAndOffset => f.write_str("give page or offset, not both"),
            QueryError::PageWithAll => f.write_str(
                "page needs a number of rows (limit=N): with all, every row is on page 1",
            ),
        }
    }
}

impl std::error::Error for QueryError {}

/// What the tokens said, before the parts that depend on each other are checked.
#[derive(Default)]
struct Seen {
    format: Option<Format>,
    limit: Option<Limit>,
    page: Option<usize>,
    offset: Option<usize>,
    vhost: Option<String>,
    states: Option<Vec<ShownState>>,
    client: Option<ClientFilter>,
}

/// Parses `r->args` (None when the URL had no `?`).
pub fn parse(args: Option<&str>) -> Result<Query, QueryError> {
    let mut q = Query::default();
    let mut seen = Seen::default();
    for token in args.unwrap_or("").split(['&', ';']) {
        let (key, value) = match token.split_once('=') {
            Some((k, v)) => (k, v),
            None => (token, ""),
        };
        match key {
            "auto" => set_format(&mut seen.format, Format::Auto)?,
            "json" => set_format(&mut seen.format, Format::Json)?,
            "metrics" => set_format(&mut seen.format, Format::Metrics)?,
            "refresh" => q.refresh = Some(parse_refresh(value, token.contains('='))?),
            "all" => set_once(&mut seen.limit, Limit::All, "limit")?,
            _ => list_param(&mut seen, key, value)?,
        }
    }
    q.format = seen.format.unwrap_or(Format::Html);
    finish(q, seen)
}

/// The connection-list parameters (`vhost`, `state`, `client`, `limit`, `page`, `offset`);
/// anything else is ignored. An empty value counts as not given.
fn list_param(seen: &mut Seen, key: &str, raw: &str) -> Result<(), QueryError> {
    let Some(name) = params::NAMES.iter().find(|n| **n == key) else {
        return Ok(());
    };
    let value = params::decode(raw, name)?;
    if value.is_empty() {
        return Ok(());
    }
    match *name {
        "vhost" => set_once(&mut seen.vhost, params::vhost(&value)?, name),
        "state" => set_once(&mut seen.states, params::states(&value)?, name),
        "client" => set_once(&mut seen.client, params::client(&value)?, name),
        "limit" => set_once(&mut seen.limit, params::limit(&value)?, name),
        "page" => set_once(&mut seen.page, params::page(&value)?, name),
        _ => set_once(&mut seen.offset, params::offset(&value)?, name),
    }
}

/// Checks what depends on more than one parameter and fills in the query.
fn finish(mut q: Query, seen: Seen) -> Result<Query, QueryError> {
    q.limit = seen.limit.unwrap_or(q.limit);
    q.start = match (seen.page, seen.offset) {
        (Some(_), Some(_)) => return Err(QueryError::PageAndOffset),
        (Some(p), None) if p > 1 && q.limit == Limit::All => return Err(QueryError::PageWithAll),
        (Some(1), None) | (None, None) | (None, Some(0)) => Start::First,
        (Some(p), None) => Start::Page(p),
        (None, Some(o)) => Start::Offset(o),
    };
    q.filter = Filter {
        vhost: seen.vhost,
        states: seen.states.unwrap_or_default(),
        client: seen.client,
    };
    Ok(q)
}

/// Repeating the same format is harmless; two different ones are ambiguous.
fn set_format(slot: &mut Option<Format>, f: Format) -> Result<(), QueryError> {
    match *slot {
        Some(prev) if prev != f => Err(QueryError::ConflictingFormats(prev, f)),
        _ => {
            *slot = Some(f);
            Ok(())
        }
    }
}

/// The same parameter twice is harmless when the values agree, and refused when they do not
/// (the page could honour only one of them).
fn set_once<T: PartialEq>(
    slot: &mut Option<T>,
    v: T,
    name: &'static str,
) -> Result<(), QueryError> {
    match slot {
        Some(prev) if *prev != v => Err(QueryError::Repeated(name)),
        _ => {
            *slot = Some(v);
            Ok(())
        }
    }
}

/// Digits only (no sign, no spaces, no units), 1..=MAX_REFRESH_SECS; a bare `refresh` (no
/// `=`) means the default.
fn parse_refresh(v: &str, has_value: bool) -> Result<u32, QueryError> {
    if !has_value {
        return Ok(DEFAULT_REFRESH_SECS);
    }
    match params::whole_number(v) {
        Some(n) if (1..=MAX_REFRESH_SECS as usize).contains(&n) => Ok(n as u32),
        _ => Err(QueryError::BadRefresh),
    }
}

/// The Content-Type header value for each format.
pub fn content_type(f: Format) -> &'static str {
    match f {
        Format::Html => "text/html; charset=utf-8",
        Format::Auto => "text/plain; charset=utf-8",
        Format::Json => "application/json",
        Format::Metrics => "text/plain; version=0.0.4; charset=utf-8",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::params::ClientMatch;
    use std::net::{IpAddr, Ipv4Addr};

    fn ok(args: Option<&str>) -> (Format, Option<u32>) {
        let q = parse(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        (q.format, q.refresh)
    }

    fn q(args: &str) -> Query {
        parse(Some(args)).unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    fn err(args: &str) -> QueryError {
        parse(Some(args)).expect_err(args)
    }

    #[test]
    fn formats() {
        assert_eq!(ok(None), (Format::Html, None));
        assert_eq!(ok(Some("")), (Format::Html, None));
        assert_eq!(ok(Some("auto")), (Format::Auto, None));
        assert_eq!(ok(Some("json")), (Format::Json, None));
        assert_eq!(ok(Some("metrics")), (Format::Metrics, None));
        assert_eq!(ok(Some("auto&auto")), (Format::Auto, None));
    }

    #[test]
    fn refresh() {
        assert_eq!(ok(Some("refresh=5")), (Format::Html, Some(5)));
        assert_eq!(
            ok(Some("refresh")),
            (Format::Html, Some(DEFAULT_REFRESH_SECS))
        );
        assert_eq!(ok(Some("auto&refresh=2")), (Format::Auto, Some(2)));
        assert_eq!(ok(Some("refresh=3600;json")), (Format::Json, Some(3600)));
        assert_eq!(ok(Some("refresh=05")), (Format::Html, Some(5)));
    }

    #[test]
    fn bad_refresh_is_an_error_that_does_not_echo_input() {
        for bad in [
            "refresh=abc",
            "refresh=",
            "refresh=0",
            "refresh=3601",
            "refresh=-1",
            "refresh=+5",
            "refresh=5s",
            "refresh=99999999999999999999",
            "refresh=<script>",
        ] {
            let e = parse(Some(bad)).unwrap_err();
            assert_eq!(e, QueryError::BadRefresh, "{bad}");
            assert!(!e.to_string().contains('<'));
            assert!(!e.to_string().contains("abc"));
        }
    }

    #[test]
    fn two_formats_conflict() {
        let e = parse(Some("auto&json")).unwrap_err();
        assert_eq!(
            e,
            QueryError::ConflictingFormats(Format::Auto, Format::Json)
        );
        assert!(e.to_string().contains("auto and json"));
        assert!(parse(Some("metrics;auto")).is_err());
    }

    #[test]
    fn unknown_tokens_are_ignored() {
        assert_eq!(ok(Some("notable&x=<y>&&auto&foo")), (Format::Auto, None));
        assert_eq!(ok(Some("AUTO")), (Format::Html, None));
        assert_eq!(ok(Some("autox")), (Format::Html, None));
        assert_eq!(ok(Some("json=1")), (Format::Json, None));
        // Parameter names are case-sensitive like the format tokens: VHOST is unknown.
        assert_eq!(q("VHOST=<x>&Limit=0").filter, Filter::default());
    }

    #[test]
    fn defaults_bound_the_list() {
        let d = q("");
        assert_eq!(d.limit, Limit::Rows(DEFAULT_LIMIT));
        assert_eq!((d.start, d.offset()), (Start::First, 0));
        assert!(d.filter.is_empty());
        assert_eq!(d, Query::default());
    }

    #[test]
    fn limit_all_page_and_offset() {
        assert_eq!(q("limit=1").limit, Limit::Rows(1));
        assert_eq!(q("limit=10000").limit, Limit::Rows(MAX_LIMIT));
        assert_eq!(q("limit=all").limit, Limit::All);
        assert_eq!(q("json&all").limit, Limit::All);
        assert_eq!(q("all&limit=all").limit, Limit::All);
        let p = q("page=3&limit=50");
        assert_eq!((p.start, p.offset()), (Start::Page(3), 100));
        assert_eq!(q("page=2").offset(), DEFAULT_LIMIT);
        assert_eq!(q("page=1").start, Start::First);
        assert_eq!(q("page=1&all").offset(), 0);
        let o = q("offset=7&limit=5");
        assert_eq!((o.start, o.offset()), (Start::Offset(7), 7));
        assert_eq!(q("offset=0").start, Start::First);
        assert_eq!(q("offset=1000000&all").offset(), MAX_OFFSET);
        // Leading zeros are still a number.
        assert_eq!(q("limit=007").limit, Limit::Rows(7));
    }

    #[test]
    fn bad_paging_values_are_refused() {
        for (bad, e) in [
            ("limit=0", QueryError::BadLimit),
            ("limit=abc", QueryError::BadLimit),
            ("limit=10001", QueryError::BadLimit),
            ("limit=-1", QueryError::BadLimit),
            ("limit=1e3", QueryError::BadLimit),
            ("limit=ALL", QueryError::BadLimit),
            ("limit=99999999999999999999999", QueryError::BadLimit),
            ("page=0", QueryError::BadPage),
            ("page=-1", QueryError::BadPage),
            ("page=1.5", QueryError::BadPage),
            ("page=1000001", QueryError::BadPage),
            ("offset=-1", QueryError::BadOffset),
            ("offset=1000001", QueryError::BadOffset),
            ("offset=%2B1", QueryError::BadOffset),
            ("page=2&offset=3", QueryError::PageAndOffset),
            ("page=2&all", QueryError::PageWithAll),
            ("limit=5&limit=6", QueryError::Repeated("limit")),
            ("all&limit=6", QueryError::Repeated("limit")),
            ("page=2;page=3", QueryError::Repeated("page")),
        ] {
            assert_eq!(err(bad), e, "{bad}");
        }
        // The same value twice is harmless.
        assert_eq!(q("limit=5&limit=5").limit, Limit::Rows(5));
    }

    #[test]
    fn filters() {
        let f = q("vhost=www.example.test%3A8080&state=keepalive,close_wait&client=10.0.").filter;
        assert_eq!(f.vhost.as_deref(), Some("www.example.test:8080"));
        assert_eq!(f.states, vec![ShownState::Keepalive, ShownState::CloseWait]);
        let c = f.client.unwrap();
        assert_eq!(c.text, "10.0.");
        assert_eq!(c.matcher, ClientMatch::Prefix("10.0.".into()));
        let exact = q("client=127.0.0.1").filter.client.unwrap();
        assert_eq!(
            exact.matcher,
            ClientMatch::Ip(IpAddr::V4(Ipv4Addr::LOCALHOST))
        );
        assert!(matches!(
            q("client=%5B::1%5D:8080").filter.client.unwrap().matcher,
            ClientMatch::Socket(_)
        ));
        assert_eq!(
            q("state=force_closed&state=force_closed").filter.states,
            vec![ShownState::ForceClosed]
        );
        // Empty values (an empty form field) are not a filter.
        assert_eq!(
            q("vhost=&state=&client=&limit=&page=").filter,
            Filter::default()
        );
        assert_eq!(q("vhost&limit").limit, Limit::Rows(DEFAULT_LIMIT));
        // '+' is a space in a form-encoded query; a vhost has none.
        assert_eq!(err("vhost=a+b"), QueryError::BadVhost);
    }

    #[test]
    fn bad_filter_values_are_refused() {
        let long = format!("vhost={}", "a".repeat(params::MAX_VALUE_BYTES + 1));
        for (bad, e) in [
            ("state=sleeping", QueryError::UnknownState),
            ("state=keepalive,", QueryError::UnknownState),
            ("state=Keepalive", QueryError::UnknownState),
            ("state=free", QueryError::UnknownState),
            ("client=10.0.0.x", QueryError::BadClient),
            ("client=<script>", QueryError::BadClient),
            ("vhost=%0Aevil", QueryError::BadVhost),
            ("vhost=%zz", QueryError::BadEncoding("vhost")),
            ("client=%FF", QueryError::BadEncoding("client")),
            (long.as_str(), QueryError::TooLong("vhost")),
            ("vhost=a&vhost=b", QueryError::Repeated("vhost")),
            ("state=reading&state=closing", QueryError::Repeated("state")),
        ] {
            assert_eq!(err(bad), e, "{bad}");
        }
    }

    #[test]
    fn no_error_message_echoes_the_input() {
        // With a space, so that it is not a valid vhost either.
        let hostile = "%3Cscript%3E%20alert(1)%3C%2Fscript%3E";
        for key in params::NAMES {
            let e = err(&format!("{key}={hostile}"));
            let text = e.to_string();
            assert!(
                !text.contains('<') && !text.contains("alert") && !text.contains("script"),
                "{key}: {text}"
            );
        }
        for e in [
            QueryError::TooLong("vhost"),
            QueryError::Repeated("state"),
            QueryError::PageAndOffset,
            QueryError::PageWithAll,
        ] {
            assert!(e.to_string().is_ascii());
        }
    }

    #[test]
    fn start_at_prefers_page_numbers() {
        let rows = Limit::Rows(100);
        assert_eq!(Start::at(0, rows), Start::First);
        assert_eq!(Start::at(200, rows), Start::Page(3));
        assert_eq!(Start::at(150, rows), Start::Offset(150));
        assert_eq!(Start::at(7, Limit::All), Start::Offset(7));
    }

    #[test]
    fn content_types() {
        assert_eq!(content_type(Format::Html), "text/html; charset=utf-8");
        assert_eq!(content_type(Format::Auto), "text/plain; charset=utf-8");
        assert_eq!(content_type(Format::Json), "application/json");
        assert_eq!(
            content_type(Format::Metrics),
            "text/plain; version=0.0.4; charset=utf-8"
        );
    }
}
