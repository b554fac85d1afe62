//! Directive values: parsing, validation, defaults and the per-server merge.
//!
//! Plain Rust with no Apache types: the FFI layer (`ffi::directives`) hands each directive's
//! raw argument to a `parse_*` function and stores the result in a `ServerConfig` living in
//! Apache's config pool. Errors are complete sentences naming the directive, the bad value and
//! the accepted forms, because Apache prints them verbatim when configtest fails.

use std::fmt;

/// What to do with a connection that stays in CLOSE_WAIT past the vhost's timeout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum AutoClose {
    /// Only track and show it.
    Off = 0,
    /// Shut it down gracefully.
    On = 1,
    /// Log it once at warn level and count it.
    Report = 2,
}

impl AutoClose {
    pub fn name(self) -> &'static str {
        match self {
            AutoClose::Off => "Off",
            AutoClose::On => "On",
            AutoClose::Report => "Report",
        }
    }

    pub fn from_u8(v: u8) -> AutoClose {
        match v {
            1 => AutoClose::On,
            2 => AutoClose::Report,
            _ => AutoClose::Off,
        }
    }
}

impl fmt::Display for AutoClose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

pub const DEFAULT_AUTO_CLOSE: AutoClose = AutoClose::Off;
pub const DEFAULT_CLOSE_WAIT_TIMEOUT_MS: u64 = 30_000;
pub const MIN_CLOSE_WAIT_TIMEOUT_MS: u64 = 100;
pub const DEFAULT_SCAN_INTERVAL_MS: u64 = 1_000;
pub const MIN_SCAN_INTERVAL_MS: u64 = 10;
pub const MAX_SCAN_INTERVAL_MS: u64 = 60_000;
/// A full dump of our ports (what exact lookups cannot name: leaked, backlog, untracked)
/// every this many scan intervals by default, but at least this often:
pub const FULL_SCAN_INTERVALS: u64 = 5;
pub const MIN_DEFAULT_FULL_SCAN_INTERVAL_MS: u64 = 1_000;
pub const MAX_FULL_SCAN_INTERVAL_MS: u64 = 3_600_000;
pub const DEFAULT_RESCUE: bool = true;
pub const DEFAULT_HUNG_CHILD_TIMEOUT_MS: u64 = 10_000;
/// A hung-child timeout shorter than this would flag healthy children between two scans.
pub const MIN_HUNG_CHILD_TIMEOUT_MS: u64 = 1_000;
pub const MIN_SLOTS: u64 = 16;
/// Shorter would stop handlers between two scans of a client that only paused.
pub const MIN_ABANDONED_TIMEOUT_MS: u64 = 100;
pub const MIN_GRACEFUL_DEADLINE_MS: u64 = 1_000;
/// Keeps the shared segment under ~400 MiB even with a typo'd value.
pub const MAX_SLOTS: u64 = 1_000_000;
/// Durations are stored as milliseconds; one day is far beyond any sane setting.
pub const MAX_DURATION_MS: u64 = 86_400_000;

/// One server's (main server or vhost) directive values; `None` means "not set here".
///
/// Lives in Apache's config pool, so it is plain `Copy` data with no destructor.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct ServerConfig {
    pub auto_close: Option<AutoClose>,
    pub close_wait_timeout_ms: Option<u64>,
    pub scan_interval_ms: Option<u64>,
    /// SocketGuardFullScanInterval (server config only).
    pub full_scan_interval_ms: Option<u64>,
    pub slots: Option<u64>,
    pub rescue: Option<bool>,
    pub hung_child_timeout_ms: Option<u64>,
    /// SocketGuardAbandonedTimeout; `Some(0)` is an explicit Off (overrides the main server).
    pub abandoned_timeout_ms: Option<u64>,
    /// SocketGuardGracefulDeadline (server config only); `Some(0)` is Off.
    pub graceful_deadline_ms: Option<u64>,
    /// Index of this server's row in the shared vhost table; set at post_config, not merged.
    pub vhost_index: u32,
}

impl ServerConfig {
    /// Apache's merge: what the vhost sets wins, the rest comes from the main server.
    pub fn merge(base: &ServerConfig, add: &ServerConfig) -> ServerConfig {
        ServerConfig {
            auto_close: add.auto_close.or(base.auto_close),
            close_wait_timeout_ms: add.close_wait_timeout_ms.or(base.close_wait_timeout_ms),
            scan_interval_ms: add.scan_interval_ms.or(base.scan_interval_ms),
            full_scan_interval_ms: add.full_scan_interval_ms.or(base.full_scan_interval_ms),
            slots: add.slots.or(base.slots),
            rescue: add.rescue.or(base.rescue),
            hung_child_timeout_ms: add.hung_child_timeout_ms.or(base.hung_child_timeout_ms),
            abandoned_timeout_ms: add.abandoned_timeout_ms.or(base.abandoned_timeout_ms),
            graceful_deadline_ms: add.graceful_deadline_ms.or(base.graceful_deadline_ms),
            vhost_index: add.vhost_index,
        }
    }

    pub fn auto_close(&self) -> AutoClose {
        self.auto_close.unwrap_or(DEFAULT_AUTO_CLOSE)
    }
    pub fn close_wait_timeout_ms(&self) -> u64 {
        self.close_wait_timeout_ms
            .unwrap_or(DEFAULT_CLOSE_WAIT_TIMEOUT_MS)
    }
    pub fn scan_interval_ms(&self) -> u64 {
        self.scan_interval_ms.unwrap_or(DEFAULT_SCAN_INTERVAL_MS)
    }
    /// Unset: five scan intervals, at least 1 s (the leaked and backlog timings of the
    /// acceptance tests, at a 200 ms interval, hold with a full dump every second).
    pub fn full_scan_interval_ms(&self) -> u64 {
        self.full_scan_interval_ms.unwrap_or(
            (FULL_SCAN_INTERVALS * self.scan_interval_ms())
                .clamp(MIN_DEFAULT_FULL_SCAN_INTERVAL_MS, MAX_FULL_SCAN_INTERVAL_MS),
        )
    }
    pub fn rescue(&self) -> bool {
        self.rescue.unwrap_or(DEFAULT_RESCUE)
    }
    /// Unset: 10 s, or two scan intervals when that is longer (a healthy child checks in
    /// once per interval, so a shorter timeout would call it hung between check-ins).
    pub fn hung_child_timeout_ms(&self) -> u64 {
        self.hung_child_timeout_ms
            .unwrap_or(DEFAULT_HUNG_CHILD_TIMEOUT_MS.max(HUNG_CHECKINS * self.scan_interval_ms()))
    }

    /// A HungChildTimeout that is set must cover two check-ins. Checked once the whole
    /// configuration is read (check_config), so the order of the lines does not matter.
    pub fn check_hung_child_timeout(&self) -> Result<(), String> {
        let Some(hung) = self.hung_child_timeout_ms else {
            return Ok(());
        };
        let interval = self.scan_interval_ms();
        if hung >= HUNG_CHECKINS * interval {
            return Ok(());
        }
        Err(format!(
            "SocketGuardHungChildTimeout {} is too short for SocketGuardScanInterval {}: a \
             healthy child checks in once per scan interval, so the timeout must be at least \
             {} (two intervals)",
            ms_text(hung),
            ms_text(interval),
            ms_text(HUNG_CHECKINS * interval)
        ))
    }
    /// 0: Off (the default).
    pub fn abandoned_timeout_ms(&self) -> u64 {
        self.abandoned_timeout_ms.unwrap_or(0)
    }
    /// 0: Off (the default).
    pub fn graceful_deadline_ms(&self) -> u64 {
        self.graceful_deadline_ms.unwrap_or(0)
    }
}

/// How many scan intervals (check-ins) a child may miss before it counts as hung.
pub const HUNG_CHECKINS: u64 = 2;

/// A duration as the directives accept it: `5s` for whole seconds, else `500ms`.
fn ms_text(ms: u64) -> String {
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

const DURATION_FORMS: &str = "a duration such as 500ms, 5s, 2m, or a bare number of seconds";

/// Parses `500ms`, `5s`, `2m` or a bare number of seconds into milliseconds.
/// `None` for anything else (including overflow); callers wrap it in a directive error.
pub fn parse_duration_ms(value: &str) -> Option<u64> {
    let v = value.trim();
    let (digits, unit_ms) = if let Some(n) = v.strip_suffix("ms") {
        (n, 1)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1_000)
    } else if let Some(n) = v.strip_suffix('m') {
        (n, 60_000)
    } else {
        (v, 1_000)
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<u64>().ok()?.checked_mul(unit_ms)
}

/// A duration as the error messages write a bound (`2m`, `5s`, `500ms`):
/// `parse_duration_ms` reads it back.
pub(crate) fn fmt_ms(ms: u64) -> String {
    if ms.is_multiple_of(60_000) {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1_000) {
        format!("{}s", ms / 1_000)
    } else {
        format!("{ms}ms")
    }
}

/// A duration directive bounded to `[min_ms, max_ms]`.
pub fn parse_bounded_duration(
    directive: &str,
    value: &str,
    min_ms: u64,
    max_ms: u64,
) -> Result<u64, String> {
    bounded_duration(directive, value, min_ms, max_ms, "")
}

/// `parse_bounded_duration` whose error lists `also` (e.g. "Off or ") before the forms. The
/// message is built whole: editing it afterwards would also edit the quoted value.
fn bounded_duration(
    directive: &str,
    value: &str,
    min_ms: u64,
    max_ms: u64,
    also: &str,
) -> Result<u64, String> {
    // The one-day ceiling is only a sanity cap; "1440m" would read like a recommendation.
    let range = if max_ms >= MAX_DURATION_MS {
        format!("at least {} (at most one day)", fmt_ms(min_ms))
    } else {
        format!("from {} to {}", fmt_ms(min_ms), fmt_ms(max_ms))
    };
    let expected = format!("expected {also}{DURATION_FORMS}, {range}");
    match parse_duration_ms(value) {
        Some(ms) if (min_ms..=max_ms).contains(&ms) => Ok(ms),
        Some(_) => Err(format!(
            "{directive}: '{value}' is out of range; {expected}"
        )),
        None => Err(format!("{directive}: invalid value '{value}'; {expected}")),
    }
}

pub fn parse_close_wait_timeout(value: &str) -> Result<u64, String> {
    parse_bounded_duration(
        "SocketGuardCloseWaitTimeout",
        value,
        MIN_CLOSE_WAIT_TIMEOUT_MS,
        MAX_DURATION_MS,
    )
}

pub fn parse_scan_interval(value: &str) -> Result<u64, String> {
    parse_bounded_duration(
        "SocketGuardScanInterval",
        value,
        MIN_SCAN_INTERVAL_MS,
        MAX_SCAN_INTERVAL_MS,
    )
}

pub fn parse_full_scan_interval(value: &str) -> Result<u64, String> {
    parse_bounded_duration(
        "SocketGuardFullScanInterval",
        value,
        MIN_SCAN_INTERVAL_MS,
        MAX_FULL_SCAN_INTERVAL_MS,
    )
}

pub fn parse_hung_child_timeout(value: &str) -> Result<u64, String> {
    parse_bounded_duration(
        "SocketGuardHungChildTimeout",
        value,
        MIN_HUNG_CHILD_TIMEOUT_MS,
        MAX_DURATION_MS,
    )
}

/// `Off` (0) or a duration bounded to `[min_ms, one day]`.
pub fn parse_duration_or_off(directive: &str, value: &str, min_ms: u64) -> Result<u64, String> {
    if value.trim().eq_ignore_ascii_case("off") {
        return Ok(0);
    }
    bounded_duration(directive, value, min_ms, MAX_DURATION_MS, "Off or ")
}

pub fn parse_abandoned_timeout(value: &str) -> Result<u64, String> {
    parse_duration_or_off(
        "SocketGuardAbandonedTimeout",
        value,
        MIN_ABANDONED_TIMEOUT_MS,
    )
}

pub fn parse_graceful_deadline(value: &str) -> Result<u64, String> {
    parse_duration_or_off(
        "SocketGuardGracefulDeadline",
        value,
        MIN_GRACEFUL_DEADLINE_MS,
    )
}

pub fn parse_auto_close(value: &str) -> Result<AutoClose, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "on" => Ok(AutoClose::On),
        "off" => Ok(AutoClose::Off),
        "report" => Ok(AutoClose::Report),
        _ => Err(format!(
            "SocketGuardAutoClose: invalid value '{value}'; expected On, Off or Report"
        )),
    }
}

pub fn parse_rescue(value: &str) -> Result<bool, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(format!(
            "SocketGuardRescue: invalid value '{value}'; expected On or Off"
        )),
    }
}

pub fn parse_slots(value: &str) -> Result<u64, String> {
    let v = value.trim();
    let n = if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        v.parse::<u64>().ok()
    } else {
        None
    };
    match n {
        Some(n) if (MIN_SLOTS..=MAX_SLOTS).contains(&n) => Ok(n),
        _ => Err(format!(
            "SocketGuardSlots: invalid value '{value}'; expected a whole number of slots from {MIN_SLOTS} to {MAX_SLOTS}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_accept_every_documented_form() {
        assert_eq!(parse_duration_ms("500ms"), Some(500));
        assert_eq!(parse_duration_ms("5s"), Some(5_000));
        assert_eq!(parse_duration_ms("2m"), Some(120_000));
        assert_eq!(parse_duration_ms("60"), Some(60_000));
        assert_eq!(parse_duration_ms(" 7s "), Some(7_000));
    }

    #[test]
    fn durations_reject_everything_else() {
        for bad in [
            "",
            "s",
            "ms",
            "-1",
            "1.5s",
            "5h",
            "abc",
            "5 s",
            "1e3",
            "99999999999999999999",
        ] {
            assert_eq!(parse_duration_ms(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn timeout_errors_name_directive_value_and_forms() {
        let e = parse_close_wait_timeout("soon").unwrap_err();
        assert!(e.starts_with("SocketGuardCloseWaitTimeout:"), "{e}");
        assert!(
            e.contains("'soon'") && e.contains("500ms") && e.contains("2m"),
            "{e}"
        );
        let e = parse_close_wait_timeout("50ms").unwrap_err();
        assert!(
            e.contains("out of range") && e.contains("at least 100ms (at most one day)"),
            "{e}"
        );
        assert!(parse_close_wait_timeout("1441m").is_err());
        assert_eq!(parse_close_wait_timeout("100ms"), Ok(100));
    }

    #[test]
    fn scan_interval_bounds() {
        assert_eq!(parse_scan_interval("10ms"), Ok(10));
        assert_eq!(parse_scan_interval("60s"), Ok(60_000));
        assert_eq!(parse_scan_interval("1m"), Ok(60_000));
        assert!(parse_scan_interval("9ms").is_err());
        assert!(parse_scan_interval("61s")
            .unwrap_err()
            .contains("SocketGuardScanInterval"));
    }

    #[test]
    fn full_scan_interval_bounds_and_default() {
        assert_eq!(parse_full_scan_interval("10ms"), Ok(10));
        assert_eq!(parse_full_scan_interval("60m"), Ok(3_600_000));
        assert_eq!(parse_full_scan_interval("30"), Ok(30_000));
        let e = parse_full_scan_interval("61m").unwrap_err();
        assert_eq!(
            e,
            "SocketGuardFullScanInterval: '61m' is out of range; expected a duration such as \
             500ms, 5s, 2m, or a bare number of seconds, from 10ms to 1h"
                .replace("1h", "60m")
        );
        let e = parse_full_scan_interval("often").unwrap_err();
        assert!(
            e.starts_with("SocketGuardFullScanInterval: invalid value 'often'; expected"),
            "{e}"
        );
        assert!(parse_full_scan_interval("9ms").is_err());
        // Unset: five scan intervals, at least 1 s, at most the maximum.
        let mut c = ServerConfig::default();
        assert_eq!(c.full_scan_interval_ms(), 5_000);
        c.scan_interval_ms = Some(200);
        assert_eq!(c.full_scan_interval_ms(), 1_000);
        c.scan_interval_ms = Some(60_000);
        assert_eq!(c.full_scan_interval_ms(), 300_000);
        c.full_scan_interval_ms = Some(250);
        assert_eq!(c.full_scan_interval_ms(), 250, "set: as set");
        let vhost = ServerConfig::default();
        assert_eq!(ServerConfig::merge(&c, &vhost).full_scan_interval_ms(), 250);
    }

    #[test]
    fn hung_child_timeout_bounds() {
        assert_eq!(parse_hung_child_timeout("10s"), Ok(10_000));
        assert!(parse_hung_child_timeout("500ms").is_err());
    }

    #[test]
    fn hung_child_timeout_covers_two_check_ins() {
        let mut c = ServerConfig {
            scan_interval_ms: Some(5_000),
            ..Default::default()
        };
        // Unset: the default grows with a long interval.
        assert_eq!(c.hung_child_timeout_ms(), 10_000);
        c.scan_interval_ms = Some(30_000);
        assert_eq!(c.hung_child_timeout_ms(), 60_000);
        assert_eq!(c.check_hung_child_timeout(), Ok(()));
        // Set: too short for the interval is an error naming both directives and values.
        c.hung_child_timeout_ms = Some(1_000);
        c.scan_interval_ms = Some(5_000);
        let e = c.check_hung_child_timeout().unwrap_err();
        assert!(
            e.contains("SocketGuardHungChildTimeout 1s")
                && e.contains("SocketGuardScanInterval 5s")
                && e.contains("at least 10s"),
            "{e}"
        );
        c.scan_interval_ms = Some(500);
        assert_eq!(c.check_hung_child_timeout(), Ok(()));
        c.scan_interval_ms = Some(750);
        assert!(c
            .check_hung_child_timeout()
            .unwrap_err()
            .contains("ScanInterval 750ms"));
    }

    #[test]
    fn off_or_duration_directives() {
        assert_eq!(parse_abandoned_timeout("Off"), Ok(0));
        assert_eq!(parse_abandoned_timeout("off"), Ok(0));
        assert_eq!(parse_abandoned_timeout("2s"), Ok(2_000));
        assert_eq!(parse_abandoned_timeout("100ms"), Ok(100));
        let e = parse_abandoned_timeout("50ms").unwrap_err();
        assert!(e.starts_with("SocketGuardAbandonedTimeout: '50ms'"), "{e}");
        assert!(e.contains("Off or a duration"), "{e}");
        let e = parse_graceful_deadline("soon").unwrap_err();
        assert!(
            e.starts_with("SocketGuardGracefulDeadline: invalid value 'soon'"),
            "{e}"
        );
        assert_eq!(parse_graceful_deadline("30s"), Ok(30_000));
        assert!(parse_graceful_deadline("500ms").is_err());
        // An explicit Off in a vhost overrides the main server's value.
        let main = ServerConfig {
            abandoned_timeout_ms: Some(5_000),
            ..Default::default()
        };
        let vhost = ServerConfig {
            abandoned_timeout_ms: Some(0),
            ..Default::default()
        };
        assert_eq!(ServerConfig::merge(&main, &vhost).abandoned_timeout_ms(), 0);
        assert_eq!(
            ServerConfig::merge(&main, &ServerConfig::default()).abandoned_timeout_ms(),
            5_000
        );
    }

    /// Found by fuzz::directives::rejection_quotes_value (shrunk: "; expected "): the Off
    /// form's message was made by replacing "; expected " in the finished message, which also
    /// rewrote the quoted value.
    #[test]
    fn a_value_containing_the_message_words_is_quoted_as_given() {
        for v in ["; expected ", "it's; expected 5", "é \"x\""] {
            let e = parse_abandoned_timeout(v).unwrap_err();
            let want = format!("SocketGuardAbandonedTimeout: invalid value '{v}'; expected Off or a duration such as 500ms, 5s, 2m, or a bare number of seconds, at least 100ms (at most one day)");
            assert_eq!(e, want);
        }
    }

    #[test]
    fn auto_close_is_case_insensitive() {
        assert_eq!(parse_auto_close("on"), Ok(AutoClose::On));
        assert_eq!(parse_auto_close("REPORT"), Ok(AutoClose::Report));
        assert_eq!(parse_auto_close("Off"), Ok(AutoClose::Off));
        let e = parse_auto_close("yes").unwrap_err();
        assert!(e.contains("SocketGuardAutoClose") && e.contains("'yes'") && e.contains("Report"));
    }

    #[test]
    fn rescue_and_slots() {
        assert_eq!(parse_rescue("Off"), Ok(false));
        assert!(parse_rescue("maybe")
            .unwrap_err()
            .contains("SocketGuardRescue"));
        assert_eq!(parse_slots("16"), Ok(16));
        assert!(parse_slots("15").is_err());
        assert!(parse_slots("-3").is_err());
        assert!(parse_slots("lots")
            .unwrap_err()
            .contains("SocketGuardSlots"));
    }

    #[test]
    fn merge_prefers_vhost_and_inherits_the_rest() {
        let main = ServerConfig {
            auto_close: Some(AutoClose::Report),
            close_wait_timeout_ms: Some(5_000),
            scan_interval_ms: Some(250),
            ..Default::default()
        };
        let vhost = ServerConfig {
            auto_close: Some(AutoClose::On),
            vhost_index: 3,
            ..Default::default()
        };
        let m = ServerConfig::merge(&main, &vhost);
        assert_eq!(m.auto_close(), AutoClose::On);
        assert_eq!(m.close_wait_timeout_ms(), 5_000);
        assert_eq!(m.scan_interval_ms(), 250);
        assert_eq!(m.vhost_index, 3);
        let d = ServerConfig::merge(&ServerConfig::default(), &ServerConfig::default());
        assert_eq!(d.auto_close(), AutoClose::Off);
        assert_eq!(d.close_wait_timeout_ms(), 30_000);
        assert_eq!(d.scan_interval_ms(), 1_000);
        assert!(d.rescue());
        assert_eq!(d.hung_child_timeout_ms(), 10_000);
    }
}
