//! UTC timestamps without a date library: unix microseconds and their RFC 3339 form.

use std::time::{SystemTime, UNIX_EPOCH};

pub fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

pub fn now_secs() -> i64 {
    now_micros() / 1_000_000
}

/// (year, month, day) of days since 1970-01-01 (Howard Hinnant's civil_from_days).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// `2026-11-23T15:13:46.677020+00:00`
pub fn rfc3339_micros(micros: i64) -> String {
    let secs = micros.div_euclid(1_000_000);
    let frac = micros.rem_euclid(1_000_000);
    let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{frac:06}+00:00",
        sod / 3600,
        (sod / 60) % 60,
        sod % 60
    )
}

/// `2026/11/23 15:08:07 +0000`, the layout of `heroku ps`.
pub fn ps_time(secs: i64) -> String {
    let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400);
    format!(
        "{y:04}/{mo:02}/{d:02} {:02}:{:02}:{:02} +0000",
        sod / 3600,
        (sod / 60) % 60,
        sod % 60
    )
}

/// `~ 30m ago` style age.
pub fn ago(secs: i64) -> String {
    let s = secs.max(0);
    if s < 60 {
        format!("~ {s}s ago")
    } else if s < 3600 {
        format!("~ {}m ago", s / 60)
    } else if s < 86_400 {
        format!("~ {}h ago", s / 3600)
    } else {
        format!("~ {}d ago", s / 86_400)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        // 2026-11-23T15:13:46.677020Z
        let t = 1_795_446_826_677_020;
        assert_eq!(rfc3339_micros(t), "2026-11-23T15:13:46.677020+00:00");
        assert_eq!(ps_time(t / 1_000_000), "2026/11/23 15:13:46 +0000");
        assert_eq!(rfc3339_micros(0), "1970-01-01T00:00:00.000000+00:00");
        // A leap day.
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
    }

    #[test]
    fn ages() {
        assert_eq!(ago(5), "~ 5s ago");
        assert_eq!(ago(1800), "~ 30m ago");
        assert_eq!(ago(7200), "~ 2h ago");
    }
}

/// `2026-11-23T15:13:46Z`, the Platform API's timestamp layout.
pub fn iso_secs(secs: i64) -> String {
    let s = rfc3339_micros(secs * 1_000_000);
    format!("{}Z", &s[..19])
}

/// Days since 1970-01-01 of a civil date (inverse of `civil_from_days`).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 } as i64;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Parses `YYYY-MM-DDTHH:MM:SS` followed by `Z`, `+00:00` or a fraction; UTC only.
pub fn parse_iso(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let days = days_from_civil(num(0..4)?, num(5..7)? as u32, num(8..10)? as u32);
    Some(days * 86_400 + num(11..13)? * 3600 + num(14..16)? * 60 + num(17..19)?)
}

#[cfg(test)]
mod iso_tests {
    use super::*;

    #[test]
    fn iso_round_trip() {
        let t = 1_795_446_826;
        assert_eq!(iso_secs(t), "2026-11-23T15:13:46Z");
        assert_eq!(parse_iso(&iso_secs(t)), Some(t));
        assert_eq!(parse_iso("2026-11-23T15:13:46.677020+00:00"), Some(t));
        assert_eq!(parse_iso("garbage"), None);
    }
}
