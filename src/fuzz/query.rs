//! Status page query strings (`status::query`): every answer is a known format or a refusal
//! the handler turns into 400.
//!
//! Apache hands the handler `r->args` undecoded and the parser does not decode it either (as
//! mod_status does not): `%61uto` is an unknown token and ignored like any other, and a
//! `refresh` value with an escape is refused. Bad escapes are just bytes.

use proptest::collection::vec;
use proptest::prelude::*;

use super::{check, mutate};
use crate::status::query::{
    content_type, parse, Format, Limit, Query, QueryError, Start, DEFAULT_REFRESH_SECS, MAX_LIMIT,
    MAX_OFFSET, MAX_PAGE,
};

const FORMATS: [Format; 4] = [Format::Html, Format::Auto, Format::Json, Format::Metrics];

/// One `key[=value]` token: keys without `=`, neither with a separator.
fn token() -> impl Strategy<Value = (String, Option<String>)> {
    let key = prop_oneof![
        mutate::words(
            "auto|json|metrics|refresh|html|AUTO|%61uto|auto%00|notable||%|%zz|é|refresh%3D5"
        ),
        "[^&;=]{0,6}",
    ];
    let value = prop_oneof![
        (1u32..=3600).prop_map(|n| n.to_string()),
        mutate::words("|0|05|3601|+5|-1|5s| 5|%35|%|%e9|99999999999|5=5|١"),
        "[^&;]{0,6}",
    ];
    (key, prop::option::of(value))
}

fn joined(tokens: &[(String, Option<String>)], seps: &[bool]) -> String {
    let mut s = String::new();
    for (i, (k, v)) in tokens.iter().enumerate() {
        if i > 0 {
            s.push(if seps[i % seps.len()] { '&' } else { ';' });
        }
        s.push_str(k);
        if let Some(v) = v {
            s.push('=');
            s.push_str(v);
        }
    }
    s
}

/// Token lists and the query string they make.
fn tokens() -> impl Strategy<Value = (Vec<(String, Option<String>)>, String)> {
    (vec(token(), 0..6), vec(any::<bool>(), 1..4)).prop_map(|(t, seps)| {
        let s = joined(&t, &seps);
        (t, s)
    })
}

fn query_text() -> impl Strategy<Value = String> {
    prop_oneof![
        tokens().prop_map(|(_, s)| s),
        mutate::text(tokens().prop_map(|(_, s)| s), 3),
        any::<String>(),
    ]
}

/// What the documented rules make of a token list (module doc of `status::query`).
fn model(tokens: &[(String, Option<String>)]) -> Result<Query, QueryError> {
    let mut q = Query::default();
    let mut chosen: Option<Format> = None;
    for (k, v) in tokens {
        let f = match k.as_str() {
            "auto" => Format::Auto,
            "json" => Format::Json,
            "metrics" => Format::Metrics,
            "refresh" => {
                q.refresh = Some(match v.as_deref() {
                    None => DEFAULT_REFRESH_SECS,
                    Some(v) => refresh_model(v).ok_or(QueryError::BadRefresh)?,
                });
                continue;
            }
            _ => continue,
        };
        match chosen {
            Some(c) if c != f => return Err(QueryError::ConflictingFormats(c, f)),
            _ => chosen = Some(f),
        }
    }
    q.format = chosen.unwrap_or(Format::Html);
    Ok(q)
}

/// Whole seconds as ASCII digits, 1..=3600.
fn refresh_model(v: &str) -> Option<u32> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n = v.trim_start_matches('0');
    (n.len() <= 4)
        .then(|| n.parse::<u32>().unwrap_or(0))
        .filter(|n| (1..=3600).contains(n))
}

#[test]
fn any_string() {
    check("query::any_string", query_text(), |s| {
        if let Ok(q) = parse(Some(&s)) {
            prop_assert!(FORMATS.contains(&q.format));
            prop_assert!(q.refresh.is_none_or(|r| (1..=3600).contains(&r)), "{:?}", q);
            let ct = content_type(q.format);
            prop_assert!(ct.bytes().all(|b| (b' '..=b'~').contains(&b)), "{}", ct);
        }
        Ok(())
    });
}

#[test]
fn token_model() {
    check("query::token_model", tokens(), |(t, s)| {
        prop_assert_eq!(parse(Some(&s)), model(&t), "{:?}", s);
        Ok(())
    });
}

/// Every refusal the parser can give: the handler logs one of these and answers 400.
fn refusals() -> Vec<String> {
    let mut all = vec![QueryError::BadRefresh.to_string()];
    for a in FORMATS {
        for b in FORMATS.iter().filter(|&&b| b != a) {
            all.push(QueryError::ConflictingFormats(a, *b).to_string());
        }
    }
    all
}

#[test]
fn errors_echo_nothing() {
    let known = refusals();
    check("query::errors_echo_nothing", query_text(), |s| {
        if let Err(e) = parse(Some(&s)) {
            prop_assert!(known.contains(&e.to_string()), "{:?}: {}", s, e);
            if let QueryError::ConflictingFormats(a, b) = e {
                prop_assert!(a != b && a != Format::Html && b != Format::Html);
            }
        }
        Ok(())
    });
}

/// One paging or filter token (`limit`, `page`, `offset`, `all`, `vhost`, `state`, `client`)
/// with a value near the accepted forms, mutated.
fn paging_token() -> impl Strategy<Value = String> {
    let key = mutate::words("limit|page|offset|all|vhost|state|client|LIMIT|page%3D|vhost ");
    let value = prop_oneof![
        mutate::words(
            "|0|1|100|10000|10001|all|ALL|-1|+5|1e3|99999999999999999999|keepalive|close_wait,\
             reading|bogus|on.test|on.test:80|on.test:x|127.0.0.1|::1|[::1]:80|%41|%zz|%C3%A9|\
             a%00b|\u{0661}|x y"
        ),
        mutate::text("[a-z0-9.:%,]{0,12}", 2),
    ];
    (key, prop::option::of(value)).prop_map(|(k, v)| match v {
        Some(v) => format!("{k}={v}"),
        None => k,
    })
}

/// Paging and filters: no panic; what is accepted lies within the documented bounds, and a
/// refusal's text (the 400 page) is one of the fixed, printable messages.
#[test]
fn paging_params() {
    let tokens = vec(paging_token(), 0..6).prop_map(|t| t.join("&"));
    check("query::paging_params", tokens, |s| {
        match parse(Some(&s)) {
            Ok(q) => {
                if let Limit::Rows(n) = q.limit {
                    prop_assert!((1..=MAX_LIMIT).contains(&n), "{:?}: {:?}", s, q);
                }
                match q.start {
                    Start::Page(p) => {
                        prop_assert!((1..=MAX_PAGE).contains(&p), "{:?}: {:?}", s, q);
                        prop_assert!(p == 1 || q.limit != Limit::All, "{:?}", s);
                    }
                    Start::Offset(o) => prop_assert!(o <= MAX_OFFSET, "{:?}: {:?}", s, q),
                    Start::First => {}
                }
                let _ = q.offset();
                if let Some(v) = &q.filter.vhost {
                    prop_assert!(!v.chars().any(|c| c.is_control() || c == ' '), "{:?}", v);
                }
            }
            Err(e) => {
                // QueryError holds no text of the client's (only `&'static str` names), so
                // the 400 page cannot echo it; check the message is plain printable ASCII.
                let text = e.to_string();
                prop_assert!(!text.is_empty(), "{:?}", s);
                prop_assert!(
                    text.bytes().all(|b| (b' '..=b'~').contains(&b)),
                    "{:?}",
                    text
                );
            }
        }
        Ok(())
    });
}
