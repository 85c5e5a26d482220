//! The figures of bench/RESULTS.md, one file each, listed once in `FIGURES`.
//! A figure measured on its own gets a function that writes its section body
//! and summary notes; figures that need N connections held share one sweep
//! over the sizes (`sweep.rs`), so the connections are set up once per size.
mod bpf_cost;
mod cost;
mod fleet;
mod history;
mod latency;
mod loss;
mod memory;
mod overhead;
mod snapshot;
mod sweep;

use std::fmt::Write as _;

use anyhow::Result;

use super::{
    options::{Bins, Opts},
    report::Report,
};

/// What one figure's measurement wrote: its markdown body and summary lines.
#[derive(Default)]
pub struct Section {
    pub body: String,
    pub notes: Vec<String>,
}

pub enum Measure {
    /// Measured on its own.
    Alone(fn(&Opts, &Bins, &mut Section) -> Result<()>),
    /// Measured at each size of the held-connections sweep.
    Held,
}

pub struct Figure {
    pub number: u8,
    pub title: &'static str,
    pub measure: Measure,
}

/// Every figure, in the page's order.
pub const FIGURES: &[Figure] = &[
    Figure {
        number: 1,
        title: "Snapshot: listing N established loopback connections (2N sockets)",
        measure: Measure::Held,
    },
    Figure {
        number: 2,
        title: "Loss: `netstat --stream --json >/dev/null` under maximum churn",
        measure: Measure::Alone(loss::measure),
    },
    Figure {
        number: 3,
        title: "Overhead: churn rate with a tracer running vs untraced",
        measure: Measure::Alone(overhead::measure),
    },
    Figure { number: 4, title: "Memory: peak RSS of `netstat -ano 5` (live table)", measure: Measure::Held },
    Figure { number: 5, title: "Latency: kernel transition to its line on stdout", measure: Measure::Alone(latency::measure) },
    Figure {
        number: 6,
        title: "Per-program BPF cost, with traffic that sends data",
        measure: Measure::Alone(bpf_cost::measure),
    },
    Figure {
        number: 7,
        title: "History: the recorder beside the stream at maximum churn, and queries over 10 million lifetimes",
        measure: Measure::Alone(history::measure),
    },
    Figure {
        number: 8,
        title: "Fleet store: one recorder forwarding into PostgreSQL, and the bytes per connection there",
        measure: Measure::Alone(fleet::measure),
    },
    Figure {
        number: 9,
        title: "Tracer cost side by side: BPF and CPU per connection, loss and memory, at a fixed rate and at maximum churn",
        measure: Measure::Alone(cost::measure),
    },
];

/// The wanted figures: the held sweep first, then the others in order. A
/// figure measured alone that fails says so in its section and the run goes on.
pub fn run(opts: &Opts, bins: &Bins, report: &mut Report) -> Result<()> {
    let wanted = || FIGURES.iter().filter(|f| opts.wants(f.number));
    if wanted().any(|f| matches!(f.measure, Measure::Held)) {
        sweep::run(opts, bins, report)?;
    }
    for f in wanted() {
        let Measure::Alone(measure) = f.measure else { continue };
        let mut section = Section::default();
        if let Err(e) = measure(opts, bins, &mut section) {
            let _ = writeln!(section.body, "\nNot completed: {e:#}");
            section.notes.push(format!("not completed: {e:#}"));
        }
        report.sections.insert(f.number, section.body);
        report.summary.insert(f.number, section.notes);
    }
    Ok(())
}
