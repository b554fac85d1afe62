//! Directive values (`config::parse_*`): what configtest accepts lies within the bounds
//! docs/SPEC and the README give, and a refusal names the directive and the value as written.

use proptest::collection::vec;
use proptest::prelude::*;

use super::{check, mutate};
use crate::config::{self, fmt_ms, parse_duration_ms};

/// A directive's parser, its value as a number (keywords: their enum value).
type Parser = fn(&str) -> Result<u64, String>;

/// A duration directive and its documented bounds in milliseconds (SPEC.md / README: written
/// out here rather than taken from `config`, so a wrong constant there is caught).
struct Duration {
    name: &'static str,
    parse: Parser,
    min: u64,
    max: u64,
    /// Also takes `Off` (0).
    off: bool,
}

const ONE_DAY: u64 = 86_400_000;

const DURATIONS: [Duration; 6] = [
    Duration {
        name: "SocketGuardCloseWaitTimeout",
        parse: config::parse_close_wait_timeout,
        min: 100,
        max: ONE_DAY,
        off: false,
    },
    Duration {
        name: "SocketGuardScanInterval",
        parse: config::parse_scan_interval,
        min: 10,
        max: 60_000,
        off: false,
    },
    Duration {
        name: "SocketGuardFullScanInterval",
        parse: config::parse_full_scan_interval,
        min: 10,
        max: 3_600_000,
        off: false,
    },
    Duration {
        name: "SocketGuardHungChildTimeout",
        parse: config::parse_hung_child_timeout,
        min: 1_000,
        max: ONE_DAY,
        off: false,
    },
    Duration {
        name: "SocketGuardAbandonedTimeout",
        parse: config::parse_abandoned_timeout,
        min: 100,
        max: ONE_DAY,
        off: true,
    },
    Duration {
        name: "SocketGuardGracefulDeadline",
        parse: config::parse_graceful_deadline,
        min: 1_000,
        max: ONE_DAY,
        off: true,
    },
];

/// Every directive as (name, parser).
fn every_directive() -> Vec<(&'static str, Parser)> {
    let mut all: Vec<(&'static str, Parser)> =
        DURATIONS.iter().map(|d| (d.name, d.parse)).collect();
    all.push(("SocketGuardAutoClose", |v| {
        config::parse_auto_close(v).map(|a| a as u64)
    }));
    all.push(("SocketGuardRescue", |v| {
        config::parse_rescue(v).map(u64::from)
    }));
    all.push(("SocketGuardSlots", config::parse_slots));
    all
}

fn pad() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec!["", "", " ", "\t", "  ", "\u{a0}"])
}

/// Numbers a few units either side of a documented bound, in any unit (10 ms, 60 s, 1 day…):
/// where an off-by-one or a wrong constant shows.
fn near_bound() -> impl Strategy<Value = u64> {
    let bounds = vec![
        10u64, 16, 60, 100, 1_000, 1_440, 60_000, 86_400, 1_000_000, ONE_DAY,
    ];
    (prop::sample::select(bounds), -3i64..=3).prop_map(|(b, d)| b.saturating_add_signed(d))
}

/// Near-valid durations: a number, a unit (or a near-unit), whitespace around.
fn duration_text() -> impl Strategy<Value = String> {
    let number = prop_oneof![near_bound(), 0u64..200_000, any::<u64>()].prop_map(|n| n.to_string());
    let unit = prop::sample::select(vec!["", "ms", "s", "m", "h", "S", "Ms", " s", "sec"]);
    (pad(), number, unit, pad()).prop_map(|(a, n, u, b)| format!("{a}{n}{u}{b}"))
}

/// The keywords (and near-keywords) in random letter case, whitespace around.
fn keyword_text() -> impl Strategy<Value = String> {
    let word = prop::sample::select(vec!["on", "off", "report", "yes", "0", "of", "onn"]);
    (pad(), word, vec(any::<bool>(), 6), pad()).prop_map(|(a, w, up, b)| {
        let w: String = w
            .chars()
            .zip(up.iter().cycle())
            .map(|(c, &u)| if u { c.to_ascii_uppercase() } else { c })
            .collect();
        format!("{a}{w}{b}")
    })
}

/// Pieces of the error messages themselves (quotes, "; expected "): a value containing them
/// must still come back quoted exactly as given.
fn message_words() -> impl Strategy<Value = String> {
    let word = mutate::words("'|\"|; expected | is out of range|invalid value|Off| |5s|é");
    vec(word, 1..5).prop_map(|w| w.concat())
}

/// Any directive value: near-valid forms, mutated ones, and arbitrary text.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        duration_text(),
        keyword_text(),
        mutate::text(duration_text(), 3),
        mutate::text(keyword_text(), 3),
        message_words(),
        any::<String>(),
    ]
}

#[test]
fn any_value() {
    check("directives::any_value", value(), |v| {
        for (_, parse) in every_directive() {
            let _ = parse(&v);
        }
        Ok(())
    });
}

#[test]
fn accepted_within_bounds() {
    check("directives::accepted_within_bounds", value(), |v| {
        for d in &DURATIONS {
            if let Ok(ms) = (d.parse)(&v) {
                let off = d.off && ms == 0 && v.trim().eq_ignore_ascii_case("off");
                prop_assert!(
                    off || (d.min..=d.max).contains(&ms),
                    "{} {:?} -> {}",
                    d.name,
                    v,
                    ms
                );
                prop_assert!(
                    off || parse_duration_ms(&v) == Some(ms),
                    "{} {:?}",
                    d.name,
                    v
                );
            }
        }
        if let Ok(n) = config::parse_slots(&v) {
            prop_assert!(
                (16..=1_000_000).contains(&n),
                "SocketGuardSlots {:?} -> {}",
                v,
                n
            );
        }
        Ok(())
    });
}

/// Whether `msg` says "out of range", and the message after the quoted value (which must not
/// depend on the value).
fn tail<'a>(msg: &'a str, name: &str, value: &str) -> Option<(bool, &'a str)> {
    let rest = msg.strip_prefix(name)?.strip_prefix(": ")?;
    match rest.strip_prefix(&format!("invalid value '{value}'")) {
        Some(t) => Some((false, t)),
        None => Some((
            true,
            rest.strip_prefix(&format!("'{value}' is out of range"))?,
        )),
    }
}

#[test]
fn rejection_quotes_value() {
    check("directives::rejection_quotes_value", value(), |v| {
        for (name, parse) in every_directive() {
            let Err(msg) = parse(&v) else { continue };
            let t = tail(&msg, name, &v);
            prop_assert!(t.is_some(), "{} {:?}: {}", name, v, msg);
            // The same refusal of a plain value ("x" invalid, "0ms" out of range) must end
            // the same way: the accepted forms, never a piece of the value.
            let plain = if t.unwrap().0 { "0ms" } else { "x" };
            let reference = parse(plain).unwrap_err();
            prop_assert_eq!(t, tail(&reference, name, plain), "{} {:?}", name, v);
        }
        Ok(())
    });
}

#[test]
fn duration_round_trip() {
    let input = (any::<u64>(), 0..=ONE_DAY, 0..DURATIONS.len());
    check(
        "directives::duration_round_trip",
        input,
        |(any_ms, ms, i)| {
            prop_assert_eq!(parse_duration_ms(&fmt_ms(any_ms)), Some(any_ms));
            let d = &DURATIONS[i];
            if (d.min..=d.max).contains(&ms) {
                prop_assert_eq!((d.parse)(&fmt_ms(ms)), Ok(ms), "{}", d.name);
            }
            Ok(())
        },
    );
}

#[test]
fn keywords() {
    let input = prop_oneof![keyword_text(), mutate::text(keyword_text(), 2)];
    check("directives::keywords", input, |v| {
        let k = v.trim().to_ascii_lowercase();
        let auto = config::parse_auto_close(&v).map(|a| a.name().to_ascii_lowercase());
        prop_assert_eq!(
            auto.ok(),
            ["on", "off", "report"].contains(&&*k).then(|| k.clone())
        );
        let rescue = config::parse_rescue(&v).ok();
        prop_assert_eq!(rescue, ["on", "off"].contains(&&*k).then_some(k == "on"));
        for d in DURATIONS.iter().filter(|d| d.off) {
            prop_assert_eq!((d.parse)(&v) == Ok(0), k == "off", "{} {:?}", d.name, v);
        }
        Ok(())
    });
}

fn slots_text() -> impl Strategy<Value = String> {
    let n = prop_oneof![near_bound(), 0u64..2_000_000];
    (pad(), n, pad()).prop_map(|(a, n, b)| format!("{a}{n}{b}"))
}

#[test]
fn slots() {
    let input = prop_oneof![slots_text(), mutate::text(slots_text(), 2)];
    check("directives::slots", input, |v| {
        let t = v.trim();
        let whole = !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
        let want = t
            .parse::<u64>()
            .ok()
            .filter(|n| whole && (16..=1_000_000).contains(n));
        prop_assert_eq!(config::parse_slots(&v).ok(), want, "{:?}", v);
        Ok(())
    });
}
