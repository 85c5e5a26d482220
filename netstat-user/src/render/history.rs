//! `--history`'s layouts: the lifetimes table (Windows netstat's columns
//! and two-space separation, then Opened, Closed, Lived), the gaps in the
//! record under it, and the JSON document. `--at` prints through
//! `render::connections`, as any table does.
use std::io::{self, Write};

use super::{connections, json};
use crate::{
    cli::config::Config,
    model::{
        history::{Gap, GapKind, Recorded},
        tcp_state_name,
    },
    timefmt::{lived, local_millis},
};

pub fn write(rows: &[Recorded], gaps: &[Gap], cfg: &Config, w: &mut impl Write) -> io::Result<()> {
    if cfg.json {
        return write_json(rows, gaps, w);
    }
    writeln!(w, "\nConnection history\n")?;
    // A fleet's record across hosts: each row names its host first.
    let host_width = if cfg.query.host.is_none() && rows.iter().any(|r| r.host.is_some()) {
        Some(rows.iter().map(|r| host_text(r.host.as_deref()).chars().count()).max().unwrap_or(0).clamp(4, 32))
    } else {
        None
    };
    let mut line = String::with_capacity(256);
    line.push_str("  ");
    if let Some(wd) = host_width {
        cell(&mut line, "Host", wd);
    }
    head(&mut line);
    writeln!(w, "{}", line.trim_end())?;
    for r in rows {
        line.clear();
        if let Some(wd) = host_width {
            line.push_str("  ");
            cell(&mut line, &host_text(r.host.as_deref()), wd);
            line.push_str(&row_text(r)[2..]);
        } else {
            row(&mut line, r);
        }
        writeln!(w, "{}", line.trim_end())?;
        if cfg.executable {
            line.clear();
            connections::owner_line(&mut line, &r.conn, cfg.verbose);
            w.write_all(line.as_bytes())?;
        }
    }
    if !gaps.is_empty() {
        writeln!(w, "\nGaps in the record\n")?;
        for g in gaps {
            writeln!(w, "  {}", gap_text(g))?;
        }
    }
    Ok(())
}

fn cell(line: &mut String, s: &str, width: usize) {
    line.push_str(s);
    for _ in s.chars().count()..width {
        line.push(' ');
    }
    line.push_str("  ");
}

const COLUMNS: [(&str, usize); 9] = [
    ("Proto", 5),
    ("Local Address", 21),
    ("Foreign Address", 21),
    ("Final State", 12),
    ("End", 12),
    ("PID", 7),
    ("Opened", 23),
    ("Closed", 23),
    ("Lived", 0),
];

fn head(line: &mut String) {
    for (name, width) in COLUMNS {
        cell(line, name, width);
    }
}

fn host_text(h: Option<&str>) -> String {
    crate::escape::escape(h.unwrap_or("")).into_owned()
}

fn row_text(r: &Recorded) -> String {
    let mut s = String::new();
    row(&mut s, r);
    s
}

fn row(line: &mut String, r: &Recorded) {
    let c = &r.conn;
    line.push_str("  ");
    let cells = [
        c.proto.name().to_string(),
        c.local.to_string(),
        connections::foreign_text(c, None, false),
        c.state.map(tcp_state_name).unwrap_or_default().to_string(),
        r.end.text().to_string(),
        connections::pid_cell(c).to_string(),
        format!("{}{}", if r.before_recording { "<" } else { "" }, local_millis(r.opened_us)),
        r.closed_us.map(local_millis).unwrap_or_else(|| "open".into()),
        r.closed_us.map(|t| lived(t - r.opened_us)).unwrap_or_default(),
    ];
    for (text, (_, width)) in cells.iter().zip(COLUMNS) {
        cell(line, text, width);
    }
}

/// One gap as the text layout says it.
pub fn gap_text(g: &Gap) -> String {
    let host = g.host.as_deref().map(|h| format!("{}: ", host_text(Some(h)))).unwrap_or_default();
    host + &match &g.kind {
        GapKind::NotRecording => {
            format!("{} to {}: netstat was not recording", local_millis(g.from_us), local_millis(g.to_us))
        }
        GapKind::Lost { reason, count } => format!(
            "{}: {count} kernel events lost ({})",
            local_millis(g.from_us),
            crate::escape::escape(reason)
        ),
    }
}

fn write_json(rows: &[Recorded], gaps: &[Gap], w: &mut impl Write) -> io::Result<()> {
    let mut buf = Vec::with_capacity(512 * rows.len().min(4096) + 64);
    let mut o = json::Obj::document(&mut buf);
    json::array(&mut o, "connections", rows, |b, r| json::recorded(b, r));
    json::array(&mut o, "gaps", gaps, |b, g| json::gap(b, g));
    o.end();
    buf.push(b'\n');
    w.write_all(&buf)
}
