//! Wall-clock times for people: "2023-11-14 22:13:20 UTC", "12 s ago" (the crate has no date
//! library; the calendar arithmetic is Howard Hinnant's `civil_from_days`).

/// Year, month, day of the day `days` after 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// "YYYY-MM-DD HH:MM:SS UTC".
pub fn utc(unix_ms: u64) -> String {
    let secs = unix_ms / 1_000;
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3_600,
        rem / 60 % 60,
        rem % 60
    )
}

/// "HH:MM UTC" (a minute of the last hour).
pub fn utc_minute(unix_ms: u64) -> String {
    let rem = unix_ms / 1_000 % 86_400;
    format!("{:02}:{:02} UTC", rem / 3_600, rem / 60 % 60)
}

/// How long ago `then` was at `now`: "12 s ago", "5 min ago", "3 h ago", "just now".
pub fn ago(now_unix_ms: u64, then_unix_ms: u64) -> String {
    let secs = now_unix_ms.saturating_sub(then_unix_ms) / 1_000;
    match secs {
        0 => "just now".to_string(),
        s if s < 120 => format!("{s} s ago"),
        s if s < 7_200 => format!("{} min ago", s / 60),
        s => format!("{} h ago", s / 3_600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_ages() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(1_700_000_000_000), "2023-11-14 22:13:20 UTC");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(1_709_251_199_000), "2024-02-29 23:59:59 UTC");
        assert_eq!(utc_minute(1_700_000_000_000), "22:13 UTC");
        assert_eq!(ago(10_000, 10_500), "just now");
        assert_eq!(ago(72_000, 60_000), "12 s ago");
        assert_eq!(ago(400_000, 100_000), "5 min ago");
        assert_eq!(ago(4 * 3_600_000, 0), "4 h ago");
    }
}
