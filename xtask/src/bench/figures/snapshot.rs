//! Figure 1: `netstat -an`/`-ano` against `ss -tan`/`-tanp` and net-tools
//! `netstat -tan`/`-tanp`, timed alternately at each held size.
use std::fmt::Write as _;

use crate::bench::{
    options::{Bins, Opts},
    stats::{Times, cell, fmt_secs, median, ratio_cell},
    timing::{SLOW, SLOW_RUNS, time_alternating},
    workload::Held,
};

type Commands = Vec<(String, Vec<String>)>;

pub struct Snapshot {
    plain: Commands,
    owners: Commands,
    /// Why our own `-an` / `-ano` cannot be measured, found before the sweep.
    ours_an: Option<String>,
    ours_ano: Option<String>,
    last_size: u64,
    rows: String,
    pub notes: Vec<String>,
}

impl Snapshot {
    pub fn new(bins: &Bins, ours_an: Option<String>, ours_ano: Option<String>, last_size: u64) -> Snapshot {
        let ns = bins.netstat.to_string_lossy().to_string();
        let nt = bins.nettools.to_string_lossy().to_string();
        let argv = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<String>>();
        Snapshot {
            plain: vec![
                ("netstat -an".to_string(), argv(&[&ns, "-an"])),
                ("ss -tan".to_string(), argv(&["ss", "-tan"])),
                ("net-tools netstat -tan".to_string(), argv(&[&nt, "-tan"])),
            ],
            owners: vec![
                ("netstat -ano".to_string(), argv(&[&ns, "-ano"])),
                ("ss -tanp".to_string(), argv(&["ss", "-tanp"])),
                ("net-tools netstat -tanp".to_string(), argv(&[&nt, "-tanp"])),
            ],
            ours_an,
            ours_ano,
            last_size,
            rows: String::new(),
            notes: Vec::new(),
        }
    }

    /// Time every command at `n` held connections and add the row; Err is
    /// why the holder went before the timing was done (the step may be repeated).
    pub fn time(&mut self, n: u64, runs: usize, held: &mut Held) -> Result<(), String> {
        let plain = time_alternating(&self.plain, runs, held)?;
        let owners = time_alternating(&self.owners, runs, held)?;
        self.row(n, held, plain, owners);
        Ok(())
    }

    /// The row of a step that could not be timed.
    pub fn failed(&mut self, n: u64, held: &Held, why: String) {
        let failed = vec![Times { failure: Some(why), ..Times::default() }; 3];
        self.row(n, held, failed.clone(), failed);
    }

    fn row(&mut self, n: u64, held: &Held, mut plain: Vec<Times>, mut owners: Vec<Times>) {
        if let Some(e) = &self.ours_an {
            plain[0].failure = Some(e.clone());
        }
        if let Some(e) = &self.ours_ano {
            owners[0].failure = Some(e.clone());
        }
        let _ = writeln!(
            self.rows,
            "| {n} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            held.others,
            cell(&plain[0]),
            cell(&plain[1]),
            cell(&plain[2]),
            ratio_cell(&plain[1], &plain[0]),
            cell(&owners[0]),
            cell(&owners[1]),
            cell(&owners[2]),
            ratio_cell(&owners[1], &owners[0]),
        );
        for (label, t) in [("netstat -an", &plain[0]), ("netstat -ano", &owners[0])] {
            if t.failure.is_none() && (t.lines as u64) < 2 * n {
                let _ = writeln!(
                    self.rows,
                    "\n> Warning: `{label}` printed {} lines at {n} connections (expected at least {}).\n",
                    t.lines,
                    2 * n
                );
            }
        }
        let speed = |anchor: &Times, ours: &Times| match (anchor.failure.as_ref(), ours.failure.as_ref()) {
            (None, None) => format!("{:.2}x faster", median(&anchor.secs) / median(&ours.secs)),
            _ => "not measured".into(),
        };
        self.notes.push(format!(
            "{n}: -an vs ss -tan ({}): {}; -ano vs ss -tanp ({}): {}",
            fmt_secs(median(&plain[1].secs)),
            speed(&plain[1], &plain[0]),
            fmt_secs(median(&owners[1].secs)),
            speed(&owners[1], &owners[0])
        ));
        if n == 100_000 {
            let met = |t: f64, r: Option<f64>| match r {
                Some(r) if r >= t => format!("met ({r:.1}x)"),
                Some(r) => format!("MISSED ({r:.2}x)"),
                None => "not measured".into(),
            };
            let r = |a: &Times, o: &Times| {
                (a.failure.is_none() && o.failure.is_none()).then(|| median(&a.secs) / median(&o.secs))
            };
            self.notes
                .push(format!("target -ano ≥20x faster than ss -tanp at 100k: {}", met(20.0, r(&owners[1], &owners[0]))));
        }
        if n == self.last_size {
            let r = (plain[0].failure.is_none() && plain[1].failure.is_none())
                .then(|| median(&plain[1].secs) / median(&plain[0].secs));
            self.notes.push(format!(
                "target -an no slower than ss -tan (at {n}): {}",
                match r {
                    Some(r) if r >= 1.0 => format!("met ({r:.2}x)"),
                    Some(r) => format!("MISSED ({r:.2}x)"),
                    None => "not measured".into(),
                }
            ));
        }
    }

    /// The section body and the summary notes.
    pub fn finish(self, opts: &Opts) -> (String, Vec<String>) {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "Wall time with stdout to a file on tmpfs; median (min–max, runs). \"Other TCP sockets\" were on the \
             machine besides the 2N held (other work's listeners, connections, TIME_WAIT); every command lists them \
             too. \"ss/ours\" is how many times faster \
             `netstat` is than `ss` (above 1: faster). Targets: `-an` no slower than `ss -tan`; `-ano` at 100k at \
             least 20x faster than `ss -tanp`. Commands slower than {} s get {SLOW_RUNS} runs.\n",
            SLOW.as_secs()
        );
        let _ = writeln!(
            s,
            "| connections | other TCP sockets | `netstat -an` | `ss -tan` | net-tools `netstat -tan` | ss/ours | `netstat -ano` | `ss -tanp` | net-tools `netstat -tanp` | ss/ours |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|");
        s.push_str(&self.rows);
        if !opts.big {
            s.push_str("\n100k not measured: run without --no-100k.\n");
        }
        (s, self.notes)
    }
}
