//! Medians, spreads and how a measured time or size is written in a cell.
//! Pure functions: nothing here runs a command.

/// Wall times of one command over its runs.
#[derive(Clone, Default)]
pub struct Times {
    pub secs: Vec<f64>,
    pub lines: usize,
    pub failure: Option<String>,
}

pub fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

pub fn spread(v: &[f64]) -> (f64, f64) {
    v.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| (lo.min(*x), hi.max(*x)))
}

pub fn fmt_secs(s: f64) -> String {
    if s >= 1.0 { format!("{s:.2} s") } else { format!("{:.1} ms", s * 1000.0) }
}

pub fn cell(t: &Times) -> String {
    if let Some(f) = &t.failure {
        return format!("not measured: {f}");
    }
    let (lo, hi) = spread(&t.secs);
    format!("{} ({}–{}, n={})", fmt_secs(median(&t.secs)), fmt_secs(lo), fmt_secs(hi), t.secs.len())
}

/// How many times faster `ours` is than `anchor`, or a dash.
pub fn ratio_cell(anchor: &Times, ours: &Times) -> String {
    if anchor.failure.is_some() || ours.failure.is_some() {
        return "–".into();
    }
    format!("{:.2}x", median(&anchor.secs) / median(&ours.secs))
}

pub fn kib(b: u64) -> String {
    if b >= 1 << 20 { format!("{} MiB", b >> 20) } else { format!("{} KiB", b >> 10) }
}

pub fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    c.next().map(|f| f.to_uppercase().chain(c).collect()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_percentiles() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.99), 99.0);
    }
}
