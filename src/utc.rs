//! UTC calendar time, without a time-zone database: what the audit log and the conflict file
//! names need (formatting) and what `--since` accepts (parsing). Local time is never used, so
//! a log read on another machine or after a DST change says the same thing.

use anyhow::{bail, Result};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A moment broken into its UTC calendar fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Civil {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    pub millis: u32,
}

impl Civil {
    pub fn from_time(t: SystemTime) -> Civil {
        let ms = match t.duration_since(UNIX_EPOCH) {
            Ok(d) => d.as_millis() as i128,
            Err(e) => -(e.duration().as_millis() as i128),
        };
        let secs = ms.div_euclid(1000) as i64;
        let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400) as u32);
        let (year, month, day) = civil_from_days(days);
        Civil {
            year,
            month,
            day,
            hour: rem / 3600,
            minute: rem % 3600 / 60,
            second: rem % 60,
            millis: ms.rem_euclid(1000) as u32,
        }
    }

    /// None for a field out of range (month 13, February 30, hour 24...) or an unrepresentable time.
    pub fn to_time(self) -> Option<SystemTime> {
        let valid = (1..=12).contains(&self.month)
            && (1..=days_in_month(self.year, self.month)).contains(&self.day)
            && self.hour < 24
            && self.minute < 60
            && self.second < 60
            && self.millis < 1000;
        if !valid {
            return None;
        }
        let secs = days_from_civil(self.year, self.month, self.day)
            .checked_mul(86_400)?
            .checked_add(i64::from(self.hour * 3600 + self.minute * 60 + self.second))?;
        let whole = if secs >= 0 {
            UNIX_EPOCH.checked_add(Duration::from_secs(secs as u64))?
        } else {
            UNIX_EPOCH.checked_sub(Duration::from_secs(secs.unsigned_abs()))?
        };
        whole.checked_add(Duration::from_millis(u64::from(self.millis)))
    }
}

/// RFC 3339 with milliseconds: `2026-11-25T23:03:47.123Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let c = Civil::from_time(t);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        c.year, c.month, c.day, c.hour, c.minute, c.second, c.millis
    )
}

/// To the second, for people: `2026-11-25 23:03:47Z`.
pub fn readable(t: SystemTime) -> String {
    let c = Civil::from_time(t);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}Z",
        c.year, c.month, c.day, c.hour, c.minute, c.second
    )
}

/// Without separators, for file names: `20261125T230347Z`.
pub fn compact(t: SystemTime) -> String {
    let c = Civil::from_time(t);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        c.year, c.month, c.day, c.hour, c.minute, c.second
    )
}

/// Parses what `rfc3339` writes (and the other absolute forms `parse_since` takes).
pub fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    parse_absolute(s)
}

/// A `--since` value: a date (`2026-11-25`, midnight UTC), a UTC time (`2026-11-25T10:00:00Z`,
/// `2026-11-25 10:00:00`, optionally with a fraction), or an age before `now` (`90s`, `30m`,
/// `2h`, `7d`).
pub fn parse_since(s: &str, now: SystemTime) -> Result<SystemTime> {
    let t = parse_age(s)
        .and_then(|age| now.checked_sub(age))
        .or_else(|| parse_absolute(s));
    match t {
        Some(t) => Ok(t),
        None => bail!(
            "{s:?}: expected a date (2026-11-25), a UTC time (2026-11-25T10:00:00Z or \
             \"2026-11-25 10:00:00\") or an age (90s, 30m, 2h, 7d)"
        ),
    }
}

fn parse_age(s: &str) -> Option<Duration> {
    let (unit, n) = s.as_bytes().split_last()?;
    let unit = match unit {
        b's' => 1,
        b'm' => 60,
        b'h' => 3600,
        b'd' => 86_400,
        _ => return None,
    };
    if n.is_empty() || n.len() > 12 || !n.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = n.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
    n.checked_mul(unit).map(Duration::from_secs)
}

fn parse_absolute(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    let (date, time) = match b.len() {
        10 => (b, None),
        n if n > 11 && matches!(b[10], b'T' | b' ') => (&b[..10], Some(&b[11..])),
        _ => return None,
    };
    let mut c = parse_date(date)?;
    if let Some(time) = time {
        parse_time(time, &mut c)?;
    }
    c.to_time()
}

/// `YYYY-MM-DD` into a Civil at midnight.
fn parse_date(b: &[u8]) -> Option<Civil> {
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    Some(Civil {
        year: i64::from(digits(&b[0..4])?),
        month: digits(&b[5..7])?,
        day: digits(&b[8..10])?,
        hour: 0,
        minute: 0,
        second: 0,
        millis: 0,
    })
}

/// `HH:MM:SS[.fraction][Z]` into `c`.
fn parse_time(b: &[u8], c: &mut Civil) -> Option<()> {
    let b = b.strip_suffix(b"Z").unwrap_or(b);
    if b.len() < 8 || b[2] != b':' || b[5] != b':' {
        return None;
    }
    c.hour = digits(&b[0..2])?;
    c.minute = digits(&b[3..5])?;
    c.second = digits(&b[6..8])?;
    let fraction = &b[8..];
    if !fraction.is_empty() {
        let f = fraction.strip_prefix(b".")?;
        if f.len() > 9 {
            return None;
        }
        digits(f)?;
        // Milliseconds are all the log keeps; finer digits are dropped, not rounded.
        let mut ms = [b'0'; 3];
        let n = f.len().min(3);
        ms[..n].copy_from_slice(&f[..n]);
        c.millis = digits(&ms)?;
    }
    Some(())
}

/// Only ASCII digits (`str::parse` would also take a sign).
fn digits(b: &[u8]) -> Option<u32> {
    if b.is_empty() || b.len() > 9 || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(b.iter().fold(0, |n, d| n * 10 + u32::from(d - b'0')))
}

fn is_leap(y: i64) -> bool {
    y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Gregorian date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Day count since 1970-01-01 of a Gregorian date (the inverse of `civil_from_days`).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64, millis: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(millis)
    }

    #[test]
    fn formats() {
        let t = at(1_795_647_827, 123); // 2026-11-25T23:03:47.123Z
        assert_eq!(rfc3339(t), "2026-11-25T23:03:47.123Z");
        assert_eq!(readable(t), "2026-11-25 23:03:47Z");
        assert_eq!(compact(t), "20261125T230347Z");
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let before = UNIX_EPOCH - Duration::from_millis(1);
        assert_eq!(rfc3339(before), "1969-12-31T23:59:59.999Z");
    }

    #[test]
    fn calendar_round_trips_over_centuries() {
        for days in (-800_000..800_000).step_by(7) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(
            days_from_civil(2024, 3, 1) - days_from_civil(2024, 2, 28),
            2
        );
        assert_eq!(
            days_from_civil(2100, 3, 1) - days_from_civil(2100, 2, 28),
            1
        );
    }

    #[test]
    fn rfc3339_round_trips() {
        for t in [at(0, 0), at(1_795_647_827, 123), at(4_102_444_799, 999)] {
            assert_eq!(parse_rfc3339(&rfc3339(t)), Some(t));
        }
        let before = UNIX_EPOCH - Duration::from_millis(1500);
        assert_eq!(parse_rfc3339(&rfc3339(before)), Some(before));
    }

    #[test]
    fn since_absolute_forms() {
        let now = at(2_000_000_000, 0);
        let p = |s: &str| parse_since(s, now).unwrap();
        assert_eq!(p("2026-11-25"), at(1_795_564_800, 0));
        assert_eq!(p("2026-11-25T10:00:00Z"), at(1_795_600_800, 0));
        assert_eq!(p("2026-11-25 10:00:00"), at(1_795_600_800, 0));
        assert_eq!(p("2026-11-25T10:00:00"), at(1_795_600_800, 0));
        assert_eq!(p("2026-11-25T10:00:00.5Z"), at(1_795_600_800, 500));
        assert_eq!(p("2026-11-25T10:00:00.123456789Z"), at(1_795_600_800, 123));
        assert_eq!(p("2024-02-29"), at(1_709_164_800, 0));
    }

    #[test]
    fn since_ages() {
        let now = at(2_000_000_000, 0);
        let p = |s: &str| parse_since(s, now).unwrap();
        assert_eq!(p("90s"), at(2_000_000_000 - 90, 0));
        assert_eq!(p("30m"), at(2_000_000_000 - 1800, 0));
        assert_eq!(p("2h"), at(2_000_000_000 - 7200, 0));
        assert_eq!(p("7d"), at(2_000_000_000 - 7 * 86_400, 0));
        assert_eq!(p("0s"), now);
    }

    #[test]
    fn since_rejects_nonsense() {
        let now = at(2_000_000_000, 0);
        for bad in [
            "",
            "s",
            "-5m",
            "+5m",
            "5w",
            "1.5h",
            "2026-13-01",
            "2026-02-29",
            "2026-11-31",
            "2026-11-25T24:00:00Z",
            "2026-11-25T10:60:00Z",
            "2026-11-25T10:00Z",
            "2026-11-25T10:00:00+01:00",
            "2026-11-25T10:00:00.Z",
            "2026-11-25X10:00:00",
            "26-11-25",
            "2026-1-25",
            "yesterday",
            "99999999999999999999d",
            "2026-11-25T10:00:0é",
            "2026-11-2é",
            "ééééés",
        ] {
            let e = parse_since(bad, now);
            assert!(e.is_err(), "{bad:?} was accepted as {e:?}");
        }
        let msg = parse_since("soon", now).unwrap_err().to_string();
        assert!(msg.contains("2026-11-25") && msg.contains("7d"), "{msg}");
    }
}
