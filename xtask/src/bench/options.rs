//! The bench command line and the binaries under test. Knows nothing of
//! the figures themselves.
use std::path::PathBuf;

use anyhow::{Context as _, Result, bail};

const USAGE: &str = "usage: cargo xtask bench [--runs N] [--no-100k] [--only 1,2,3,4,5,6,7,8,9] [--churn-seconds S] [--netstat PATH] [--out PATH]

Runs the figures (needs root): 1-5 of issue 6, 6 of issue 12, 7 and 8 of issues 16 and 17, 9 of issue 14; writes
bench/RESULTS.md. With --only, the other figures' sections are kept from the page it replaces.
  --runs N            timed runs per command (default 5; 3 for commands slower than 5 s)
  --no-100k           skip the 100k-connection step of figures 1 and 4 (saves ~3 minutes)
  --only LIST         only these figures
  --churn-seconds S   length of each churn run in figures 3 and 5 (default 5)
  --netstat PATH      measure this netstat binary instead of the one built here (e.g. an older commit's)
  --out PATH          where to write the results (default bench/RESULTS.md)";

pub struct Opts {
    pub runs: usize,
    pub big: bool,
    /// `--only`: these figures; all when None.
    pub only: Option<Vec<u8>>,
    pub churn_seconds: u64,
    /// `--netstat`: the binary under test, when not the one built here.
    pub netstat: Option<PathBuf>,
    pub out: PathBuf,
}

impl Opts {
    pub fn parse(args: &[String]) -> Result<Option<Opts>> {
        let mut o = Opts {
            runs: 5,
            big: true,
            only: None,
            churn_seconds: 5,
            netstat: None,
            out: crate::root().join("bench/RESULTS.md"),
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let mut val = || it.next().with_context(|| format!("{a} needs a value\n{USAGE}"));
            match a.as_str() {
                "--runs" => o.runs = val()?.parse().context("--runs")?,
                "--no-100k" => o.big = false,
                "--only" => {
                    o.only = Some(val()?.split(',').map(|f| f.trim().parse()).collect::<Result<_, _>>().context("--only")?)
                }
                "--churn-seconds" => o.churn_seconds = val()?.parse().context("--churn-seconds")?,
                "--netstat" => o.netstat = Some(std::path::absolute(val()?).context("--netstat")?),
                "--out" => o.out = PathBuf::from(val()?),
                "-h" | "--help" => {
                    println!("{USAGE}");
                    return Ok(None);
                }
                other => bail!("unknown bench option '{other}'\n{USAGE}"),
            }
        }
        if o.runs == 0 {
            bail!("--runs must be at least 1");
        }
        if let Some(p) = &o.netstat
            && !p.is_file()
        {
            bail!("--netstat {}: no such file", p.display());
        }
        Ok(Some(o))
    }

    pub fn wants(&self, figure: u8) -> bool {
        self.only.as_ref().is_none_or(|f| f.contains(&figure))
    }
}

/// The binaries under test.
pub struct Bins {
    pub netstat: PathBuf,
    pub load: PathBuf,
    pub nettools: PathBuf,
}
