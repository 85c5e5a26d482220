//! Figure 5: from a kernel transition to its line on netstat's stdout, for
//! light and heavy churn: the line's `time` field against when it was read.
use std::{
    fmt::Write as _,
    io::{BufRead, BufReader},
    process::Stdio,
    sync::{Arc, Mutex},
    thread,
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::Result;

use super::Section;
use crate::bench::{
    options::{Bins, Opts},
    sampling::wait_idle,
    stats::{fmt_secs, percentile},
    tracer::{Tracer, TracerKind},
    workload::churn,
};

/// One stream line in this many is timed (see the reader).
const LATENCY_SAMPLE: u64 = 8;

/// Nanoseconds since the epoch of an RFC 3339 UTC time like
/// `2026-11-23T22:28:12.486369874Z`.
fn parse_rfc3339(t: &str) -> Option<i128> {
    let (date, time) = t.split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>());
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let time = time.strip_suffix('Z')?;
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut h = hms.split(':').map(|x| x.parse::<i64>());
    let (hh, mm, ss) = (h.next()?.ok()?, h.next()?.ok()?, h.next()?.ok()?);
    let mut frac = frac.to_string();
    frac.truncate(9);
    while frac.len() < 9 {
        frac.push('0');
    }
    let ns: i64 = frac.parse().ok()?;
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    Some(((days * 86400 + hh * 3600 + mm * 60 + ss) as i128) * 1_000_000_000 + ns as i128)
}

fn now_ns() -> i128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as i128).unwrap_or(0)
}

pub fn measure(opts: &Opts, bins: &Bins, section: &mut Section) -> Result<()> {
    let Section { body: s, notes } = section;
    eprintln!("bench: figure 5, latency");
    let loads = [("light", 200u64, 1u32), ("heavy", 0, 2)];
    let _ = writeln!(
        s,
        "`netstat --stream --json` read line by line through a pipe; latency = the time the line was read minus \
         its `time` field (when the kernel saw the transition, CLOCK_REALTIME), for one line in {LATENCY_SAMPLE} \
         (the lines of the churn's processes only). Light: 200 connections/s from one process; heavy: maximum \
         churn from two. {} s each. Events lost are netstat's own count.\n",
        opts.churn_seconds
    );
    let _ = writeln!(s, "| churn | lines timed | median | p99 | max | events lost |\n|---|---|---|---|---|---|");
    for (label, rate, procs) in loads {
        wait_idle();
        let mut t = match Tracer::start(bins, TracerKind::Netstat { ring: None }, Stdio::piped()) {
            Ok(t) => t,
            Err(e) => {
                let _ = writeln!(s, "| {label} | not measured: `netstat --stream --json` {e} | | | | |");
                notes.push(format!("{label}: not measured ({e})"));
                continue;
            }
        };
        let out = t.child.stdout.take().unwrap();
        let samples = Arc::new(Mutex::new(Vec::<f64>::new()));
        let bad = Arc::new(Mutex::new(0u64));
        let reader = {
            let (samples, bad) = (samples.clone(), bad.clone());
            thread::spawn(move || {
                let mut r = BufReader::with_capacity(1 << 20, out);
                let mut line = Vec::with_capacity(512);
                let mut local = Vec::new();
                // xtask is built without optimisation: parsing every line of a
                // heavy stream would make this reader the bottleneck (netstat
                // would block on the pipe and lose events). Every line is read
                // as it arrives; one in SAMPLE is timed.
                let mut seen = 0u64;
                loop {
                    line.clear();
                    match r.read_until(b'\n', &mut line) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                    seen += 1;
                    if !seen.is_multiple_of(LATENCY_SAMPLE) {
                        continue;
                    }
                    let read_at = now_ns();
                    let text = String::from_utf8_lossy(&line);
                    if !text.contains("\"bench-churn") {
                        continue;
                    }
                    match event_time(&text) {
                        Some(t) => local.push((read_at - t) as f64 / 1e9),
                        None => *bad.lock().unwrap() += 1,
                    }
                }
                samples.lock().unwrap().extend(local);
            })
        };
        // The tracer's own startup marker events are excluded by comm above.
        let c = churn(bins, opts.churn_seconds, rate, procs);
        let (lost, _) = t.finish();
        let _ = reader.join();
        let mut v = samples.lock().unwrap().clone();
        v.sort_by(|a, b| a.total_cmp(b));
        match c {
            Err(e) => {
                let _ = writeln!(s, "| {label} | churn failed: {e:#} | | | | |");
            }
            Ok(_) if v.is_empty() => {
                let why = if *bad.lock().unwrap() > 0 { "lines without a parsable \"time\"" } else { "no churn events seen" };
                let _ = writeln!(s, "| {label} | not measured: {why} | | | | |");
                notes.push(format!("{label}: not measured ({why})"));
            }
            Ok(_) => {
                let (med, p99, max) = (percentile(&v, 0.5), percentile(&v, 0.99), *v.last().unwrap());
                let _ = writeln!(s, "| {label} | {} | {} | {} | {} | {lost} |", v.len(), fmt_secs(med), fmt_secs(p99), fmt_secs(max));
                notes.push(format!("{label}: median {} p99 {} ({} events, {lost} lost)", fmt_secs(med), fmt_secs(p99), v.len()));
            }
        }
    }
    Ok(())
}

/// The one field of a stream line figure 5 reads. Deserialized without
/// building the whole object: in the unoptimised xtask a full parse of each
/// timed line was slow enough to back the stream up (netstat lost events).
#[derive(serde::Deserialize)]
struct Timed<'a> {
    time: &'a str,
}

/// The kernel's time of a stream line (its `time` field), in ns since the epoch.
fn event_time(line: &str) -> Option<i128> {
    parse_rfc3339(serde_json::from_str::<Timed>(line).ok()?.time)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_parses_to_epoch_nanoseconds() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("1970-01-02T00:00:01.5Z"), Some(86_401_500_000_000));
        // date -u -d 2026-11-23T22:28:12Z +%s
        assert_eq!(parse_rfc3339("2026-11-23T22:28:12.000000001Z"), Some(1_795_472_892_000_000_001));
        assert_eq!(parse_rfc3339("garbage"), None);
    }

    #[test]
    fn a_stream_line_gives_its_kernel_time() {
        let l = r#"{"time":"1970-01-01T00:00:01Z","type":"tcp_state","comm":"bench-churn"}"#;
        assert_eq!(event_time(l), Some(1_000_000_000));
        assert_eq!(event_time(r#"{"type":"lost"}"#), None);
        assert_eq!(event_time("not json"), None);
    }
}
