//! The tool's own surface, generated from the clap definition so it never
//! drifts from the options: the man page (`clap_mangen`, section 8, as
//! net-tools' netstat(8)) and shell completions (`clap_complete`).
//! `netstat --generate KIND` prints one; `cargo xtask install` puts them in place.
use std::io::{self, Write};

use clap::CommandFactory as _;
use clap_complete::Shell;

use super::Cli;

/// What `--generate` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Artifact {
    Man,
    Bash,
    Zsh,
    Fish,
}

impl Artifact {
    pub const ALL: [Artifact; 4] = [Artifact::Man, Artifact::Bash, Artifact::Zsh, Artifact::Fish];

    pub fn key(self) -> &'static str {
        match self {
            Artifact::Man => "man",
            Artifact::Bash => "bash",
            Artifact::Zsh => "zsh",
            Artifact::Fish => "fish",
        }
    }

    pub fn parse(s: &str) -> Option<Artifact> {
        Artifact::ALL.into_iter().find(|a| a.key() == s)
    }
}

/// Section 8, like the net-tools page it stands beside: `man netstat` then
/// shows whichever page's directory MANPATH (derived from PATH) lists first,
/// the same order that picks the binary.
pub const MAN_SECTION: &str = "8";

pub fn write(a: Artifact, w: &mut impl Write) -> io::Result<()> {
    let mut cmd = Cli::command();
    match a {
        Artifact::Man => clap_mangen::Man::new(cmd)
            .section(MAN_SECTION)
            .manual("System Administration")
            .source(format!("netstat {} (git {})", env!("CARGO_PKG_VERSION"), crate::GIT_REVISION))
            .render(w),
        Artifact::Bash | Artifact::Zsh | Artifact::Fish => {
            let shell = match a {
                Artifact::Bash => Shell::Bash,
                Artifact::Zsh => Shell::Zsh,
                _ => Shell::Fish,
            };
            clap_complete::generate(shell, &mut cmd, "netstat", w);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(a: Artifact) -> String {
        let mut out = Vec::new();
        write(a, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn the_man_page_lists_every_visible_option_and_no_hidden_one() {
        let man = text(Artifact::Man);
        assert!(man.starts_with(".ie") || man.contains(".TH netstat 8"), "{}", &man[..200.min(man.len())]);
        for flag in ["all", "numeric", "owner", "executable", "offload", "pid", "stream", "version", "listening"] {
            assert!(man.contains(&format!("\\-\\-{flag}")), "man page lacks --{flag}");
        }
        for hidden in ["proc\\-root", "sys\\-root", "generate"] {
            assert!(!man.contains(hidden), "man page shows hidden {hidden}");
        }
    }

    #[test]
    fn completions_name_the_command_and_its_options() {
        assert!(text(Artifact::Bash).contains("complete -F _netstat"));
        assert!(text(Artifact::Zsh).starts_with("#compdef netstat"));
        let fish = text(Artifact::Fish);
        assert!(fish.contains("complete -c netstat") && fish.contains("-l pid"), "{fish}");
    }
}
