//! `cargo xtask bless`: the one way to rewrite the golden files of
//! netstat-user/tests/cli_golden.rs after a deliberate output change. The test
//! only compares; this runs it with a scratch directory for what each case
//! printed, copies that over the expected files, and runs it again. Refuses
//! under CI, so a CI run can never make its own expectations pass.
use std::{fs, path::Path};

use anyhow::{Context as _, Result, bail};

use crate::{cargo, root};

const USAGE: &str = "usage: cargo xtask bless

Rewrites netstat-user/tests/fixtures/<tree>/golden/*.txt with what netstat
prints now (the cases of tests/cli_golden.rs), then checks the test passes.
Refused when CI is set (CI=true): review the diff and commit it instead.";

pub fn run(args: &[String]) -> Result<()> {
    if let Some(a) = args.first() {
        if a == "-h" || a == "--help" {
            println!("{USAGE}");
            return Ok(());
        }
        bail!("unknown argument '{a}'\n{USAGE}");
    }
    if in_ci(std::env::var("CI").ok().as_deref()) {
        bail!("bless refused: CI is set; golden files change only in a reviewed commit");
    }
    let scratch = std::env::temp_dir().join(format!("netstat-golden-{}", std::process::id()));
    let _ = fs::remove_dir_all(&scratch);
    fs::create_dir_all(&scratch)?;
    let result = bless(&scratch);
    let _ = fs::remove_dir_all(&scratch);
    result
}

/// CI=true (GitHub, GitLab and most others), or any value but empty/0/false.
fn in_ci(ci: Option<&str>) -> bool {
    ci.is_some_and(|v| !matches!(v.trim().to_ascii_lowercase().as_str(), "" | "0" | "false"))
}

fn golden_test() -> std::process::Command {
    let mut c = cargo();
    c.args(["test", "--release", "-p", "netstat-user", "--test", "cli_golden", "--", "--quiet"]);
    c
}

fn bless(scratch: &Path) -> Result<()> {
    // Fails where the output changed; what each case printed is in `scratch` either way.
    let mut c = golden_test();
    c.env("NETSTAT_GOLDEN_ACTUAL", scratch);
    let _ = c.status().context("running cargo test --test cli_golden")?;
    let fixtures = root().join("netstat-user/tests/fixtures");
    let (mut changed, mut same) = (Vec::new(), 0);
    for tree in fs::read_dir(scratch)? {
        let tree = tree?;
        for case in fs::read_dir(tree.path())? {
            let case = case?.path();
            let golden = fixtures.join(tree.file_name()).join("golden").join(case.file_name().unwrap());
            let now = fs::read(&case)?;
            if fs::read(&golden).ok().as_deref() == Some(&now[..]) {
                same += 1;
                continue;
            }
            fs::create_dir_all(golden.parent().unwrap())?;
            fs::write(&golden, &now).with_context(|| format!("writing {}", golden.display()))?;
            changed.push(golden.strip_prefix(root()).unwrap_or(&golden).display().to_string());
        }
    }
    if changed.is_empty() && same == 0 {
        bail!("cli_golden printed nothing to bless (did it build?)");
    }
    for f in &changed {
        println!("bless: rewrote {f}");
    }
    println!("bless: {} rewritten, {same} unchanged; checking cli_golden passes", changed.len());
    crate::check(golden_test()).context("cli_golden still fails after bless (a case that exits non-zero or writes to stderr cannot be blessed)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ci_is_recognised() {
        assert!(in_ci(Some("true")));
        assert!(in_ci(Some("1")));
        assert!(in_ci(Some("TRUE")));
        assert!(!in_ci(None));
        assert!(!in_ci(Some("")));
        assert!(!in_ci(Some("false")));
    }
}
