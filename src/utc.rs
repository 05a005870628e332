//! UTC calendar time: what the audit log and the conflict file names need (formatting) and
//! what `--since` accepts (parsing), on jiff's calendar. Local time is never used, so a log read
//! on another machine or after a DST change says the same thing. The accepted forms are
//! checked here to the letter (jiff alone would take more: offsets, times without seconds).

use anyhow::{bail, Result};
use jiff::civil::DateTime;
use jiff::tz::TimeZone;
use jiff::Timestamp;
use std::time::{Duration, SystemTime};

/// `t` in UTC as `format` (strftime) says; times beyond jiff's range (years past 9999) are
/// clamped to its ends.
fn format(t: SystemTime, format: &str) -> String {
    let ts = Timestamp::try_from(t).unwrap_or(if t > SystemTime::UNIX_EPOCH {
        Timestamp::MAX
    } else {
        Timestamp::MIN
    });
    ts.strftime(format).to_string()
}

/// RFC 3339 with milliseconds: `2026-11-25T23:03:47.123Z`.
pub fn rfc3339(t: SystemTime) -> String {
    format(t, "%Y-%m-%dT%H:%M:%S%.3fZ")
}

/// To the second, for people: `2026-11-25 23:03:47Z`.
pub fn readable(t: SystemTime) -> String {
    format(t, "%Y-%m-%d %H:%M:%SZ")
}

/// Without separators, for file names: `20261125T230347Z`.
pub fn compact(t: SystemTime) -> String {
    format(t, "%Y%m%dT%H%M%SZ")
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

/// The fields of a date and time in UTC, as written; jiff says whether they make a moment.
#[derive(Default)]
struct Fields {
    year: u32,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
    millis: u32,
}

fn parse_absolute(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    let (date, time) = match b.len() {
        10 => (b, None),
        n if n > 11 && matches!(b[10], b'T' | b' ') => (&b[..10], Some(&b[11..])),
        _ => return None,
    };
    let mut f = parse_date(date)?;
    if let Some(time) = time {
        parse_time(time, &mut f)?;
    }
    let small = |n: u32| i8::try_from(n).ok();
    let at = DateTime::new(
        i16::try_from(f.year).ok()?,
        small(f.month)?,
        small(f.day)?,
        small(f.hour)?,
        small(f.minute)?,
        small(f.second)?,
        i32::try_from(f.millis).ok()? * 1_000_000,
    )
    .ok()?;
    let ts = TimeZone::UTC.to_timestamp(at).ok()?;
    SystemTime::try_from(ts).ok()
}

/// `YYYY-MM-DD`.
fn parse_date(b: &[u8]) -> Option<Fields> {
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    Some(Fields {
        year: digits(&b[0..4])?,
        month: digits(&b[5..7])?,
        day: digits(&b[8..10])?,
        ..Fields::default()
    })
}

/// `HH:MM:SS[.fraction][Z]` into `f`.
fn parse_time(b: &[u8], f: &mut Fields) -> Option<()> {
    let b = b.strip_suffix(b"Z").unwrap_or(b);
    if b.len() < 8 || b[2] != b':' || b[5] != b':' {
        return None;
    }
    f.hour = digits(&b[0..2])?;
    f.minute = digits(&b[3..5])?;
    f.second = digits(&b[6..8])?;
    let fraction = &b[8..];
    if !fraction.is_empty() {
        let frac = fraction.strip_prefix(b".")?;
        if frac.len() > 9 {
            return None;
        }
        digits(frac)?;
        // Milliseconds are all the log keeps; finer digits are dropped, not rounded.
        let mut ms = [b'0'; 3];
        let n = frac.len().min(3);
        ms[..n].copy_from_slice(&frac[..n]);
        f.millis = digits(&ms)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

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
