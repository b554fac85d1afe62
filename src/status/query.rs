//! Query-string parsing for the status handler, mod_status style.
//!
//! Tokens are separated by `&` (or `;`): `auto`, `json`, `metrics`, `refresh=N`, `refresh`.
//! Unknown tokens are ignored, as mod_status does, so links with extra parameters (cache
//! busters, `notable`) keep working; a format token may carry a value (`auto=1`), which is
//! ignored. The raw query is never echoed in an error: the handler may put the message in a
//! response body.

use std::fmt;

/// Used for a bare `refresh`. mod_status has no default of its own (it needs a value), so we
/// pick one that is gentle on the server yet still feels live: 10 seconds.
pub const DEFAULT_REFRESH_SECS: u32 = 10;
/// An hour; anything longer is almost certainly a typo.
pub const MAX_REFRESH_SECS: u32 = 3600;

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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Query {
    pub format: Format,
    /// Seconds between reloads; only the HTML page uses it, other formats ignore it.
    pub refresh: Option<u32>,
}

impl Default for Query {
    fn default() -> Self {
        Query {
            format: Format::Html,
            refresh: None,
        }
    }
}

/// Why a query string was refused (the handler answers 400 with this text).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueryError {
    /// `refresh=` with something other than a whole number of seconds in range.
    BadRefresh,
    /// Two different output formats asked for at once.
    ConflictingFormats(Format, Format),
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
        }
    }
}

impl std::error::Error for QueryError {}

/// Parses `r->args` (None when the URL had no `?`).
pub fn parse(args: Option<&str>) -> Result<Query, QueryError> {
    let mut q = Query::default();
    let mut chosen: Option<Format> = None;
    for token in args.unwrap_or("").split(['&', ';']) {
        let (key, value) = match token.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (token, None),
        };
        let format = match key {
            "auto" => Format::Auto,
            "json" => Format::Json,
            "metrics" => Format::Metrics,
            "refresh" => {
                q.refresh = Some(match value {
                    None => DEFAULT_REFRESH_SECS,
                    Some(v) => parse_refresh(v)?,
                });
                continue;
            }
            _ => continue,
        };
        // Repeating the same format is harmless; two different ones are ambiguous.
        match chosen {
            Some(prev) if prev != format => {
                return Err(QueryError::ConflictingFormats(prev, format))
            }
            _ => chosen = Some(format),
        }
    }
    q.format = chosen.unwrap_or(Format::Html);
    Ok(q)
}

/// Digits only (no sign, no spaces, no units), 1..=MAX_REFRESH_SECS.
fn parse_refresh(v: &str) -> Result<u32, QueryError> {
    // The length cap keeps the parse from overflowing; leading zeros are still fine ("05").
    if v.is_empty() || v.len() > 10 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(QueryError::BadRefresh);
    }
    match v.parse::<u64>() {
        Ok(n) if (1..=MAX_REFRESH_SECS as u64).contains(&n) => Ok(n as u32),
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

    fn ok(args: Option<&str>) -> (Format, Option<u32>) {
        let q = parse(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        (q.format, q.refresh)
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
