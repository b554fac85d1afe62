//! The values of the connection-list parameters (`vhost=`, `state=`, `client=`, `limit=`,
//! `page=`, `offset=`): percent-decoding, validation, and the encoding links use to carry
//! them. Every check is on bounded input: a value longer than `MAX_VALUE_BYTES` is refused
//! before it is decoded.

use std::net::{IpAddr, SocketAddr};

use super::query::{Limit, QueryError, MAX_LIMIT, MAX_OFFSET, MAX_PAGE};
use crate::status::model::ShownState;

/// The parameters this module reads (besides the format tokens and `refresh`).
pub const NAMES: [&str; 6] = ["vhost", "state", "client", "limit", "page", "offset"];
/// The longest raw (still percent-encoded) value accepted.
pub const MAX_VALUE_BYTES: usize = 512;
/// A DNS name is at most 253 characters; with ":65535" that is 259.
pub const MAX_VHOST_CHARS: usize = 260;
/// "[" + the longest IPv6 text (45) + "]:65535".
const MAX_CLIENT_CHARS: usize = 53;

/// The states a connection row can show, in the order the page lists them.
pub const LISTED_STATES: [ShownState; 7] = [
    ShownState::Reading,
    ShownState::Handling,
    ShownState::Keepalive,
    ShownState::Closing,
    ShownState::CloseWait,
    ShownState::ForceClosed,
    ShownState::Rescued,
];
/// For the error message (kept in step with `LISTED_STATES` by a test).
pub const STATE_NAMES: &str =
    "reading, handling, keepalive, closing, close_wait, force_closed, rescued";

/// `client=`: the text as given (decoded) and how it matches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientFilter {
    pub text: String,
    pub matcher: ClientMatch,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientMatch {
    /// A whole address: that address, any port.
    Ip(IpAddr),
    /// `ip:port` or `[ip]:port`: that one connection.
    Socket(SocketAddr),
    /// Anything else: the start of the address text (lower case, no brackets).
    Prefix(String),
}

/// Percent-decodes a query value ('+' is a space, as forms send it). `name` is for the
/// error.
pub fn decode(raw: &str, name: &'static str) -> Result<String, QueryError> {
    if raw.len() > MAX_VALUE_BYTES {
        return Err(QueryError::TooLong(name));
    }
    let b = raw.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = b
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok());
                let byte = hex.and_then(|h| u8::from_str_radix(h, 16).ok());
                out.push(byte.ok_or(QueryError::BadEncoding(name))?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| QueryError::BadEncoding(name))
}

/// Percent-encodes a value for a link: everything but unreserved characters, ':' and ','
/// (which stay readable in `vhost=a.test:80` and `state=a,b`).
pub fn encode(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~:,".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Digits only, at most 7 of them (the largest bound is 1,000,000), so the parse cannot
/// overflow; leading zeros are fine.
pub fn whole_number(v: &str) -> Option<usize> {
    if v.is_empty() || v.len() > 7 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    v.parse().ok()
}

pub fn limit(v: &str) -> Result<Limit, QueryError> {
    if v == "all" {
        return Ok(Limit::All);
    }
    match whole_number(v) {
        Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(Limit::Rows(n)),
        _ => Err(QueryError::BadLimit),
    }
}

pub fn page(v: &str) -> Result<usize, QueryError> {
    whole_number(v)
        .filter(|n| (1..=MAX_PAGE).contains(n))
        .ok_or(QueryError::BadPage)
}

pub fn offset(v: &str) -> Result<usize, QueryError> {
    whole_number(v)
        .filter(|n| *n <= MAX_OFFSET)
        .ok_or(QueryError::BadOffset)
}

/// A server name, optionally with `:port`; compared without regard to case later.
pub fn vhost(v: &str) -> Result<String, QueryError> {
    let ok = v.chars().count() <= MAX_VHOST_CHARS
        && !v.chars().any(|c| c.is_control() || c.is_whitespace());
    ok.then(|| v.to_string()).ok_or(QueryError::BadVhost)
}

/// `NAME[,NAME...]` of `LISTED_STATES`, without duplicates, in the order given.
pub fn states(v: &str) -> Result<Vec<ShownState>, QueryError> {
    let mut out = Vec::new();
    for name in v.split(',') {
        let st = LISTED_STATES
            .iter()
            .find(|s| s.name() == name)
            .ok_or(QueryError::UnknownState)?;
        if !out.contains(st) {
            out.push(*st);
        }
    }
    Ok(out)
}

pub fn client(v: &str) -> Result<ClientFilter, QueryError> {
    let allowed = |c: char| c.is_ascii_hexdigit() || matches!(c, '.' | ':' | '[' | ']');
    if v.len() > MAX_CLIENT_CHARS || !v.chars().all(allowed) {
        return Err(QueryError::BadClient);
    }
    let bare = v.trim_start_matches('[').trim_end_matches(']');
    let matcher = if let Ok(sa) = v.parse::<SocketAddr>() {
        ClientMatch::Socket(sa)
    } else if let Ok(ip) = bare.parse::<IpAddr>() {
        ClientMatch::Ip(ip)
    } else if v.contains(['[', ']']) {
        // Brackets belong around a whole IPv6 address only.
        return Err(QueryError::BadClient);
    } else {
        ClientMatch::Prefix(v.to_ascii_lowercase())
    };
    Ok(ClientFilter {
        text: v.to_string(),
        matcher,
    })
}

/// The address part of a row's client text ("ip:port" or "[ip]:port"), without brackets.
pub fn client_ip(client: &str) -> &str {
    if let Some(rest) = client.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    client.rsplit_once(':').map_or(client, |(ip, _)| ip)
}

impl ClientMatch {
    /// Whether a row's client text ("ip:port" / "[ip]:port") matches.
    pub fn matches(&self, client: &str) -> bool {
        match self {
            ClientMatch::Socket(sa) => client.parse::<SocketAddr>().is_ok_and(|c| c == *sa),
            ClientMatch::Ip(ip) => client_ip(client).parse::<IpAddr>().is_ok_and(|c| c == *ip),
            ClientMatch::Prefix(p) => {
                // Bytes, not str slices: a row's text comes from shared memory and may hold
                // anything, so a char boundary is not guaranteed.
                let ip = client_ip(client).as_bytes();
                ip.get(..p.len())
                    .is_some_and(|head| head.eq_ignore_ascii_case(p.as_bytes()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_names_match_the_listed_states() {
        let names: Vec<&str> = LISTED_STATES.iter().map(|s| s.name()).collect();
        assert_eq!(names.join(", "), STATE_NAMES);
    }

    #[test]
    fn decode_and_encode_round_trip() {
        assert_eq!(decode("a%3Ab%2cc+d", "x").unwrap(), "a:b,c d");
        assert_eq!(decode("%", "x"), Err(QueryError::BadEncoding("x")));
        assert_eq!(decode("%4", "x"), Err(QueryError::BadEncoding("x")));
        assert_eq!(decode("%C3%A9", "x").unwrap(), "é");
        for v in ["www.a.test:8080", "<b>\"&'", "a b+c%", "é", "[::1]:80"] {
            let enc = encode(v);
            assert!(enc
                .bytes()
                .all(|b| b.is_ascii_graphic() && !b"<>\"'&+ ".contains(&b)));
            assert_eq!(decode(&enc, "x").unwrap(), v);
        }
        assert_eq!(encode("a.test:80"), "a.test:80");
    }

    #[test]
    fn client_matching() {
        let m = |f: &str, c: &str| client(f).unwrap().matcher.matches(c);
        assert!(m("127.0.0.1", "127.0.0.1:5000"));
        assert!(!m("127.0.0.1", "127.0.0.10:5000"));
        assert!(m("127.0.0.", "127.0.0.10:5000"));
        assert!(m("127.0.0.1:5000", "127.0.0.1:5000"));
        assert!(!m("127.0.0.1:5000", "127.0.0.1:5001"));
        assert!(m("::1", "[::1]:80"));
        assert!(m("[::1]", "[::1]:80"));
        assert!(m("[::1]:80", "[::1]:80"));
        assert!(m("2001:DB8:", "[2001:db8::1]:80"));
        assert!(!m("2001:db9:", "[2001:db8::1]:80"));
        // ip:port names one connection; it is not a prefix.
        assert!(!m("1.2.3.4:5", "1.2.3.4:50"));
        assert_eq!(client("[10.0."), Err(QueryError::BadClient));
        assert_eq!(client("10.0.0.1 "), Err(QueryError::BadClient));
        assert_eq!(client(&"1".repeat(54)), Err(QueryError::BadClient));
    }

    #[test]
    fn client_ip_parts() {
        assert_eq!(client_ip("1.2.3.4:5"), "1.2.3.4");
        assert_eq!(client_ip("[::1]:5"), "::1");
        assert_eq!(client_ip("garbage"), "garbage");
    }
}
