//! RFC 3339 UTC timestamps with nanoseconds, without a date crate.

fn clock_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
}

/// CLOCK_MONOTONIC in nanoseconds: the clock of kernel event timestamps.
pub fn monotonic_ns() -> u64 {
    clock_ns(libc::CLOCK_MONOTONIC) as u64
}

/// CLOCK_REALTIME in nanoseconds since the Unix epoch.
pub fn realtime_ns() -> i128 {
    clock_ns(libc::CLOCK_REALTIME)
}

/// CLOCK_REALTIME - CLOCK_MONOTONIC, to date kernel timestamps.
pub fn realtime_offset_ns() -> i128 {
    clock_ns(libc::CLOCK_REALTIME) - clock_ns(libc::CLOCK_MONOTONIC)
}

/// `2026-11-23T22:10:00.123456789Z` for nanoseconds since the Unix epoch.
pub fn rfc3339_nanos(unix_ns: i128) -> String {
    let secs = unix_ns.div_euclid(1_000_000_000) as i64;
    let nanos = unix_ns.rem_euclid(1_000_000_000) as u32;
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
        sod / 3600,
        (sod / 60) % 60,
        sod % 60
    )
}

/// `23:59:59.999999`: the UTC time of day, microseconds, for nanoseconds
/// since the Unix epoch (the `--stream` text column; JSON keeps the date
/// and the nanoseconds). Formats without allocating.
#[derive(Clone, Copy)]
pub struct TimeOfDay(pub i128);

impl TimeOfDay {
    /// The text as bytes, written digit by digit: the `--stream` text
    /// layout puts this on every line.
    pub fn bytes(self) -> [u8; 15] {
        let secs = self.0.div_euclid(1_000_000_000) as i64;
        let micros = self.0.rem_euclid(1_000_000_000) as u32 / 1000;
        let sod = secs.rem_euclid(86_400) as u32;
        let mut b = *b"00:00:00.000000";
        for (at, v) in [(0, sod / 3600), (3, (sod / 60) % 60), (6, sod % 60)] {
            b[at] = b'0' + (v / 10) as u8;
            b[at + 1] = b'0' + (v % 10) as u8;
        }
        let mut m = micros;
        for d in b[9..].iter_mut().rev() {
            *d = b'0' + (m % 10) as u8;
            m /= 10;
        }
        b
    }
}

impl std::fmt::Display for TimeOfDay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // ASCII digits and separators only.
        f.write_str(std::str::from_utf8(&self.bytes()).unwrap_or_default())
    }
}

/// `2026-12-02 20:41:07.123` in local time (TZ), for unix µs: the
/// history's text columns.
pub fn local_millis(unix_us: i64) -> String {
    let secs = unix_us.div_euclid(1_000_000);
    let ms = unix_us.rem_euclid(1_000_000) / 1000;
    let t: libc::time_t = secs as libc::time_t;
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    if unsafe { libc::localtime_r(&t, &mut tm) }.is_null() {
        return rfc3339_nanos(unix_us as i128 * 1000);
    }
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{ms:03}",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec
    )
}

/// A TIME as the history options take it, in unix µs: RFC 3339
/// (`2026-12-02T03:12:00Z`, `...+01:00`, fractions allowed),
/// `YYYY-MM-DD HH:MM[:SS]` in local time, relative to `now_us`
/// (`-10m`, `-2h`, `-1d`, `-30s`, `-1w`), or `now`.
pub fn parse_time(s: &str, now_us: i64) -> Result<i64, String> {
    let t = s.trim();
    if t == "now" {
        return Ok(now_us);
    }
    if let Some(rel) = t.strip_prefix('-') {
        return parse_duration_us(rel).map(|d| now_us - d).map_err(|_| "expected a relative time such as -10m, -2h or -1d".into());
    }
    const EXPECTED: &str = "expected RFC 3339 (2026-12-02T03:12:00Z), 'YYYY-MM-DD HH:MM[:SS]' in local time, or -10m, -2h, -1d";
    let b = t.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let p = t.get(r)?;
        p.bytes().all(|c| c.is_ascii_digit()).then(|| p.parse().ok()).flatten()
    };
    if b.len() < 16 || b[4] != b'-' || b[7] != b'-' || !(b[10] == b'T' || b[10] == b't' || b[10] == b' ') || b[13] != b':' {
        return Err(EXPECTED.into());
    }
    let (y, mo, d, h, mi) = (num(0..4), num(5..7), num(8..10), num(11..13), num(14..16));
    let (Some(y), Some(mo), Some(d), Some(h), Some(mi)) = (y, mo, d, h, mi) else { return Err(EXPECTED.into()) };
    let mut at = 16;
    let mut sec = 0;
    let mut frac_us = 0i64;
    if b.get(at) == Some(&b':') {
        sec = num(at + 1..at + 3).ok_or(EXPECTED)?;
        at += 3;
        if b.get(at) == Some(&b'.') {
            let start = at + 1;
            let mut end = start;
            while b.get(end).is_some_and(u8::is_ascii_digit) {
                end += 1;
            }
            if end == start {
                return Err(EXPECTED.into());
            }
            let digits = &t[start..end.min(start + 6)];
            frac_us = digits.parse::<i64>().map_err(|_| EXPECTED)? * 10i64.pow(6 - digits.len() as u32);
            at = end;
        }
    }
    if !(1..=12).contains(&mo) || d < 1 || d > days_in_month(y, mo) || h > 23 || mi > 59 || sec > 60 {
        return Err("no such date or time".into());
    }
    let rest = &t[at..];
    let wall = days_from_civil(y, mo as u32, d as u32) * 86_400 + h * 3600 + mi * 60 + sec;
    let offset = match rest {
        "Z" | "z" => 0,
        "" if b[10] == b' ' => return local_to_unix(y, mo, d, h, mi, sec).map(|s| s * 1_000_000 + frac_us),
        "" => return Err("an RFC 3339 time needs its offset (Z or +HH:MM); write 'YYYY-MM-DD HH:MM' for local time".into()),
        r if (r.starts_with('+') || r.starts_with('-')) && r.len() == 6 && r.as_bytes()[3] == b':' => {
            let (oh, om) = (r[1..3].parse::<i64>().map_err(|_| EXPECTED)?, r[4..6].parse::<i64>().map_err(|_| EXPECTED)?);
            let o = oh * 3600 + om * 60;
            if r.starts_with('-') { -o } else { o }
        }
        _ => return Err(EXPECTED.into()),
    };
    Ok((wall - offset) * 1_000_000 + frac_us)
}

fn local_to_unix(y: i64, mo: i64, d: i64, h: i64, mi: i64, s: i64) -> Result<i64, String> {
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    tm.tm_year = (y - 1900) as i32;
    tm.tm_mon = (mo - 1) as i32;
    tm.tm_mday = d as i32;
    tm.tm_hour = h as i32;
    tm.tm_min = mi as i32;
    tm.tm_sec = s as i32;
    tm.tm_isdst = -1;
    let t = unsafe { libc::mktime(&mut tm) };
    if t == -1 && !(y == 1969 && mo == 12 && d == 31) {
        return Err("not a local time here".into());
    }
    Ok(t as i64)
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Howard Hinnant's civil-to-days algorithm.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A DURATION: a positive whole number followed by s, m, h, d or w, in µs.
pub fn parse_duration_us(s: &str) -> Result<i64, String> {
    const EXPECTED: &str = "expected a whole number followed by s, m, h, d or w (30s, 10m, 2h, 7d)";
    let t = s.trim();
    let (num, unit) = t.split_at(t.len().saturating_sub(1));
    let mult: i64 = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(EXPECTED.into()),
    };
    let n: i64 = num.parse().map_err(|_| EXPECTED)?;
    if n <= 0 || !num.bytes().all(|c| c.is_ascii_digit()) {
        return Err(EXPECTED.into());
    }
    n.checked_mul(mult * 1_000_000).ok_or_else(|| "too long".into())
}

/// `7.0ms`, `1.250s`, `2h03m`: how long a connection lived.
pub fn lived(us: i64) -> String {
    let us = us.max(0);
    match us {
        0..1_000 => format!("{us}us"),
        1_000..1_000_000 => format!("{:.1}ms", us as f64 / 1e3),
        1_000_000..60_000_000 => format!("{:.3}s", us as f64 / 1e6),
        _ => {
            let s = us / 1_000_000;
            if s < 3600 { format!("{}m{:02}s", s / 60, s % 60) } else { format!("{}h{:02}m", s / 3600, (s / 60) % 60) }
        }
    }
}

/// Howard Hinnant's days-to-civil algorithm.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(rfc3339_nanos(0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(rfc3339_nanos(951_782_400_000_000_001), "2000-02-29T00:00:00.000000001Z");
        assert_eq!(rfc3339_nanos(1_795_478_400_123_456_789), "2026-11-24T00:00:00.123456789Z");
        assert_eq!(rfc3339_nanos(-1), "1969-12-31T23:59:59.999999999Z");
        assert_eq!(TimeOfDay(1_795_478_400_123_456_789).to_string(), "00:00:00.123456");
        assert_eq!(TimeOfDay(-1).to_string(), "23:59:59.999999");
    }

    #[test]
    fn parses_history_times() {
        let now = 1_795_478_400_000_000; // 2026-11-24T00:00:00Z
        assert_eq!(parse_time("2026-11-24T00:00:00Z", now), Ok(now));
        assert_eq!(parse_time("2026-11-24T01:00:00+01:00", now), Ok(now));
        assert_eq!(parse_time("2026-11-23T23:00:00.5-01:00", now), Ok(now + 500_000));
        assert_eq!(parse_time("2026-11-24t00:00Z", now), Ok(now));
        assert_eq!(parse_time("-10m", now), Ok(now - 600_000_000));
        assert_eq!(parse_time("-2h", now), Ok(now - 7_200_000_000));
        assert_eq!(parse_time("-1d", now), Ok(now - 86_400_000_000));
        assert_eq!(parse_time("now", now), Ok(now));
        for bad in ["", "yesterday", "-10", "-m", "2026-13-01 00:00", "2026-02-30 00:00", "2026-11-24T00:00:00", "2026-11-24 25:00", "12:00"] {
            assert!(parse_time(bad, now).is_err(), "{bad}");
        }
    }

    #[test]
    fn local_times_follow_tz() {
        // SAFETY: tests in this module do not read the environment concurrently.
        unsafe { std::env::set_var("TZ", "UTC") };
        let now = 1_795_478_400_000_000;
        assert_eq!(parse_time("2026-11-24 00:00", 0), Ok(now));
        assert_eq!(parse_time("2026-11-24 00:00:01", 0), Ok(now + 1_000_000));
        assert_eq!(local_millis(now + 1_234_567), "2026-11-24 00:00:01.234");
    }

    #[test]
    fn parses_durations() {
        assert_eq!(parse_duration_us("7d"), Ok(7 * 86_400_000_000));
        assert_eq!(parse_duration_us("30s"), Ok(30_000_000));
        assert_eq!(parse_duration_us("1w"), Ok(7 * 86_400_000_000));
        for bad in ["", "7", "d", "0s", "-1h", "1.5h", "+3m", "3x"] {
            assert!(parse_duration_us(bad).is_err(), "{bad}");
        }
        assert_eq!(lived(7_000), "7.0ms");
        assert_eq!(lived(1_250_000), "1.250s");
        assert_eq!(lived(7_380_000_000), "2h03m");
    }
}
